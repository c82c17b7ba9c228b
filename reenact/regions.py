"""Face regions that a learned model re-synthesises: where they are and how their landmarks are drawn.

A region crop is a similarity transform of the frame (``M`` 2x3, frame -> region pixels): centred on the
region's landmarks, rotated so that the eyes are level, and scaled by the inter-ocular distance (outer eye
corners 36 and 45), so a mouth is the same size in every crop whatever the face's size in the frame. Crops
are cut from the frame itself (never from a resampled 256 px face crop), so they keep the frame's detail.

Region landmark images are three channels in ``[0, 1]``: the filled inner polygon (the mouth's cavity or the
eye's opening), the filled outer polygon (lips or eye), and the contours of every part that crosses the crop
(thin antialiased lines). The filled channels say directly where teeth or an iris belong; the contours give
context (nose, jaw). Drawn with OpenCV at the crop's size: cheap enough per frame on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reenact.landmarks.parts import PARTS

#: Outer eye corners (iBUG 36, 45): the scale and angle of every region crop.
EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class RegionSpec:
    """One region. ``centre``: landmarks whose mean is the crop's centre; ``side``: crop side in inter-ocular
    distances; ``inner``/``outer``: the polygons drawn filled; ``size``: crop side in pixels."""

    name: str
    centre: tuple[int, ...]
    side: float
    inner: tuple[int, ...]
    outer: tuple[int, ...]
    size: int = 128
    shift_y: float = 0.0  # centre moved down by this many inter-ocular distances (eyes level)


MOUTH = RegionSpec("mouth", centre=tuple(range(48, 68)), side=1.25, inner=tuple(range(60, 68)),
                   outer=tuple(range(48, 60)), size=128, shift_y=0.05)
REGIONS = {"mouth": MOUTH}


def get_region(name: str) -> RegionSpec:
    try:
        return REGIONS[name]
    except KeyError:
        raise ValueError(f"unknown region {name!r} (known: {', '.join(REGIONS)})") from None


def region_matrix(points: np.ndarray, spec: RegionSpec, size: int | None = None) -> np.ndarray:
    """2x3 float32 similarity frame -> region crop for one face's ``(68, 2)`` points (``(T, 68, 2)`` ->
    ``(T, 2, 3)``)."""
    pts = np.asarray(points, np.float64)
    if pts.ndim == 3:
        return np.stack([region_matrix(p, spec, size) for p in pts])
    size = int(size or spec.size)
    d = pts[EYE_CORNERS[1]] - pts[EYE_CORNERS[0]]
    iod = max(float(np.hypot(*d)), 1e-3)
    c, s = d / iod  # cos, sin of the eye line's angle
    centre = pts[list(spec.centre)].mean(0) + spec.shift_y * iod * np.array([-s, c])
    k = size / (spec.side * iod)
    # rotate by -angle (eyes level), scale, then put the centre in the middle of the crop (pixel centres)
    r = k * np.array([[c, s], [-s, c]])
    t = (size - 1) / 2.0 - r @ centre
    return np.concatenate([r, t[:, None]], 1).astype(np.float32)


def crop_region(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The region crop of an RGB uint8 frame: one resampling of the frame (area-averaged when shrinking)."""
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    interp = cv2.INTER_AREA if scale < 0.8 else cv2.INTER_CUBIC
    if interp == cv2.INTER_AREA and abs(m[0, 1]) > 1e-3:
        interp = cv2.INTER_LINEAR  # INTER_AREA is only an area filter for axis-aligned maps
        image = _prefilter(image, scale)
    return cv2.warpAffine(image, np.asarray(m, np.float32), (size, size), flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


def _prefilter(image: np.ndarray, scale: float) -> np.ndarray:
    """Gaussian anti-alias before a rotated shrink by ``scale`` (< 1)."""
    sigma = 0.5 * (1.0 / scale - 1.0)
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.3 else image


def draw_region(points: np.ndarray, spec: RegionSpec, size: int | None = None) -> np.ndarray:
    """``(3, S, S)`` float32 landmark image of a region from ``(68, 2)`` points in region-crop pixels."""
    size = int(size or spec.size)
    pts = np.asarray(points, np.float32)
    out = np.zeros((3, size, size), np.float32)
    fixed = lambda p: np.round(np.clip(p, -1e6, 1e6) * 16).astype(np.int32)  # noqa: E731 - 1/16 px points
    cv2.fillPoly(out[0], [fixed(pts[list(spec.inner)])], 1.0, lineType=cv2.LINE_AA, shift=4)
    cv2.fillPoly(out[1], [fixed(pts[list(spec.outer)])], 1.0, lineType=cv2.LINE_AA, shift=4)
    for idx, closed, _colour in PARTS.values():
        cv2.polylines(out[2], [fixed(pts[list(idx)])], closed, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=4)
    return out


def opening(points: np.ndarray, spec: RegionSpec = MOUTH) -> np.ndarray:
    """How open a region is, in inter-ocular distances: the mean distance between facing inner-polygon points
    (mouth: 61-67, 62-66, 63-65). ``(..., 68, 2)`` -> ``(...)``."""
    pts = np.asarray(points, np.float32)
    if spec.name != "mouth":
        raise ValueError(f"opening() is defined for the mouth, not {spec.name!r}")
    gap = np.linalg.norm(pts[..., [61, 62, 63], :] - pts[..., [67, 66, 65], :], axis=-1).mean(-1)
    iod = np.linalg.norm(pts[..., EYE_CORNERS[1], :] - pts[..., EYE_CORNERS[0], :], axis=-1)
    return gap / np.maximum(iod, 1e-6)
