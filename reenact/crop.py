"""Square, VoxCeleb-like face crops that remember how to go back into the full frame.

A crop is an affine map ``M`` (2x3, full frame -> crop pixels). ``paste_back`` inverts it, so a generated
crop can be blended into the original frame with a soft mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reenact import geometry
from reenact.landmarks.parts import PARTS


@dataclass(frozen=True)
class CropParams:
    """How big the crop is around the landmarks.

    scale: crop side = scale * the larger side of the landmarks' bounding box (brows to chin), so hair and
        some background are in, as in VoxCeleb crops. shift_y: the centre moves up by this fraction of the crop
        side, since the landmarks stop at the brows and the forehead is above them.
    """

    size: int = 256
    scale: float = 1.8
    shift_y: float = 0.08


def box_from_points(points: np.ndarray, params: CropParams = CropParams()) -> np.ndarray:
    """(cx, cy, side) of the crop for one face's (68, 2) points (or (T, 68, 2) -> (T, 3))."""
    pts = np.asarray(points, np.float32)
    lo, hi = pts.min(-2), pts.max(-2)
    side = (hi - lo).max(-1) * params.scale
    cx = (lo[..., 0] + hi[..., 0]) / 2
    cy = (lo[..., 1] + hi[..., 1]) / 2 - params.shift_y * side
    return np.stack([cx, cy, side], -1).astype(np.float32)


def smooth_boxes(boxes: np.ndarray, fps: float, sigma_s: float = 0.3) -> np.ndarray:
    """Gaussian smoothing over time of (T, 3) crop boxes: a steady crop, so landmark motion inside the crop is the
    face's motion and not the crop's jitter. sigma_s is in seconds."""
    boxes = np.asarray(boxes, np.float64)
    sigma = sigma_s * fps
    if len(boxes) < 2 or sigma <= 0:
        return boxes.astype(np.float32)
    radius = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(boxes, ((radius, radius), (0, 0)), mode="edge")
    out = np.stack([np.convolve(padded[:, c], k, mode="valid") for c in range(boxes.shape[1])], 1)
    return out.astype(np.float32)


def crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine map full frame -> crop of ``size`` pixels for a (cx, cy, side) box."""
    cx, cy, side = (float(v) for v in box)
    s = size / side
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float32)


def invert(m: np.ndarray) -> np.ndarray:
    """The crop's map back to the full frame: ``reenact.geometry.invert`` in the crops' float32."""
    return geometry.invert(np.asarray(m, np.float32))


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """A 2x3 affine map applied to (..., 2) points: ``reenact.geometry.transform`` in the crops' float32."""
    return geometry.transform(np.asarray(points, np.float32), np.asarray(m, np.float32))


def crop_image(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The crop of an RGB uint8 image. Outside the frame the border pixels are repeated, which looks more like a
    face photo than black bars and keeps the network's input statistics steady."""
    interp = cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, np.asarray(m, np.float32), (size, size), flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


def face_mask(points: np.ndarray, size: int | tuple[int, int], grow: float = 0.15,
              feather: float = 0.08) -> np.ndarray:
    """Soft mask (H, W) float32 in [0, 1] covering the face from its landmarks: the convex hull of the jaw and
    the brows lifted to include the forehead, grown by ``grow`` and feathered by ``feather`` (fractions of the
    face width). Used to blend a generated crop back into a frame without a visible seam."""
    h, w = (size, size) if isinstance(size, int) else size
    pts = np.asarray(points, np.float32)
    face_w = float(pts[:, 0].max() - pts[:, 0].min()) or 1.0
    brows = pts[17:27].copy()
    chin_to_brow = pts[8, 1] - brows[:, 1].mean()
    brows[:, 1] -= 0.35 * chin_to_brow  # forehead
    hull_pts = np.concatenate([pts[list(PARTS["jaw"][0])], brows])
    centre = hull_pts.mean(0)
    hull_pts = centre + (hull_pts - centre) * (1 + grow)
    hull = cv2.convexHull(hull_pts.astype(np.float32))
    mask = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1.0, lineType=cv2.LINE_AA, shift=4)
    k = max(1, int(feather * face_w))
    mask = cv2.GaussianBlur(mask, (0, 0), k)
    return np.clip(mask, 0, 1)


def border_mask(size: int, feather: float = 0.06) -> np.ndarray:
    """Soft square mask (size, size): 1 inside, falling to 0 at the crop's edge."""
    r = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32) / max(1.0, feather * size)
    r = np.clip(r, 0, 1)
    return np.outer(r, r)


def paste_back(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Blend a (size, size, 3) crop into ``frame`` (H, W, 3), both RGB uint8.

    mask: (size, size) float in [0, 1] in crop coordinates (e.g. ``face_mask`` of the crop's landmarks); None
    uses a feathered square. The crop is warped back with the inverse of ``m``; pixels the crop does not cover
    keep the frame's values. Returns a new array.
    """
    size = crop.shape[0]
    if mask is None:
        mask = border_mask(size)
    h, w = frame.shape[:2]
    inv = invert(m)
    back = cv2.warpAffine(crop, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    out = frame.astype(np.float32) * (1 - alpha) + back.astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
