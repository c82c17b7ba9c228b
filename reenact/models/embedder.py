"""Embedder E: K (frame, landmark image) pairs of one person -> identity embedding e (Zakharov et al. 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.models.blocks import ResBlockDown, SelfAttention, channels, linear, log2_int


class DownTrunk(nn.Module):
    """6-channel (image + landmark image) input -> residual downsampling blocks to 4x4 -> per-block features.

    Shared by E and D (same design, no normalisation). ``forward`` returns ``(h (B, C, 4, 4), feats)`` where
    ``feats`` holds the output of every residual block (D's feature matching uses them).
    """

    def __init__(self, resolution: int, base: int, cap: int, attention_res: int, spectral: bool,
                 extra_block: bool = False):
        super().__init__()
        n = log2_int(resolution, "model.resolution") - 2  # down to 4x4
        if n < 1:
            raise ValueError(f"model.resolution must be >= 8, got {resolution}")
        widths = channels(base, cap, n)
        self.blocks = nn.ModuleList()
        self.attn_after = -1
        cin, res = 6, resolution
        for i, cout in enumerate(widths):
            self.blocks.append(ResBlockDown(cin, cout, spectral, first=(i == 0)))
            cin, res = cout, res // 2
            if res == attention_res:
                self.attn_after = i
        if extra_block:  # D's additional block at 4x4 (paper)
            self.blocks.append(ResBlockDown(cin, cin, spectral, down=False))
        self.attention = SelfAttention(widths[self.attn_after], spectral) if self.attn_after >= 0 else None
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.attn_after:
                x = self.attention(x)
            feats.append(x)
        return x, feats


def sum_pool_relu(h: torch.Tensor) -> torch.Tensor:
    """Global sum pooling over H, W followed by ReLU: ``(B, C, H, W) -> (B, C)``."""
    return F.relu(h.sum(dim=(2, 3)))


class Embedder(nn.Module):
    """``forward(frames (B, K, 3, H, W), lmks (B, K, 3, H, W))`` in [-1, 1] ->
    ``(e_mean (B, D), e_per_frame (B, K, D))``, D = ``embed_dim``; embeddings are >= 0 (ReLU) unless a final
    projection is needed (last width != embed_dim)."""

    def __init__(self, cfg):
        super().__init__()
        self.trunk = DownTrunk(cfg.resolution, cfg.base_channels, cfg.max_channels, cfg.attention_res,
                               cfg.spectral_norm)
        c = self.trunk.out_channels
        self.proj = linear(c, cfg.embed_dim, cfg.spectral_norm) if c != cfg.embed_dim else None
        self.embed_dim = cfg.embed_dim

    def forward(self, frames: torch.Tensor, lmks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = frames.shape[:2]
        x = torch.cat([frames, lmks], dim=2).flatten(0, 1)  # (B*K, 6, H, W)
        h, _ = self.trunk(x)
        e = sum_pool_relu(h)
        if self.proj is not None:
            e = self.proj(e)
        e = e.float().view(b, k, -1)
        return e.mean(dim=1), e
