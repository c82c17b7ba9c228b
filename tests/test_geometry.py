"""reenact.geometry: the one set of 2-D affine helpers (fit, apply, invert, compose) every stage uses."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from reenact.geometry import compose, fit_affine, fit_similarity, invert, similarity_params, transform


def _similarity(scale: float, deg: float, t) -> np.ndarray:
    a = scale * np.exp(1j * np.deg2rad(deg))
    return np.array([[a.real, -a.imag, t[0]], [a.imag, a.real, t[1]]])


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (15, 2))
    m = _similarity(1.3, 12, (5.0, -7.0))
    dst = transform(src, m) + rng.normal(0, 1e-6, src.shape)
    np.testing.assert_allclose(fit_similarity(src, dst), m, atol=1e-5)
    np.testing.assert_allclose(transform(transform(src, m), invert(m)), src, atol=1e-9)
    np.testing.assert_allclose(transform(src, compose(invert(m), m)), src, atol=1e-9)
    scale, angle, t = similarity_params(m)
    assert scale == pytest.approx(1.3) and angle == pytest.approx(np.deg2rad(12)) and t.tolist() == [5.0, -7.0]


def test_fits_are_batched_and_broadcast_a_shared_target():
    rng = np.random.default_rng(1)
    ms = np.stack([_similarity(0.5 + i, 10 * i, (i, -i)) for i in range(4)])
    target = rng.uniform(0, 50, (20, 2))
    tracks = transform(target[None], invert(ms))  # (4, 20, 2): each frame one similarity away from the target
    np.testing.assert_allclose(fit_similarity(tracks, target), ms, atol=1e-9)
    np.testing.assert_allclose(compose(ms, invert(ms))[..., :2], np.broadcast_to(np.eye(2), (4, 2, 2)), atol=1e-12)


def test_affine_fit_recovers_shear_the_similarity_cannot():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, (12, 2))
    m = np.array([[1.2, 0.3, 4.0], [-0.1, 0.8, 2.0]])
    np.testing.assert_allclose(fit_affine(src, transform(src, m)), m, atol=1e-9)
    assert np.abs(transform(src, fit_similarity(src, transform(src, m))) - transform(src, m)).max() > 1
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_affine(src[:2], src[:2])


def test_precision_follows_the_points_and_matches_opencv():
    m32 = np.array([[2.5, 0, -40.25], [0, 2.5, -12.5]], np.float32)
    pts = np.array([[10.1, 20.2], [30.3, 40.4]], np.float32)
    assert transform(pts, m32).dtype == np.float32 and transform(pts.astype(np.float64), m32).dtype == np.float64
    np.testing.assert_allclose(transform(pts, m32), cv2.transform(pts[None], m32)[0], rtol=1e-6)
    np.testing.assert_allclose(invert(m32), cv2.invertAffineTransform(m32), rtol=1e-6)
    assert transform(pts[0], m32).shape == (2,)
    with pytest.raises(ValueError, match="singular"):
        invert(np.zeros((2, 3)))
