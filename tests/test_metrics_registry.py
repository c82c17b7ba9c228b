"""Metrics by name (``reenact.metrics.registry``): one call shape, the same values as the modules behind them."""
from __future__ import annotations

import numpy as np
import pytest

from reenact.metrics import registry
from reenact.metrics.harness import PSNR_CAP
from reenact.metrics.identity import FaceAnalyzer
from reenact.metrics.psnr_ssim import psnr
from reenact.metrics.regions import region_metrics


@pytest.fixture(scope="module")
def face(identity_frames):
    img = identity_frames["same"][0]
    f = FaceAnalyzer().analyze(img)
    assert f is not None
    return img, f.points


def test_the_names_the_harness_and_training_ask_for_are_there():
    assert {"psnr", "ssim", "mouth_interior_psnr", "sharpness", "acd", "mouth_ssim", "cpbd"} <= set(
        registry.metric_names())
    with pytest.raises(KeyError, match="unknown metric"):
        registry.get_metric("nope")


def test_identical_images_score_perfect(face):
    img, pts = face
    out = registry.compute(["psnr", "ssim", "mouth_psnr", "sharpness", "acd", "lmd"], img, img, pts)
    assert all(v.shape == (1,) for v in out.values())
    assert out["psnr"][0] == PSNR_CAP and out["mouth_psnr"][0] == PSNR_CAP  # capped, as reenact eval reports
    assert out["ssim"][0] == pytest.approx(1.0, abs=1e-6) and out["sharpness"][0] == pytest.approx(1.0)
    assert out["acd"][0] == pytest.approx(0.0, abs=1e-6) and out["lmd"][0] == pytest.approx(0.0, abs=1e-6)


def test_values_match_the_modules_and_a_mouth_change_is_seen(face):
    img, pts = face
    fake = img.copy()
    x0, y0 = pts[48:68].min(0).astype(int)
    x1, y1 = pts[48:68].max(0).astype(int)
    fake[y0:y1, x0:x1] = 0  # the mouth blacked out
    out = registry.compute(["psnr", "mouth_ssim", "eyes_ssim"], fake, img, pts)
    assert out["psnr"][0] == pytest.approx(psnr(fake, img)[0])
    ref = region_metrics(fake, img, pts)
    assert out["mouth_ssim"][0] == pytest.approx(ref["mouth_ssim"][0])
    assert out["mouth_ssim"][0] < 0.8 < out["eyes_ssim"][0]


def test_a_registered_metric_is_computed_and_shapes_are_checked(face, monkeypatch):
    img, pts = face
    monkeypatch.setitem(registry.METRICS, "mean_abs", lambda f, r, p: np.abs(f.astype(float) - r).mean((1, 2, 3)))
    assert registry.compute(["mean_abs"], img, img, pts)["mean_abs"][0] == 0.0
    with pytest.raises(ValueError, match="expected fake and real"):
        registry.compute(["psnr"], img, img[:10], pts)
