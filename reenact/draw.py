"""Landmark images: the 68 iBUG points drawn as coloured part polylines on black (Zakharov et al. 2019).

Two rasterizers that draw the same picture:

- :func:`draw_landmarks` (numpy/OpenCV, one face, uint8) for data preparation, demos and debugging;
- :func:`rasterize` (torch, any batch shape, any device, float in ``[0, 1]``) for training and inference.

Geometry shared by both: a pixel ``(i, j)`` has its centre at ``(x, y) = (j, i)``, the same convention as the
landmark coordinates, so a point at ``(3.0, 5.0)`` lies in the middle of row 5, column 3. Each part of
``reenact.landmarks.parts.PARTS`` is a polyline (closed for eyes and lips) of width ``thickness`` pixels with
round joins/caps, antialiased, in the part's colour; where parts overlap each channel takes the maximum.

``thickness`` is the line width in pixels (the integral of coverage across the line). OpenCV's antialiased
lines only come in a few widths (measured: its thickness 1 draws ~1.35 px, 2 -> 3.35 px, 3 and 4 -> 5.4 px,
5 and 6 -> 7.4 px: ``1.35 + 2n``), so :func:`draw_landmarks` uses the OpenCV thickness whose width is nearest.
The default width grows with the image (about 3.35 px at 256, i.e. ``3.35 * min(H, W) / 256``) snapped to
one of those widths, so both rasterizers draw the same lines: 1.35 px at 128, 3.35 at 256, 7.35 at 512.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from reenact.landmarks.base import FaceLandmarks
from reenact.landmarks.parts import NUM_POINTS, PARTS, segments

Size = int | tuple[int, int]

# OpenCV takes fixed-point coordinates with this many fractional bits (1/16 px): sub-pixel precision
# without int32 overflow for any sensible coordinate.
_SHIFT = 4
# Coordinates are clamped to +-this many pixels before fixed-point conversion: far-away points stay far away
# (and are clipped by OpenCV) but cannot overflow int32 (2**31 / 2**_SHIFT = 1.3e8).
_FAR = 1.0e7
# Upper bound on elements of the per-chunk (images x segments x patch) work tensors of `rasterize`:
# ~0.75 GB of work tensors at most. Measured on an H100, 300 faces at 256x256: 4.0 ms with 2**23 or 2**24,
# 5.7 ms with 2**22.
_CHUNK_ELEMENTS = 2 ** 23
# Width in pixels of OpenCV's thinnest antialiased line; its thicker ones are 2, 4, 6, ... px wider.
_CV2_BASE_WIDTH = 1.35


def image_size(size: Size) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or an ``(H, W)`` pair."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def default_thickness(size: Size) -> float:
    """Line width in pixels used when none is given: ``3.35 * min(H, W) / 256`` snapped to ``1.35 + 2n``."""
    h, w = image_size(size)
    return _CV2_BASE_WIDTH + 2.0 * max(0, round((3.35 * min(h, w) / 256.0 - _CV2_BASE_WIDTH) / 2.0))


def _cv2_thickness(width: float) -> int:
    """OpenCV ``thickness`` whose antialiased line is closest to ``width`` pixels wide.

    OpenCV (4.x/5.x) draws thickness ``k >= 2`` with a radius of ``(k + 1) // 2`` px plus ~0.35 px of
    antialiasing, i.e. widths 3.35, 5.4, 7.4, ... px; ``k = 1`` is its thin-line routine (~1.35 px).
    """
    n = max(0, int(round((width - _CV2_BASE_WIDTH) / 2.0)))
    return 1 if n == 0 else 2 if n == 1 else 2 * n - 1


def draw_landmarks(points: np.ndarray, size: Size, thickness: float | None = None) -> np.ndarray:
    """Landmark image of one face with OpenCV.

    points: ``(68, 2)`` pixel ``(x, y)`` in iBUG order, any float; points outside the image are fine.
    size: ``H`` (square) or ``(H, W)``. thickness: line width in pixels (OpenCV draws the nearest width it
    can, see the module doc); default :func:`default_thickness`.
    Returns ``(H, W, 3)`` uint8 RGB, parts in their ``PARTS`` colours on black.
    """
    pts = _check_points_np(points)
    h, w = image_size(size)
    t = default_thickness((h, w)) if thickness is None else float(thickness)
    canvas = np.zeros((h, w, 3), np.uint8)
    _draw_parts(canvas, pts, _cv2_thickness(t))
    return canvas


def rasterize(points: torch.Tensor, size: Size, thickness: float | None = None) -> torch.Tensor:
    """Landmark images of a batch of faces with torch (GPU-friendly, differentiable almost everywhere).

    points: ``(..., 68, 2)`` pixel ``(x, y)`` in iBUG order, any leading batch dims, any device/float dtype.
    size: ``H`` (square) or ``(H, W)``. thickness: line width in pixels (float allowed); default
    :func:`default_thickness`.
    Returns ``(..., 3, H, W)`` float32 in ``[0, 1]`` on ``points.device`` (for the networks' ``[-1, 1]``
    use ``2 * x - 1``). Always computed in float32, also inside ``torch.autocast``.

    Coverage of a pixel by a segment is ``clamp(thickness / 2 + 0.5 - d, 0, 1)`` with ``d`` the distance of the
    pixel centre to the segment (a 1-pixel antialiasing ramp); a channel is the max over segments of
    coverage * colour. Only a patch around each segment is evaluated (patch side = the largest segment
    bounding box in the batch, plus the line reach), then scattered into the image with ``amax``, so the cost
    is ``batch * segments * patch**2`` rather than ``batch * segments * H * W``.
    """
    if points.ndim < 2 or tuple(points.shape[-2:]) != (NUM_POINTS, 2):
        raise ValueError(f"points must be (..., {NUM_POINTS}, 2), got {tuple(points.shape)}")
    h, w = image_size(size)
    t = default_thickness((h, w)) if thickness is None else float(thickness)
    if not t > 0:
        raise ValueError(f"thickness must be positive, got {thickness!r}")
    lead = tuple(points.shape[:-2])
    device = points.device
    # Distances and coverage need fp32: in fp16 a 256-pixel coordinate has 1/8 px resolution.
    with torch.autocast(device_type=device.type, enabled=False):
        pts = points.reshape(-1, NUM_POINTS, 2).float()
        n = pts.shape[0]
        if n == 0:
            return torch.zeros(*lead, 3, h, w, device=device, dtype=torch.float32)
        if not bool(torch.isfinite(pts).all()):
            raise ValueError("landmark coordinates must be finite (got NaN or inf)")
        pts = pts.clamp(-_FAR, _FAR)
        seg_idx, seg_col = segments()
        seg_idx = torch.as_tensor(seg_idx, device=device)
        colours = torch.as_tensor(seg_col, device=device, dtype=torch.float32) / 255.0       # (S, 3)
        reach = t / 2.0 + 0.5

        a, b = pts[:, seg_idx[:, 0]], pts[:, seg_idx[:, 1]]                                # (n, S, 2)
        # Each segment's pixel window, clipped to the image (a segment fully outside gets a window of
        # masked or zero-coverage pixels).
        lim = torch.tensor([w - 1, h - 1], device=device, dtype=torch.float32)
        lo = torch.minimum(torch.floor(torch.minimum(a, b) - reach).clamp(min=0), lim + 1)
        hi = torch.minimum(torch.ceil(torch.maximum(a, b) + reach), lim)
        ext = (hi - lo + 1).clamp(min=1).amax(dim=(0, 1))
        pw, ph = int(ext[0]), int(ext[1])                         # one host sync per call
        s = seg_idx.shape[0]
        chunk = max(1, _CHUNK_ELEMENTS // (s * ph * pw))
        ramp_x = torch.arange(pw, device=device, dtype=torch.float32)
        ramp_y = torch.arange(ph, device=device, dtype=torch.float32)
        # Scatter straight into one output unless autograd is recording: in-place writes would break it,
        # then chunks are concatenated at the end (twice the output's memory).
        track = torch.is_grad_enabled() and pts.requires_grad
        out = None if track else torch.zeros(n, 3, h * w, device=device, dtype=torch.float32)
        images = []
        for i in range(0, n, chunk):
            sl = slice(i, min(n, i + chunk))
            xs = lo[sl, :, 0, None] + ramp_x                                              # (c, S, pw)
            ys = lo[sl, :, 1, None] + ramp_y                                              # (c, S, ph)
            ax, ay = a[sl, :, 0, None, None], a[sl, :, 1, None, None]
            abx = (b[sl, :, 0] - a[sl, :, 0])[..., None, None]
            aby = (b[sl, :, 1] - a[sl, :, 1])[..., None, None]
            len2 = (abx * abx + aby * aby).clamp(min=1e-12)
            dx = xs[:, :, None, :] - ax                                                   # (c, S, 1, pw)
            dy = ys[:, :, :, None] - ay                                                   # (c, S, ph, 1)
            u = ((dx * abx + dy * aby) / len2).clamp(0.0, 1.0)                           # (c, S, ph, pw)
            ex, ey = dx - u * abx, dy - u * aby
            # eps keeps the sqrt gradient finite where a pixel centre lies exactly on the segment.
            cov = (reach - torch.sqrt(ex * ex + ey * ey + 1e-8)).clamp(0.0, 1.0)
            inside = (xs <= w - 1)[:, :, None, :] & (ys <= h - 1)[:, :, :, None]
            cov = cov * inside
            flat = (ys.clamp(max=h - 1).long() * w)[:, :, :, None] + xs.clamp(max=w - 1).long()[:, :, None, :]
            c = flat.shape[0]
            src = (cov[:, None] * colours.t()[None, :, :, None, None]).reshape(c, 3, -1)  # (c, 3, S*ph*pw)
            index = flat.reshape(c, 1, -1).expand(c, 3, -1)
            if out is not None:
                out[sl].scatter_reduce_(2, index, src, reduce="amax", include_self=True)
            else:
                blank = torch.zeros(c, 3, h * w, device=device, dtype=torch.float32)
                images.append(blank.scatter_reduce(2, index, src, reduce="amax", include_self=True))
        return (out if out is not None else torch.cat(images)).view(*lead, 3, h, w)


def draw_overlay(image: np.ndarray,
                 faces: FaceLandmarks | np.ndarray | Sequence[FaceLandmarks | np.ndarray],
                 thickness: int | None = None, points: bool = True, box: bool = True) -> np.ndarray:
    """A copy of ``image`` with landmarks drawn on it (for annotated previews).

    image: RGB uint8 ``(H, W, 3)``. faces: one or several ``FaceLandmarks`` or ``(68, 2)`` arrays.
    Draws each part's polyline in its colour, each point as a small dot with a dark outline (visible on light
    and dark skin), and the detector box of ``FaceLandmarks`` when ``box``. thickness: line width in pixels,
    default ``max(1, min(H, W) // 256)``. Returns a new RGB uint8 array of the same shape.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    canvas = np.ascontiguousarray(img).copy()
    if isinstance(faces, FaceLandmarks) or (isinstance(faces, np.ndarray) and faces.ndim == 2):
        faces = [faces]
    t = max(1, min(img.shape[:2]) // 256) if thickness is None else max(1, int(thickness))
    radius = t + 1
    for face in faces:
        pts = _check_points_np(face.points if isinstance(face, FaceLandmarks) else face)
        _draw_parts(canvas, pts, t)
        if points:
            for x, y in _fixed(pts):
                cv2.circle(canvas, (int(x), int(y)), radius << _SHIFT, (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(canvas, (int(x), int(y)), max(1, radius - 1) << _SHIFT, (255, 255, 255), -1,
                           cv2.LINE_AA, _SHIFT)
        if box and isinstance(face, FaceLandmarks):
            x0, y0, x1, y1 = _fixed(face.box.reshape(2, 2)).reshape(4)
            cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y1)), (0, 255, 0), t, cv2.LINE_AA, _SHIFT)
    return canvas


def _draw_parts(canvas: np.ndarray, pts: np.ndarray, thickness: int) -> None:
    fixed = _fixed(pts)
    for ids, closed, colour in PARTS.values():
        cv2.polylines(canvas, [fixed[list(ids)].reshape(-1, 1, 2)], closed, colour, thickness, cv2.LINE_AA,
                      _SHIFT)


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> OpenCV fixed point (``_SHIFT`` fractional bits), int32."""
    return np.round(np.clip(pts, -_FAR, _FAR) * (1 << _SHIFT)).astype(np.int32)


def _check_points_np(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"points must be ({NUM_POINTS}, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmark coordinates must be finite (got NaN or inf)")
    return pts


__all__ = ["default_thickness", "draw_landmarks", "draw_overlay", "image_size", "rasterize"]
