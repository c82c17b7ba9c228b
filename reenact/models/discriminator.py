"""Projection discriminator D with a per-video embedding table W (Zakharov et al. 2019)."""
from __future__ import annotations

import torch
from torch import nn

from reenact.models.embedder import DownTrunk, sum_pool_relu
from reenact.models.blocks import linear


class Discriminator(nn.Module):
    """Realism ``r = v . (W[i] + w0) + b`` with ``v = ReLU(sumpool(V(x, y)))``.

    ``forward(x (B,3,H,W), lmk (B,3,H,W), video_index (B,) | None, w (B,D) | None) -> (score (B,), feats)``.
    Exactly one of ``video_index`` (meta-learning: row of W) or ``w`` (fine-tuning: a personalised vector,
    initialised from the embedding) is normally given; with neither, only ``w0`` is used. ``feats`` are the
    outputs of every residual block, for feature matching.
    """

    def __init__(self, cfg, num_videos: int):
        super().__init__()
        self.trunk = DownTrunk(cfg.resolution, cfg.base_channels, cfg.max_channels, cfg.attention_res,
                               cfg.spectral_norm, extra_block=True)
        c = self.trunk.out_channels
        self.proj = linear(c, cfg.embed_dim, cfg.spectral_norm) if c != cfg.embed_dim else None
        self.W = nn.Embedding(max(int(num_videos), 1), cfg.embed_dim)
        nn.init.normal_(self.W.weight, std=0.02)
        self.w0 = nn.Parameter(torch.zeros(cfg.embed_dim))
        self.b = nn.Parameter(torch.zeros(()))

    @property
    def num_videos(self) -> int:
        return self.W.num_embeddings

    def forward(self, x: torch.Tensor, lmk: torch.Tensor, video_index: torch.Tensor | None = None,
                w: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, feats = self.trunk(torch.cat([x, lmk], dim=1))
        v = sum_pool_relu(h)
        if self.proj is not None:
            v = self.proj(v)
        v = v.float()
        if w is None:
            w = self.W(video_index) if video_index is not None else torch.zeros_like(v)
        score = (v * (w.float() + self.w0)).sum(dim=1) + self.b
        return score, feats
