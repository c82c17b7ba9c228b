"""Face regions for region metrics, the mouth interior and the "hard frames" subsets.

Boxes come from the TARGET landmarks (where the mouth and eyes should be), so a method that puts the mouth in
the wrong place is scored on the right place. Region SSIM is the mean of the full-image SSIM map inside the box
(the box is often narrower than the SSIM window would allow on its own, and windows at the box's edge see the
real surroundings); region PSNR uses the box's pixels.

The mouth interior (:func:`mouth_interior_metrics`) is the target's inner-lip polygon: the teeth, tongue and
dark cavity that no warp of a closed mouth can make. It is scored only where the target's mouth is open.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from reenact.landmarks.parts import INNER_LIPS, LEFT_EYE, MOUTH, RIGHT_EYE
from reenact.metrics.landmarks import eye_aspect_ratio, inter_ocular
from reenact.metrics.psnr_ssim import psnr, ssim_map

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, end exclusive)

DEFAULT_MARGIN = 0.2
# A mouth is open (its interior is scored) from an inner-lip gap of 0.08 outer-eye-corner distances; below it the
# polygon is a sliver of lip pixels.
OPEN_MOUTH = 0.08
# The interior polygon grows by this many pixels, so the lips' inner edge (where a stretched lip shows) counts.
INTERIOR_DILATE_PX = 2


def part_box(points: np.ndarray, idx, height: int, width: int, margin: float = DEFAULT_MARGIN) -> Box:
    """Bounding box of ``points[idx]`` ((68, 2) pixels) grown on every side by ``margin`` x the box's larger side
    (eyes are flat: a margin of their own height would leave them a few pixels tall), clipped to the image."""
    p = np.asarray(points, np.float64)[idx]
    lo, hi = p.min(0), p.max(0)
    pad = margin * float((hi - lo).max())
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int) + 1
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the face part lies outside the image")
    return int(x0), int(y0), int(x1), int(y1)


def mouth_box(points: np.ndarray, height: int, width: int, margin: float = DEFAULT_MARGIN) -> Box:
    """Box around the lips (points 48-67)."""
    return part_box(points, MOUTH, height, width, margin)


def eye_boxes(points: np.ndarray, height: int, width: int, margin: float = DEFAULT_MARGIN) -> tuple[Box, Box]:
    """Boxes around the subject's right (36-41, image left) and left (42-47) eye."""
    return (part_box(points, RIGHT_EYE, height, width, margin), part_box(points, LEFT_EYE, height, width, margin))


def _pixels(img: np.ndarray, boxes: list[Box]) -> np.ndarray:
    return np.concatenate([img[y0:y1, x0:x1].reshape(-1, *img.shape[2:]) for x0, y0, x1, y1 in boxes])


def region_metrics(fake: np.ndarray, real: np.ndarray, points: np.ndarray,
                   margin: float = DEFAULT_MARGIN) -> dict[str, np.ndarray]:
    """Mouth and eye SSIM/PSNR of ``fake`` vs ``real`` ((N, H, W, 3) uint8), with boxes from the target
    ``points`` (N, 68, 2). Returns ``{"mouth_ssim", "mouth_psnr", "eyes_ssim", "eyes_psnr"}``, each (N,)
    (the two eye boxes are pooled)."""
    fake, real = np.asarray(fake), np.asarray(real)
    if fake.ndim == 3:
        fake, real, points = fake[None], real[None], np.asarray(points)[None]
    n, h, w = fake.shape[:3]
    smap = ssim_map(fake, real)
    out = {k: np.zeros(n) for k in ("mouth_ssim", "mouth_psnr", "eyes_ssim", "eyes_psnr")}
    for i in range(n):
        for name, boxes in (("mouth", [mouth_box(points[i], h, w, margin)]),
                            ("eyes", list(eye_boxes(points[i], h, w, margin)))):
            out[f"{name}_ssim"][i] = _pixels(smap[i], boxes).mean()
            a, b = _pixels(fake[i], boxes), _pixels(real[i], boxes)
            out[f"{name}_psnr"][i] = psnr(a[None, :, None], b[None, :, None])[0]
    return out


