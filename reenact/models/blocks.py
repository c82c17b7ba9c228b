"""Building blocks shared by the embedder, generator and discriminator (BigGAN / SAGAN style).

All blocks take and return ``(B, C, H, W)`` float tensors. Residual blocks are pre-activation
(norm -> ReLU -> conv); the skip path uses a 1x1 conv where the channel count changes. Pooling and
nearest upsampling commute with 1x1 convs, so skips pool first / convolve first (4x cheaper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """Spectral-norm parametrization ``W / sigma(W)`` with one power iteration per training forward.

    Unlike ``torch.nn.utils.parametrizations.spectral_norm`` the power iteration and sigma always run in
    float32, also under bf16 autocast: a bf16 sigma would jitter the effective weight scale by ~0.4 %.
    The singular vectors are buffers ``u``/``v`` (saved in the state dict, so resuming is exact).
    """

    def __init__(self, weight: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        w = weight.detach().flatten(1)
        self.eps = eps
        self.register_buffer("u", F.normalize(torch.randn(w.shape[0]), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(torch.randn(w.shape[1]), dim=0, eps=eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.float().flatten(1)
            if self.training:
                with torch.no_grad():
                    v = F.normalize(w.t() @ self.u, dim=0, eps=self.eps)
                    u = F.normalize(w @ v, dim=0, eps=self.eps)
                    self.u.copy_(u)
                    self.v.copy_(v)
            # clones: a later forward (D runs twice per step) updates u/v in place before this backward
            sigma = torch.dot(self.u.clone(), w @ self.v.clone())
            return (weight.float() / sigma).to(weight.dtype)


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module.weight`` in :class:`SpectralNorm` when ``enabled``."""
    if enabled:
        parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight))
    return module


def conv(cin: int, cout: int, k: int, spectral: bool, bias: bool = True) -> nn.Module:
    return sn(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), spectral)


def linear(cin: int, cout: int, spectral: bool, bias: bool = True) -> nn.Module:
    return sn(nn.Linear(cin, cout, bias=bias), spectral)


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel normalisation over H, W (no affine)."""
    return F.instance_norm(x, eps=1e-5)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``IN(x) * (1 + scale) + shift`` with ``(scale, shift)`` given from outside.

    ``params`` is ``(B, 2C)``: the first C are scales (as offsets from 1, so psi = 0 is plain IN), the last C
    shifts. The "1 +" keeps early training stable when P e is still random.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.num_params = 2 * channels

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        scale, shift = params.to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return instance_norm(x) * (1 + scale) + shift


class ResBlockDown(nn.Module):
    """``(B, cin, H, W) -> (B, cout, H/2, W/2)`` (same size with ``down=False``).

    ``norm``: affine instance norm before each conv (G's landmark encoder); ``first``: the input is an image,
    so no norm/ReLU on it (BigGAN's "optimized" first block).
    """

    def __init__(self, cin: int, cout: int, spectral: bool, norm: bool = False, first: bool = False,
                 down: bool = True):
        super().__init__()
        self.first, self.down = first, down
        self.n1 = nn.InstanceNorm2d(cin, affine=True) if norm and not first else nn.Identity()
        self.c1 = conv(cin, cout, 3, spectral, bias=not norm)  # a bias before a norm is cancelled by it
        self.n2 = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()
        self.c2 = conv(cout, cout, 3, spectral)
        self.skip = conv(cin, cout, 1, spectral) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.n1(x))
        h = self.c2(F.relu(self.n2(self.c1(h))))
        s = x
        if self.down:
            h = F.avg_pool2d(h, 2)
            s = F.avg_pool2d(s, 2)
        if self.skip is not None:
            s = self.skip(s)
        return h + s


class ResBlockAdaIN(nn.Module):
    """Residual block at constant size with two AdaINs: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, spectral: bool):
        super().__init__()
        self.a1, self.a2 = AdaIN(channels), AdaIN(channels)
        self.c1 = conv(channels, channels, 3, spectral, bias=False)  # followed by a norm
        self.c2 = conv(channels, channels, 3, spectral)
        self.num_params = self.a1.num_params + self.a2.num_params

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        p1, p2 = params.split([self.a1.num_params, self.a2.num_params], dim=1)
        h = self.c1(F.relu(self.a1(x, p1)))
        h = self.c2(F.relu(self.a2(h, p2)))
        return x + h


class ResBlockUp(nn.Module):
    """``(B, cin, H, W) -> (B, cout, 2H, 2W)`` with AdaIN before each conv (nearest upsampling)."""

    def __init__(self, cin: int, cout: int, spectral: bool):
        super().__init__()
        self.a1, self.a2 = AdaIN(cin), AdaIN(cout)
        self.c1 = conv(cin, cout, 3, spectral, bias=False)  # followed by a norm
        self.c2 = conv(cout, cout, 3, spectral)
        self.skip = conv(cin, cout, 1, spectral) if cin != cout else None
        self.num_params = self.a1.num_params + self.a2.num_params

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        p1, p2 = params.split([self.a1.num_params, self.a2.num_params], dim=1)
        h = F.interpolate(F.relu(self.a1(x, p1)), scale_factor=2.0, mode="nearest")
        h = self.c2(F.relu(self.a2(self.c1(h), p2)))
        s = self.skip(x) if self.skip is not None else x
        return h + F.interpolate(s, scale_factor=2.0, mode="nearest")


class SelfAttention(nn.Module):
    """SAGAN self-attention ``x + gamma * o(softmax(q k^T) v)``; ``gamma`` starts at 0 (identity block).

    Keys and values are max-pooled 2x (BigGAN) to cut the cost 4x; attention uses
    ``scaled_dot_product_attention`` (fused kernels on GPU), i.e. with the usual 1/sqrt(d) scale.
    """

    def __init__(self, channels: int, spectral: bool):
        super().__init__()
        self.dk, self.dv = max(channels // 8, 1), max(channels // 2, 1)
        self.q = conv(channels, self.dk, 1, spectral, bias=False)
        self.k = conv(channels, self.dk, 1, spectral, bias=False)
        self.v = conv(channels, self.dv, 1, spectral, bias=False)
        self.o = conv(self.dv, channels, 1, spectral, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        kv = F.max_pool2d(x, 2) if min(h, w) >= 8 else x
        q = self.q(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, dk)
        k = self.k(kv).flatten(2).transpose(1, 2)[:, None]
        v = self.v(kv).flatten(2).transpose(1, 2)[:, None]
        a = F.scaled_dot_product_attention(q, k, v)[:, 0]  # (B, HW, dv)
        a = a.transpose(1, 2).reshape(b, self.dv, h, w)
        return x + self.gamma.to(x.dtype) * self.o(a)


def channels(base: int, cap: int, n: int) -> list[int]:
    """Widths ``min(base * 2**i, cap)`` for ``i < n``."""
    return [min(base * 2 ** i, cap) for i in range(n)]


def log2_int(x: int, what: str) -> int:
    n = int(x).bit_length() - 1
    if x < 1 or 2 ** n != x:
        raise ValueError(f"{what} must be a power of two, got {x}")
    return n
