"""Full-reference pixel metrics: PSNR and SSIM between generated and real RGB images.

Images are RGB uint8 ``(H, W, 3)`` or batches ``(N, H, W, 3)``; every function returns one value per image.
SSIM is ``kornia.metrics.ssim`` (Gaussian window 11, sigma 1.5) on ``[0, 1]`` RGB, averaged over channels and
over the pixels whose window lies fully inside the image (the "valid" area, as in the SSIM paper).
"""
from __future__ import annotations

import numpy as np
import torch

WINDOW = 11


def _batch(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected RGB images (H, W, 3) or (N, H, W, 3), got {a.shape}")
    return a


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _batch(a), _batch(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(N,) PSNR in dB; ``inf`` for identical images. ``data_range``: 255 for uint8, 1 for [0, 1] floats."""
    a, b = _pair(a, b)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(N, H, W) float32 SSIM map (channel mean) with reflect padding at the border, so that regions near the
    edge still get a value; :func:`ssim` averages only its valid interior."""
    a, b = _pair(a, b)
    ta = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / data_range
    tb = torch.from_numpy(np.ascontiguousarray(b)).permute(0, 3, 1, 2).float() / data_range
    from kornia.metrics import ssim as _ssim

    with torch.no_grad():
        m = _ssim(ta, tb, WINDOW, max_val=1.0, eps=0.0, padding="same")
    return m.mean(1).numpy()


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(N,) mean SSIM in [-1, 1]; exactly 1 for identical images. Images must be larger than 11 px."""
    m = ssim_map(a, b, data_range)
    p = WINDOW // 2
    if m.shape[1] <= 2 * p or m.shape[2] <= 2 * p:
        raise ValueError(f"images of {m.shape[1]}x{m.shape[2]} px are too small for an {WINDOW} px SSIM window")
    return m[:, p:-p, p:-p].reshape(len(m), -1).mean(1).astype(np.float64)