def inner_lip_gap(points: np.ndarray) -> np.ndarray:
    """Inner-lip height in pixels: the mean gap of the pairs 61-67, 62-66, 63-65, (...,)."""
    p = np.asarray(points, np.float64)
    top, bottom = p[..., INNER_LIPS[[1, 2, 3]], :], p[..., INNER_LIPS[[7, 6, 5]], :]
    return np.linalg.norm(top - bottom, axis=-1).mean(-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip height (:func:`inner_lip_gap`) over the inter-ocular distance (eye centres), (...,)."""
    return inner_lip_gap(points) / inter_ocular(points)


def open_mouth(points: np.ndarray, threshold: float = OPEN_MOUTH) -> np.ndarray:
    """(...,) bool: the inner-lip gap is at least ``threshold`` x the distance of the outer eye corners (36, 45)."""
    p = np.asarray(points, np.float64)
    return inner_lip_gap(p) >= threshold * np.linalg.norm(p[..., 36, :] - p[..., 45, :], axis=-1)


def mouth_interior_mask(points: np.ndarray, height: int, width: int,
                        dilate: int = INTERIOR_DILATE_PX) -> np.ndarray:
    """(H, W) bool: the inner-lip polygon (points 60-67 of ``points`` (68, 2), pixel centres) grown by
    ``dilate`` pixels."""
    poly = np.round(np.asarray(points, np.float64)[INNER_LIPS] * 16).astype(np.int32)  # 4 fractional bits
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=4)
    if dilate > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1)))
    return mask.astype(bool)


def mouth_interior_metrics(fake: np.ndarray, real: np.ndarray, points: np.ndarray,
                           threshold: float = OPEN_MOUTH) -> dict[str, np.ndarray]:
    """Error inside the target's mouth interior (:func:`mouth_interior_mask`) of ``fake`` vs ``real``
    ((N, H, W, 3) uint8), with target ``points`` (N, 68, 2), on the targets with an open mouth
    (:func:`open_mouth`).

    Returns ``interior_psnr`` (dB, from the mean squared error over the mask's pixels and channels; ``inf`` for
    identical pixels) and ``interior_l1`` (mean absolute error in gray levels, 0-255), each (N,) and NaN on the
    targets whose mouth is not open. Pooled as the arithmetic mean of the per-target dB over the
    open-mouth targets (not the PSNR of a pooled MSE), so every open mouth weighs the same whatever its size.
    """
    fake, real, points = np.asarray(fake), np.asarray(real), np.asarray(points)
    if fake.ndim == 3:
        fake, real, points = fake[None], real[None], points[None]
    n, h, w = fake.shape[:3]
    out = {"interior_psnr": np.full(n, np.nan), "interior_l1": np.full(n, np.nan)}
    for i in np.flatnonzero(open_mouth(points, threshold)):
        m = mouth_interior_mask(points[i], h, w)
        if not m.any():
            continue
        d = fake[i][m].astype(np.float64) - real[i][m]
        out["interior_l1"][i] = np.abs(d).mean()
        out["interior_psnr"][i] = psnr(fake[i][m][None, :, None], real[i][m][None, :, None])[0]
    return out


def opening_gap(source_points: np.ndarray, target_points: np.ndarray,
                measure: Callable[[np.ndarray], np.ndarray] = mouth_opening) -> np.ndarray:
    """(N,) how far each target's opening (``measure``: :func:`mouth_opening`, or e.g. the eye aspect ratio) is
    from the closest of the K sources' ((K, 68, 2) or (68, 2))."""
    src = measure(np.asarray(source_points).reshape(-1, 68, 2))
    tgt = measure(np.asarray(target_points))
    return np.abs(tgt[:, None] - src[None, :]).min(1)


def eye_gap(source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """(N,) :func:`opening_gap` of the eye aspect ratio (eyelid gap over eye width, both eyes' mean): large where
    the target blinks or widens its eyes and no source does."""
    return opening_gap(source_points, target_points, eye_aspect_ratio)


def hard_frames(gap: np.ndarray, fraction: float = 0.25) -> np.ndarray:
    """(N,) bool: the ``fraction`` of targets with the largest gap (:func:`opening_gap` of the mouth, or
    :func:`eye_gap`), at least one when there are targets. Ties go to the earlier target (stable order)."""
    gap = np.asarray(gap, np.float64)
    n = len(gap)
    k = min(n, max(1, int(np.ceil(fraction * n)))) if n else 0
    hard = np.zeros(n, bool)
    hard[np.argsort(-gap, kind="stable")[:k]] = True
    return hard
