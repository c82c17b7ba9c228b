"""The meta-learned base model: E and G ready to render, and D's weights for fine-tuning, from one checkpoint.

Stage 1 writes checkpoints, stage 2 personalises from this, the API and the puppeteer render with it; each
avatar records :attr:`BaseModel.hash` (``reenact.checkpoint.checkpoint_hash``, computed from the weights
loaded), so opening an avatar onto another model fails loudly instead of rendering garbage.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from reenact.checkpoint import checkpoint_hash, load_checkpoint
from reenact.device import resolve_device
from reenact.errors import CheckpointError
from reenact.models.build import build_discriminator, build_embedder, build_generator


@dataclass
class BaseModel:
    """E and G (eval mode, frozen, on ``device``) and D's weights (CPU, built on demand for fine-tuning).

    E/G are the EMA weights (``E_ema``/``G_ema``) when the checkpoint has them: they are the ones stage 1
    validates and exports. ``hash`` identifies the checkpoint's weights (``reenact.checkpoint.weights_hash``).
    """

    path: Path
    config: Any
    hash: str
    step: int
    E: nn.Module
    G: nn.Module
    D_weights: dict[str, torch.Tensor]
    num_videos: int
    device: torch.device
    #: fine-tuning steps when the user gives none (the paper's stage 2; FT100 beats FF on held-out faces)
    finetune_steps: ClassVar[int] = 100

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "BaseModel":
        """A checkpoint directory, its ``checkpoints`` folder or a run folder -> the model on ``device``
        (see ``reenact.device.resolve_device``). CheckpointError naming the file for anything unusable."""
        dev = resolve_device(device)
        ck = load_checkpoint(path, train_state=False)
        if ck.config is None:
            raise CheckpointError(f"{ck.path}: no config.yaml, cannot build the networks")
        mc = ck.config.model
        e_name = "E_ema" if "E_ema" in ck.weights else "E"
        g_name = "G_ema" if "G_ema" in ck.weights else "G"
        for name in (e_name, g_name, "D"):
            if name not in ck.weights:
                raise CheckpointError(f"{ck.path}: no weights for {name!r} (has: {', '.join(ck.weights)}); "
                                      "a meta-learned checkpoint has E, G and D")
        d_w = ck.weights["D"]
        if "W.weight" not in d_w:
            raise CheckpointError(f"{ck.path}: D has no per-video table W.weight")
        digest = checkpoint_hash(ck)
        E, G = build_embedder(mc), build_generator(mc)
        ck.load_into({e_name: E, g_name: G})
        for m in (E, G):
            m.to(dev).eval().requires_grad_(False)
        return cls(path=ck.path, config=ck.config, hash=digest, step=ck.step, E=E, G=G,
                   D_weights=dict(d_w), num_videos=int(d_w["W.weight"].shape[0]), device=dev)

    @property
    def resolution(self) -> int:
        return int(self.config.model.resolution)

    def generator_copy(self) -> nn.Module:
        """A trainable copy of G (same device), for fine-tuning; the base G is never modified."""
        return copy.deepcopy(self.G).requires_grad_(True)

    def build_discriminator(self) -> nn.Module:
        """D with the checkpoint's weights on ``device`` (a fresh module each call)."""
        D = build_discriminator(self.config.model, self.num_videos)
        try:
            D.load_state_dict(self.D_weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights of 'D' do not fit the model: {exc}") from None
        return D.to(self.device)


def load(path: str | Path, device: str | torch.device = "auto") -> BaseModel:
    """``BaseModel.load``: the one way to turn a meta-learned checkpoint into networks."""
    return BaseModel.load(path, device)
