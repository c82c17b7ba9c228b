"""Metrics by name: one call shape for every per-image metric, so evaluation protocols, training validation and
scripts can ask for ``"psnr"`` or ``"mouth_interior_psnr"`` without knowing which module computes it.

A metric is ``metric(fake, real, points) -> (N,) float array``: ``fake`` and ``real`` are (N, H, W, 3) RGB uint8
images of the same targets, ``points`` (N, 68, 2) the target landmarks in their pixels; NaN marks a target where
the metric is undefined (no face found, a closed mouth for the mouth interior, a flat real face box). PSNRs are
capped at :data:`reenact.metrics.harness.PSNR_CAP` (identical pixels), as ``reenact eval`` reports them.

Built in (:data:`METRICS`): ``psnr``, ``ssim``; ``mouth_psnr``, ``mouth_ssim``, ``eyes_psnr``, ``eyes_ssim``
(boxes from the landmarks, :func:`~reenact.metrics.regions.region_metrics`); ``mouth_interior_psnr``,
``mouth_interior_l1`` (inside the inner lips of open mouths); ``sharpness`` (Laplacian variance of the face box,
output over real) and ``cpbd`` (of the output); ``acd``, ``csim`` (dlib identity descriptors of output and real),
``lmd`` and ``lmd_mouth`` (dlib landmarks of output and real, over the inter-ocular distance). The dlib metrics
load the face analyzer once, on first use. :func:`register_metric` adds one; :func:`compute` runs several.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from reenact.metrics.harness import PSNR_CAP

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _psnr(fake, real, points):
    from reenact.metrics.psnr_ssim import psnr

    return np.minimum(psnr(fake, real), PSNR_CAP)


def _ssim(fake, real, points):
    from reenact.metrics.psnr_ssim import ssim

    return np.asarray(ssim(fake, real), np.float64)


def _regional(key: str, interior: bool = False) -> Metric:
    """``key`` of :func:`~reenact.metrics.regions.region_metrics` (mouth and eye boxes) or, ``interior``, of
    :func:`~reenact.metrics.regions.mouth_interior_metrics` (NaN: mouth closed); PSNRs capped."""
    def metric(fake, real, points):
        from reenact.metrics.regions import mouth_interior_metrics, region_metrics

        v = (mouth_interior_metrics if interior else region_metrics)(fake, real, points)[key]
        return np.minimum(v, PSNR_CAP) if key.endswith("psnr") else v

    return metric


def _sharpness(fake, real, points):
    from reenact.metrics.sharpness import lapvar_ratio

    return lapvar_ratio(fake, real, points)


def _cpbd(fake, real, points):
    from reenact.metrics.sharpness import cpbd, face_box

    h, w = np.asarray(fake).shape[1:3]
    return np.array([cpbd(f, face_box(p, h, w)) for f, p in zip(fake, points)], np.float64)


_ANALYZER = None


def _analyzer():
    global _ANALYZER
    if _ANALYZER is None:
        from reenact.metrics.identity import FaceAnalyzer

        _ANALYZER = FaceAnalyzer()
    return _ANALYZER


def _faces(what: str) -> Metric:
    def metric(fake, real, points):
        from reenact.landmarks.parts import MOUTH
        from reenact.metrics.identity import acd, csim
        from reenact.metrics.landmarks import lmd

        an = _analyzer()
        out = np.full(len(fake), np.nan)
        for i, (f, r) in enumerate(zip(fake, real)):
            a, b = an.analyze(f), an.analyze(r)
            if a is None or b is None:
                continue
            out[i] = {"acd": lambda: acd(a.descriptor, b.descriptor),
                      "csim": lambda: csim(a.descriptor, b.descriptor),
                      "lmd": lambda: lmd(a.points, b.points),
                      "lmd_mouth": lambda: lmd(a.points, b.points, MOUTH)}[what]()
        return out

    metric.__doc__ = f"``{what}`` of the dlib faces found on output and real (NaN where either has none)."
    return metric


METRICS: dict[str, Metric] = {
    "psnr": _psnr, "ssim": _ssim,
    **{k: _regional(k) for k in ("mouth_psnr", "mouth_ssim", "eyes_psnr", "eyes_ssim")},
    "mouth_interior_psnr": _regional("interior_psnr", True), "mouth_interior_l1": _regional("interior_l1", True),
    "sharpness": _sharpness, "cpbd": _cpbd,
    **{k: _faces(k) for k in ("acd", "csim", "lmd", "lmd_mouth")},
}
"""name -> :data:`Metric`."""


def register_metric(name: str, metric: Metric) -> None:
    """Make ``metric`` available as ``name`` (replaces an entry of that name)."""
    METRICS[name] = metric


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]


def compute(names, fake: np.ndarray, real: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: (N,) values}`` of the metrics ``names`` on one batch (single images (H, W, 3) are a batch of 1)."""
    fake, real, points = np.asarray(fake), np.asarray(real), np.asarray(points, np.float32)
    if fake.ndim == 3:
        fake, real, points = fake[None], real[None], points[None]
    if fake.shape != real.shape or points.shape != (len(fake), 68, 2):
        raise ValueError(f"expected fake and real (N, H, W, 3) and points (N, 68, 2), got {fake.shape}, "
                         f"{real.shape}, {points.shape}")
    return {n: np.asarray(get_metric(n)(fake, real, points), np.float64) for n in names}
