"""Measures of a landmark track: jitter, and the face-shape ratios that make a face recognisable.

All take ``(T, 68, 2)`` (or ``(..., 68, 2)`` for ratios) pixel landmarks and return face-size-relative numbers,
so tracks in different pixel spaces (a driver's video, an avatar's crop) compare directly.
"""
from __future__ import annotations

import numpy as np

from puppeteer.retarget import eye_distance, mouth_opening

__all__ = ["jitter", "shape_ratios", "mouth_opening", "RATIOS"]

#: Names of :func:`shape_ratios`' entries.
RATIOS = ("eyes/face_width", "nose/face_height", "jaw/face_width")


def jitter(points: np.ndarray, scale: float | None = None) -> float:
    """Mean frame-to-frame landmark acceleration ``|p[t+1] - 2 p[t] + p[t-1]|`` over all points and frames,
    divided by ``scale`` (default: the track's median eye distance), i.e. in eye distances per frame^2.

    Steady motion costs nothing; the frame-to-frame shake a detector adds (and a renderer turns into
    flicker) does. points: ``(T, 68, 2)`` with ``T >= 3``.
    """
    p = np.asarray(points, np.float64)
    if p.ndim != 3 or p.shape[1:] != (68, 2) or len(p) < 3:
        raise ValueError(f"points must be (T, 68, 2) with T >= 3, got {p.shape}")
    s = float(np.median(eye_distance(p))) if scale is None else float(scale)
    acc = np.linalg.norm(p[2:] - 2 * p[1:-1] + p[:-2], axis=-1)
    return float(acc.mean() / max(s, 1e-9))


def shape_ratios(points: np.ndarray) -> dict[str, np.ndarray]:
    """Identity ratios of ``(..., 68, 2)`` landmarks, each ``(...,)``, invariant to similarity transforms:

    - ``eyes/face_width``: outer eye corners (36-45) over the face width at the ears (jaw ends 0-16);
    - ``nose/face_height``: nose bridge to tip (27-30) over the mid-face height, nasion to the top of the upper
      lip (27-51). The chin is not used: it drops by a quarter of the face when the mouth opens, which is
      speech, not identity;
    - ``jaw/face_width``: lower jaw width (4-12) over the face width.
    """
    p = np.asarray(points, np.float64)
    face_w = np.maximum(np.linalg.norm(p[..., 16, :] - p[..., 0, :], axis=-1), 1e-9)
    face_h = np.maximum(np.linalg.norm(p[..., 51, :] - p[..., 27, :], axis=-1), 1e-9)
    return {
        "eyes/face_width": np.linalg.norm(p[..., 45, :] - p[..., 36, :], axis=-1) / face_w,
        "nose/face_height": np.linalg.norm(p[..., 30, :] - p[..., 27, :], axis=-1) / face_h,
        "jaw/face_width": np.linalg.norm(p[..., 12, :] - p[..., 4, :], axis=-1) / face_w,
    }
