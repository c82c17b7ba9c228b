"""Identity-independent landmark tracks: the *canonical frame*.

A track ``(T, 68, 2)`` in pixels is brought into a canonical frame per frame by a similarity transform fitted on
rigid points (eye corners and nose, which speech does not move): the eye centres end at (-0.5, 0) and (0.5, 0), so
one unit is the inter-ocular distance (as in ``reenact.metrics.landmarks.inter_ocular``) and head rotation, scale
and translation are gone. The clip's *neutral* shape is its mean canonical shape; the audio models and the lip-sync
expert (:mod:`reenact.models.lipsync`) see *displacements* from it, which carry the speech and not the person's
face shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reenact.geometry import compose, fit_similarity, invert, transform
from reenact.landmarks.parts import LEFT_EYE, MIRROR_PERMUTATION, RIGHT_EYE

# Eye corners, nose bridge and nostrils: they move with the head, not with speech or blinks.
RIGID = np.array([36, 39, 42, 45, 27, 28, 29, 30, 31, 32, 33, 34, 35])


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points, np.float64)
    return p[..., RIGHT_EYE, :].mean(-2), p[..., LEFT_EYE, :].mean(-2)


@dataclass
class CanonicalTrack:
    """A track in the canonical frame. ``points`` (T, 68, 2) canonical (unit inter-ocular distance),
    ``neutral`` (68, 2) the mean canonical shape, ``to_canonical`` (T, 2, 3) pixel -> canonical per frame."""

    points: np.ndarray
    neutral: np.ndarray
    to_canonical: np.ndarray

    @property
    def displacement(self) -> np.ndarray:
        """``points - neutral``, (T, 68, 2) in inter-ocular units."""
        return self.points - self.neutral

    def to_pixels(self, canonical: np.ndarray) -> np.ndarray:
        """Canonical points (T, 68, 2) back into each frame's pixels."""
        return transform(canonical, invert(self.to_canonical)).astype(np.float32)


def canonicalize(points: np.ndarray, valid: np.ndarray | None = None) -> CanonicalTrack:
    """Normalise a track ``(T, 68, 2)`` (or one face ``(68, 2)``) to the canonical frame.

    Two passes: eye centres alone fix a coarse frame; the median rigid-point shape in it becomes the clip's rigid
    template; then each frame's rigid points are fitted to that template by least squares (13 points average out
    the landmark jitter that two eye centres would pass on). ``valid`` (T,) marks frames to trust for the template
    and the neutral shape (all by default)."""
    p = np.asarray(points, np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks (T, 68, 2), got {np.shape(points)}")
    v = np.ones(len(p), bool) if valid is None else np.asarray(valid, bool)
    if not v.any():
        v = np.ones(len(p), bool)
    right, left = eye_centres(p)
    pair = np.stack([right, left], -2)  # (T, 2, 2)
    coarse_m = fit_similarity(pair, np.array([[-0.5, 0.0], [0.5, 0.0]]))
    coarse = transform(p, coarse_m)
    template = np.median(coarse[v][:, RIGID], axis=0)
    m = fit_similarity(p[:, RIGID], template)
    canon = transform(p, m)
    neutral = canon[v].mean(0)
    # Re-centre so the neutral's eye centres sit exactly at (+-0.5, 0): the unit stays the inter-ocular distance.
    fix = fit_similarity(np.stack(eye_centres(neutral))[None], np.array([[-0.5, 0.0], [0.5, 0.0]]))[0]
    canon = transform(canon, fix)
    neutral = transform(neutral[None], fix)[0]
    return CanonicalTrack(canon.astype(np.float32), neutral.astype(np.float32), compose(fix, m))


def mirror(disp: np.ndarray) -> np.ndarray:
    """Horizontal mirror of canonical displacements/points ``(..., 68, 2)`` (x -> -x, parts swapped)."""
    out = disp[..., MIRROR_PERMUTATION, :].copy()
    out[..., 0] *= -1
    return out
