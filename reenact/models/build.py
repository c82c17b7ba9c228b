"""Networks from a ModelConfig (``cfg.model``): the variant the config names, with its sizes."""
from __future__ import annotations

from torch import nn

from reenact.models.discriminator import Discriminator
from reenact.models.embedder import Embedder
from reenact.models.generator import Generator
from reenact.models.warp_generator import WarpGenerator


def build_embedder(cfg) -> Embedder:
    """``cfg``: a ModelConfig."""
    return Embedder(cfg)


def build_generator(cfg) -> nn.Module:
    """The generator variant named by ``cfg.generator``: "base" (the paper's) or "warp" (warp-guided)."""
    if cfg.generator == "base":
        return Generator(cfg)
    if cfg.generator == "warp":
        return WarpGenerator(cfg)
    raise ValueError(f"model.generator={cfg.generator!r} is not available (known: 'base', 'warp')")


def build_discriminator(cfg, num_videos: int) -> Discriminator:
    return Discriminator(cfg, num_videos)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
