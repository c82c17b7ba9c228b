"""Region networks (Zakharov et al. 2019's machinery on one face region at the frame's own resolution).

- :class:`RegionEmbedder` E: K region crops of a person + their landmark images -> one embedding ``e``
  (mean over the shots), ``(B, K, 6, S, S) -> (B, D)``.
- :class:`RegionGenerator` G: the source warped to the target landmarks + the target's region landmark image
  -> RGB and a soft blend mask; AdaIN parameters ``psi = P e`` (P is G's projection). Output
  ``m * rgb + (1 - m) * warped``: G paints where a warp cannot (teeth, the cavity of an open mouth) and passes
  the warp elsewhere. Built for a CPU: stride-2 encoder to 16 px, one AdaIN residual block, AdaIN decoder to
  64 px and an output conv at full size after a bilinear upsampling (``head="resize"``; the sub-pixel
  ``"shuffle"`` head of the first trained model painted a 2 px checkerboard, the artefact Odena et al. 2016
  describe for sub-pixel and transposed convolutions); about 1.3 GFLOPs at 128x128 with width 48.
- :class:`RegionDiscriminator` D: projection discriminator on (crop, landmark image) with a per-video
  embedding table ``W`` (the paper's ``W_i``; ``w0`` shared); returns the realism score and its features
  (feature matching).

Tensors are ``(B, C, H, W)`` in ``[-1, 1]`` for images, ``[0, 1]`` for landmark images (3 channels, see
:mod:`reenact.regions`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reenact.models.blocks import AdaIN, ResBlockAdaIN, ResBlockDown, linear

DRAW_CHANNELS = 3


@dataclass(frozen=True)
class RegionOutput:
    """What G computed: ``image`` (the blend), ``rgb`` (G's painting), ``mask`` in [0, 1] ``(B, 1, S, S)``."""

    image: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor


def sum_pool_relu(h: torch.Tensor) -> torch.Tensor:
    return F.relu(h).sum(dim=(2, 3))


class _Trunk(nn.Module):
    """Residual down-sampling trunk ``(B, cin, S, S) -> (B, C, 4, 4)`` plus the per-stage features."""

    def __init__(self, cin: int, size: int, base: int, cap: int, spectral: bool = True):
        super().__init__()
        blocks, c, s = [], cin, size
        width = base
        while s > 4:
            blocks.append(ResBlockDown(c, min(width, cap), spectral, first=not blocks))
            c, s, width = min(width, cap), s // 2, width * 2
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return x, feats


class RegionEmbedder(nn.Module):
    def __init__(self, size: int = 128, dim: int = 256, base: int = 32):
        super().__init__()
        self.trunk = _Trunk(3 + DRAW_CHANNELS, size, base, dim)
        self.dim = dim

    def forward(self, crops: torch.Tensor, drawings: torch.Tensor, shots: torch.Tensor | None = None) -> torch.Tensor:
        """``crops`` ``(B, K, 3, S, S)``, ``drawings`` ``(B, K, 3, S, S)`` -> ``e`` ``(B, D)``: the mean over the
        K shots, or over those with ``shots`` ``(B, K)`` = 1 (padding has 0)."""
        b, k = crops.shape[:2]
        x = torch.cat([crops, drawings.to(crops.dtype)], 2).flatten(0, 1)
        h, _ = self.trunk(x)
        e = sum_pool_relu(h).view(b, k, -1)
        if shots is None:
            return e.mean(1)
        w = shots.to(e.dtype)[..., None]
        return (e * w).sum(1) / w.sum(1).clamp_min(1)


class RegionGenerator(nn.Module):
    def __init__(self, size: int = 128, dim: int = 256, width: int = 32, head: str = "resize"):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width  # 64, 32, 16 px
        self.size = size
        self.e0 = nn.Conv2d(3 + DRAW_CHANNELS, w1, 3, stride=2, padding=1)
        self.e1 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.e2 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.mid = ResBlockAdaIN(w3, spectral=False)
        self.d2 = nn.Conv2d(w3, w2, 3, padding=1, bias=False)
        self.a2 = AdaIN(w2)
        self.d1 = nn.Conv2d(w2, w1, 3, padding=1, bias=False)
        self.a1 = AdaIN(w1)
        self.head = head
        if head == "shuffle":
            self.out = nn.Conv2d(w1, 4 * 4, 3, padding=1)  # (rgb + mask) x 2x2 sub-pixels
        elif head == "resize":
            self.out = nn.Conv2d(w1, 4, 3, padding=1)  # at full size, after a bilinear upsampling
        else:
            raise ValueError(f"unknown generator head {head!r} (known: shuffle, resize)")
        self.num_params = self.mid.num_params + self.a2.num_params + self.a1.num_params
        self.P = nn.Linear(dim, self.num_params)
        with torch.no_grad():
            # the mask starts mostly closed (sigmoid(-2) = 0.12): training begins at the warp's quality
            self.out.bias.view(4, -1)[3].fill_(-2.0)

    def psi(self, e: torch.Tensor) -> torch.Tensor:
        """AdaIN parameters ``(B, n)`` from embeddings ``(B, D)``."""
        return self.P(e)

    def forward(self, warped: torch.Tensor, drawing: torch.Tensor, psi: torch.Tensor) -> RegionOutput:
        """``warped`` ``(B, 3, S, S)`` in [-1, 1], ``drawing`` ``(B, 3, S, S)`` in [0, 1], ``psi`` ``(B, n)`` or
        ``(1, n)`` (one person for the batch)."""
        if psi.shape[0] != warped.shape[0]:
            psi = psi.expand(warped.shape[0], -1)
        pm, p2, p1 = psi.split([self.mid.num_params, self.a2.num_params, self.a1.num_params], 1)
        x = torch.cat([warped, drawing.to(warped.dtype)], 1)
        h0 = F.relu(self.e0(x))
        h1 = F.relu(self.e1(h0))
        h = self.mid(F.relu(self.e2(h1)), pm)
        h = F.relu(self.a2(self.d2(F.interpolate(h, scale_factor=2.0, mode="nearest")), p2)) + h1
        h = F.relu(self.a1(self.d1(F.interpolate(h, scale_factor=2.0, mode="nearest")), p1)) + h0
        if self.head == "shuffle":
            y = F.pixel_shuffle(self.out(h), 2)  # (B, 4, S, S)
        else:
            y = self.out(F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False))
        rgb = torch.tanh(y[:, :3])
        mask = torch.sigmoid(y[:, 3:4].float()).to(rgb.dtype)
        return RegionOutput(mask * rgb + (1 - mask) * warped, rgb, mask)


