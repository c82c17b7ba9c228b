"""2-D affine maps of landmark points: fit, apply, invert, compose. One argument order everywhere.

A map is a ``(2, 3)`` array ``M = [A | t]`` (or a stack ``(..., 2, 3)``) taking a point ``x`` (a row ``(x, y)``
in pixels) to ``A x + t``, the layout OpenCV's ``warpAffine`` takes. Functions take points first and the map
second (``transform(points, m)``, as ``cv2.transform``), broadcast over leading dimensions, and keep the
points' float precision: float32 in, float32 arithmetic (as crops are computed); float64 in, float64.
"""
from __future__ import annotations

import numpy as np


def _dtype(*arrays) -> np.dtype:
    return np.result_type(*arrays, np.float32)


def transform(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``points`` ``(..., N, 2)`` (or one ``(2,)`` point) moved by ``m`` ``(2, 3)`` or ``(..., 2, 3)``."""
    points, m = np.asarray(points), np.asarray(m)
    dt = _dtype(points, m)
    points, m = points.astype(dt, copy=False), m.astype(dt, copy=False)
    t = m[:, 2] if m.ndim == 2 else m[..., None, :, 2]
    return points @ np.swapaxes(m[..., :2], -1, -2) + t


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of ``(..., 2, 3)`` affine maps (float64 arithmetic, the input's precision out); ValueError when a
    map is singular (all points on a line)."""
    m = np.asarray(m)
    a = m.astype(np.float64)
    det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    if np.any(det == 0):
        raise ValueError("affine map is singular (it maps the plane onto a line): it has no inverse")
    r = 1.0 / det
    out = np.empty(a.shape)
    out[..., 0, 0], out[..., 0, 1] = a[..., 1, 1] * r, -a[..., 0, 1] * r
    out[..., 1, 0], out[..., 1, 1] = -a[..., 1, 0] * r, a[..., 0, 0] * r
    out[..., :, 2] = -np.einsum("...ij,...j->...i", out[..., :2], a[..., 2])
    return out.astype(_dtype(m), copy=False)


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The map ``x -> a(b(x))`` of ``(..., 2, 3)`` maps."""
    a, b = np.asarray(a), np.asarray(b)
    dt = _dtype(a, b)
    a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    lin = a[..., :2] @ b[..., :2]
    return np.concatenate([lin, (np.einsum("...ij,...j->...i", a[..., :2], b[..., 2]) + a[..., 2])[..., None]], -1)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` onto ``dst``.

    ``src`` ``(..., N, 2)``, ``dst`` ``(..., N, 2)`` or ``(N, 2)`` (broadcast) -> ``(..., 2, 3)`` float64 with
    ``dst ~ transform(src, M)``. In 2-D a rotation-and-scale is one complex number, and Umeyama's (1991)
    solution is the ratio ``a = sum(conj(zs) zd) / sum(|zs|^2)`` over the centred points; it never reflects,
    which a face never needs.
    """
    s = np.asarray(src, np.float64)
    d = np.broadcast_to(np.asarray(dst, np.float64), s.shape)
    ms, md = s.mean(-2), d.mean(-2)
    zs = (s[..., 0] - ms[..., None, 0]) + 1j * (s[..., 1] - ms[..., None, 1])
    zd = (d[..., 0] - md[..., None, 0]) + 1j * (d[..., 1] - md[..., None, 1])
    a = (np.conj(zs) * zd).sum(-1) / np.maximum((np.abs(zs) ** 2).sum(-1), 1e-12)
    lin = np.stack([np.stack([a.real, -a.imag], -1), np.stack([a.imag, a.real], -1)], -2)
    t = md - np.einsum("...ij,...j->...i", lin, ms)
    return np.concatenate([lin, t[..., None]], -1)


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map taking ``src`` ``(..., N, 2)`` onto ``dst`` (same shape or ``(N, 2)``), N >= 3
    points not on one line -> ``(..., 2, 3)`` float64."""
    s = np.asarray(src, np.float64)
    d = np.broadcast_to(np.asarray(dst, np.float64), s.shape)
    if s.shape[-2] < 3:
        raise ValueError(f"an affine fit needs at least 3 points, got {s.shape[-2]}")
    h = np.concatenate([s, np.ones(s.shape[:-1] + (1,))], -1)  # (..., N, 3)
    # normal equations (H^T H) M^T = H^T D, solved per leading index
    m_t = np.linalg.solve(np.swapaxes(h, -1, -2) @ h, np.swapaxes(h, -1, -2) @ d)  # (..., 3, 2)
    return np.swapaxes(m_t, -1, -2)


def similarity_params(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scale, angle in radians, translation (..., 2))`` of ``(..., 2, 3)`` similarity maps."""
    m = np.asarray(m, np.float64)
    return np.hypot(m[..., 0, 0], m[..., 1, 0]), np.arctan2(m[..., 1, 0], m[..., 0, 0]), m[..., 2]
