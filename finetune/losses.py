"""Stage-2 (fine-tuning) losses of Zakharov et al. 2019: content + adversarial hinge + feature matching.

No embedding-match term: in fine-tuning the discriminator's personal vector ``w'`` is a free parameter
(initialised from the embedding), so there is nothing to match it to.

These are the same definitions as stage 1 uses (``meta_learning.losses``), kept here because ``finetune``
depends on the core package only. The content loss is the offline default: multi-scale L1 over a Gaussian
pyramid plus (1 - SSIM). Inputs are ``(B, 3, H, W)`` float in ``[-1, 1]``; every function returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_hinge(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss on scores ``(B,)``: ``mean(relu(1 - real)) + mean(relu(1 + fake))``."""
    return F.relu(1.0 - real_score.float()).mean() + F.relu(1.0 + fake_score.float()).mean()


def g_hinge(fake_score: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge loss: ``-mean(D(fake))``."""
    return -fake_score.float().mean()


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Sum over D's blocks of the mean L1 between real (constants) and generated activations."""
    return sum((f.float() - r.detach().float()).abs().mean() for r, f in zip(real_feats, fake_feats))


def _gauss_kernel(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, per channel."""
    c, p = x.shape[1], k1.numel() // 2
    x = F.conv2d(F.pad(x, (p, p, 0, 0), mode="reflect"), k1.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, p, p), mode="reflect"), k1.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def pyramid_l1(fake: torch.Tensor, real: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Mean over ``levels`` pyramid levels of the L1 between blurred, 2x-subsampled images."""
    k = _gauss_kernel(5, 1.0, fake.device)
    a, b = fake.float(), real.float()
    total, n = a.new_zeros(()), 0
    for lvl in range(levels):
        total = total + (a - b).abs().mean()
        n += 1
        if lvl + 1 == levels or min(a.shape[-2:]) < 8:
            break
        a, b = _blur(a, k)[..., ::2, ::2], _blur(b, k)[..., ::2, ::2]
    return total / n


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images in [-1, 1] (computed on [0, 1] with a Gaussian window)."""
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    window = min(window, (min(x.shape[-2:]) // 2) * 2 - 1)
    k = _gauss_kernel(window, sigma, x.device)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _blur(x, k), _blur(y, k)
    sxx = _blur(x * x, k) - mx ** 2
    syy = _blur(y * y, k) - my ** 2
    sxy = _blur(x * y, k) - mx * my
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))).mean()


def content_loss(fake: torch.Tensor, real: torch.Tensor, pyramid_weight: float, ssim_weight: float,
                 levels: int = 4) -> dict[str, torch.Tensor]:
    """Weighted pixel-space content terms ``{"pyramid": w * L1, "ssim": w * (1 - SSIM)}`` (fp32, no autocast)."""
    with torch.autocast(fake.device.type, enabled=False):
        out = {"pyramid": pyramid_weight * pyramid_l1(fake, real, levels)}
        if ssim_weight > 0:
            out["ssim"] = ssim_weight * (1.0 - ssim(fake, real))
    return out