class RegionDiscriminator(nn.Module):
    def __init__(self, num_videos: int, size: int = 128, dim: int = 256, base: int = 32):
        super().__init__()
        self.trunk = _Trunk(3 + DRAW_CHANNELS, size, base, dim)
        self.w = linear(dim, 1, spectral=True)
        self.W = nn.Embedding(num_videos, dim)  # per-video projection vectors W_i (paper: columns of W)
        self.w0 = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.W.weight, std=0.02)

    @property
    def num_videos(self) -> int:
        return int(self.W.num_embeddings)

    def forward(self, image: torch.Tensor, drawing: torch.Tensor, video: torch.Tensor | None = None,
                w_video: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Realism score ``(B,)`` and features. ``video``: rows of ``W`` ``(B,)``; or ``w_video`` ``(B, D)``
        given directly (fine-tuning, where ``W`` of the new person starts from its embedding)."""
        h, feats = self.trunk(torch.cat([image, drawing.to(image.dtype)], 1))
        v = sum_pool_relu(h)
        wi = self.W(video) if w_video is None else w_video
        score = self.w(v).squeeze(1) + ((wi.to(v.dtype) + self.w0.to(v.dtype)) * v).sum(1)
        return score, feats


def build_region_models(m, num_videos: int) -> tuple[RegionEmbedder, RegionGenerator, RegionDiscriminator]:
    """E, G, D of a ``RegionModelConfig`` (``reenact.config``); D has ``num_videos`` rows of W."""
    return (RegionEmbedder(m.size, m.embed_dim, m.e_base), RegionGenerator(m.size, m.embed_dim, m.g_width, m.g_head),
            RegionDiscriminator(num_videos, m.size, m.embed_dim, m.d_base))
