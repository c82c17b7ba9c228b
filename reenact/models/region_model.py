"""A meta-learned region model (``meta_learning.region_train``): E and G ready to render, D's weights for
fine-tuning, the region it was trained on, and the hash that avatars record (as :class:`BaseModel`)."""
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
from reenact.models.region import RegionDiscriminator, RegionEmbedder, RegionGenerator, build_region_models
from reenact.regions import RegionSpec, get_region

KIND = "region"


def is_region_checkpoint(meta: dict) -> bool:
    return meta.get("kind") == KIND


@dataclass
class RegionModel:
    path: Path
    config: Any
    hash: str
    step: int
    E: RegionEmbedder
    G: RegionGenerator
    D_weights: dict[str, torch.Tensor]
    device: torch.device
    #: fine-tuning steps when the user gives none: feed-forward. On held-out identities 100 steps on warp round
    #: trips of the photo gave up most of the mouth-interior gain (docs/results.md, "Fine-tuning the photo model").
    finetune_steps: ClassVar[int] = 0

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "RegionModel":
        dev = resolve_device(device)
        ck = load_checkpoint(path, train_state=False)
        if not is_region_checkpoint(ck.meta):
            raise CheckpointError(f"{ck.path}: not a region model (meta.json kind={ck.meta.get('kind')!r})")
        for name in ("E_ema", "G_ema"):  # D is optional: a bundled model may ship without it (rendering and
            if name not in ck.weights:     # fine-tuning on warp round trips need only E and G)
                raise CheckpointError(f"{ck.path}: no weights for {name!r} (has: {', '.join(ck.weights)})")
        cfg = ck.config
        if cfg is None:
            raise CheckpointError(f"{ck.path}: no config.yaml, cannot build the networks")
        E, G, _ = build_region_models(cfg.model, 1)
        digest = checkpoint_hash(ck)
        ck.load_into({"E_ema": E, "G_ema": G})
        for net in (E, G):
            net.to(dev).eval().requires_grad_(False)
        return cls(path=ck.path, config=cfg, hash=digest, step=ck.step, E=E, G=G, D_weights=dict(ck.weights.get("D", {})),
                   device=dev)

    @property
    def spec(self) -> RegionSpec:
        return get_region(self.config.model.region)

    @property
    def resolution(self) -> int:
        """Side of the face crops its avatars' ``render_batch`` returns (the API's crop rule)."""
        from reenact.crop import CropParams

        return CropParams().size

    @property
    def size(self) -> int:
        return int(self.config.model.size)

    def generator_copy(self) -> nn.Module:
        return copy.deepcopy(self.G).requires_grad_(True)

    def build_discriminator(self) -> RegionDiscriminator:
        if not self.D_weights:
            raise CheckpointError(f"{self.path}: this region model ships without its discriminator (D)")
        D = build_region_models(self.config.model, int(self.D_weights["W.weight"].shape[0]))[2]
        try:
            D.load_state_dict(self.D_weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights of 'D' do not fit the model: {exc}") from None
        return D.to(self.device)
