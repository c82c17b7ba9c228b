"""No-reference sharpness: variance of the Laplacian and CPBD, measured on the face.

Both are computed on the gray face box (the target landmarks' bounding box grown by 10% on each side), so the
background (often out of focus in the real video too) does not dominate. For generated images the variance of
the Laplacian is reported relative to the real frame (output / real: 1 = as sharp as the real frame, below 1
blurrier); CPBD is absolute (in [0, 1], higher = sharper) and reported for outputs and real frames alike.

CPBD (cumulative probability of blur detection) follows the description in Narvekar & Karam, "A No-Reference
Image Blur Metric Based on the Cumulative Probability of Blur Detection (CPBD)", IEEE TIP 2011, built on the
just-noticeable-blur (JNB) model of Ferzli & Karam 2009:

1. edges: Canny on the gray image (Gaussian pre-smoothing sigma sqrt(2); hysteresis thresholds set per image,
   high = 70th percentile of the gradient magnitude (at least max / 64), low = 0.4 x high, as MATLAB's
   ``edge(I, 'canny')``);
2. the image is cut into 64 x 64 blocks; a block with more than 0.2% edge pixels is an edge block, with
   contrast C = max - min of its gray values and JNB width ``w_JNB = 5`` if ``C <= 50`` else 3;
3. at every edge pixel of an edge block the edge width ``w`` is the distance between the local intensity
   extrema on either side of it along the gradient's dominant axis (rows for mostly horizontal gradients,
   columns for mostly vertical ones; Marziliano et al.'s width, measured along rows only in the paper);
4. ``P_blur = 1 - exp(-(w / w_JNB) ** 3.6)``; CPBD is the fraction of edge pixels with ``P_blur <= 63%``
   (``P_JNB``: a width equal to the JNB width gives 1 - 1/e = 63.2%).

Absolute values depend on the image's resolution history: 256 px crops upscaled from small faces in the
source videos score low (real frames of the shared clips: ~0.03 at 256 px), so compare methods on one data
set, never across data sets.
"""
from __future__ import annotations

import cv2
import numpy as np

BETA = 3.6
P_JNB = 0.63
BLOCK = 64
EDGE_BLOCK_FRACTION = 0.002

Box = tuple[int, int, int, int]


def face_box(points: np.ndarray, height: int, width: int, margin: float = 0.1) -> Box:
    """(x0, y0, x1, y1) of the landmarks' bounding box grown by ``margin`` x its width/height per side, clipped."""
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    pad = margin * (hi - lo)
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))


def gray(image: np.ndarray, box: Box | None = None) -> np.ndarray:
    """Float64 luma (BT.601) in [0, 255] of an RGB uint8 image (or a gray one), optionally cut to ``box``."""
    img = np.asarray(image)
    if box is not None:
        x0, y0, x1, y1 = box
        img = img[y0:y1, x0:x1]
    if img.ndim == 3:
        img = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return img.astype(np.float64)


def laplacian_variance(image: np.ndarray, box: Box | None = None) -> float:
    """Variance of the 3x3 Laplacian of the gray image (inside ``box``): high for sharp, low for blurred."""
    return float(cv2.Laplacian(gray(image, box), cv2.CV_64F).var())


def _canny(g: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(g.astype(np.float32), (0, 0), np.sqrt(2))
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    # MATLAB's rule bins the normalised magnitude in 64 steps, so its threshold is never below max / 64; without
    # that floor a mostly flat image (70% of pixels with no gradient) would have every speck as an edge.
    high = max(float(np.percentile(mag, 70)), float(mag.max()) / 64)
    if high <= 0:
        return np.zeros(g.shape, bool)
    edges = cv2.Canny(np.round(gx).astype(np.int16), np.round(gy).astype(np.int16), 0.4 * high, high,
                      L2gradient=True)
    return edges > 0


def _runs(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, along rows: steps to the local max on the right (strictly rising), to the local min on the
    left (strictly falling going left), to the local min on the right, to the local max on the left."""
    h, w = g.shape
    up_r, down_r, down_l, up_l = (np.zeros((h, w), np.int32) for _ in range(4))
    for x in range(w - 2, -1, -1):
        up_r[:, x] = np.where(g[:, x + 1] > g[:, x], up_r[:, x + 1] + 1, 0)
        down_r[:, x] = np.where(g[:, x + 1] < g[:, x], down_r[:, x + 1] + 1, 0)
    for x in range(1, w):
        down_l[:, x] = np.where(g[:, x - 1] < g[:, x], down_l[:, x - 1] + 1, 0)
        up_l[:, x] = np.where(g[:, x - 1] > g[:, x], up_l[:, x - 1] + 1, 0)
    return up_r, down_l, down_r, up_l


def edge_widths(g: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(H, W) width in pixels of the edge through every pixel of ``edges`` (0 elsewhere), per step 3 above."""
    gx = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
    width = np.zeros(g.shape, np.int32)
    for axis in (0, 1):
        if axis == 0:  # measure along rows where the gradient is mostly horizontal
            sel, grad, gg = edges & (np.abs(gx) >= np.abs(gy)), gx, g
        else:
            sel, grad, gg = (edges & (np.abs(gx) < np.abs(gy))).T, gy.T, g.T
        up_r, down_l, down_r, up_l = _runs(gg)
        w = np.where(grad > 0, up_r + down_l, down_r + up_l) * sel
        width += w if axis == 0 else w.T
    return width


def cpbd(image: np.ndarray, box: Box | None = None) -> float:
    """CPBD sharpness in [0, 1] (higher = sharper) of an RGB uint8 (or gray) image, inside ``box``.
    ``nan`` when the image has no edge block (a flat image)."""
    g = gray(image, box)
    edges = _canny(g)
    widths = edge_widths(g, edges)
    h, w = g.shape
    probs = []
    for y in range(0, h, BLOCK):
        for x in range(0, w, BLOCK):
            e = edges[y:y + BLOCK, x:x + BLOCK]
            if e.sum() <= EDGE_BLOCK_FRACTION * e.size:
                continue
            blk = g[y:y + BLOCK, x:x + BLOCK]
            w_jnb = 5.0 if blk.max() - blk.min() <= 50 else 3.0
            wid = widths[y:y + BLOCK, x:x + BLOCK][e]
            wid = wid[wid > 0]
            probs.append(1.0 - np.exp(-((wid / w_jnb) ** BETA)))
    if not probs:
        return float("nan")
    p = np.concatenate(probs)
    return float((p <= P_JNB).mean()) if len(p) else float("nan")


def lapvar_ratio(fake: np.ndarray, real: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) variance of the Laplacian of ``fake`` over that of ``real`` ((N, H, W, 3) uint8) in the face box of
    the target ``points`` (N, 68, 2); NaN where the real box is flat. At any resolution: on full frames it is
    the sharpness a user sees in the pasted-back photo."""
    fake, real = np.asarray(fake), np.asarray(real)
    n, h, w = fake.shape[:3]
    out = np.full(n, np.nan)
    for i in range(n):
        box = face_box(points[i], h, w)
        lr = laplacian_variance(real[i], box)
        if lr > 0:
            out[i] = laplacian_variance(fake[i], box) / lr
    return out


def sharpness(fake: np.ndarray, real: np.ndarray, points: np.ndarray, real_cpbd: bool = True) -> dict[str, np.ndarray]:
    """Per image of (N, H, W, 3) ``fake``/``real`` with target ``points`` (N, 68, 2), on the face box:
    ``lapvar_ratio`` (:func:`lapvar_ratio`), ``cpbd`` (output) and, if ``real_cpbd``, ``cpbd_real``."""
    fake, real = np.asarray(fake), np.asarray(real)
    n, h, w = fake.shape[:3]
    out = {k: np.zeros(n) for k in ("cpbd",) + (("cpbd_real",) if real_cpbd else ())}
    out["lapvar_ratio"] = lapvar_ratio(fake, real, points)
    for i in range(n):
        box = face_box(points[i], h, w)
        out["cpbd"][i] = cpbd(fake[i], box)
        if real_cpbd:
            out["cpbd_real"][i] = cpbd(real[i], box)
    return out
