"""The meta-learned base model that avatars are personalised from: E, G (frozen) and D's weights.

Every avatar records a content hash of its base model's weights, so that loading it onto another model fails
loudly instead of rendering garbage. The hash is computed from the tensors (names, dtypes, shapes, bytes, in
sorted order), once per checkpoint, and cached in the checkpoint's ``meta.json`` (key ``weights_sha256``).
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenact.checkpoint import Checkpoint, atomic_write_text, load_checkpoint
from reenact.errors import CheckpointError

HASH_KEY = "weights_sha256"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when there is one, else the CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    return dev


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # uint8 view works for every dtype (bfloat16 included, which numpy cannot represent).
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_hash(weights: dict[str, dict[str, torch.Tensor]]) -> str:
    """SHA-256 (hex) of all tensors of a checkpoint, ``weights[module][name]``; independent of dict order."""
    h = hashlib.sha256()
    flat = {f"{m}.{k}": t for m, d in weights.items() for k, t in d.items()}
    for key in sorted(flat):
        t = flat[key]
        h.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def checkpoint_hash(ck: Checkpoint, store: bool = True) -> str:
    """The checkpoint's weights hash: read from ``meta.json`` when present, else computed and (``store``)
    written there atomically. A read-only checkpoint (e.g. installed package data) is simply not updated."""
    cached = ck.meta.get(HASH_KEY)
    if isinstance(cached, str) and len(cached) == 64:
        return cached
    digest = weights_hash(ck.weights)
    ck.meta[HASH_KEY] = digest
    if store:
        meta_path = ck.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            if HASH_KEY not in meta:
                meta[HASH_KEY] = digest
                atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
        except (OSError, json.JSONDecodeError):
            pass  # the hash is still used for this session; it is recomputed next time
    return digest


@dataclass
class BaseModel:
    """E and G (eval mode, frozen, on ``device``) and D's weights (CPU, built on demand for fine-tuning).

    E/G are the EMA weights (``E_ema``/``G_ema``) when the checkpoint has them: they are the ones stage 1
    validates and exports. ``hash`` identifies the checkpoint file's weights (see :func:`weights_hash`).
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

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "BaseModel":
        from reenact.models import build_embedder, build_generator

        ck = load_checkpoint(path, train_state=False)
        if ck.config is None:
            raise CheckpointError(f"{ck.path}: no config.yaml, cannot build the networks")
        dev = resolve_device(device)
        mc = ck.config.model
        e_name = "E_ema" if "E_ema" in ck.weights else "E"
        g_name = "G_ema" if "G_ema" in ck.weights else "G"
        for name in (e_name, g_name, "D"):
            if name not in ck.weights:
                raise CheckpointError(f"{ck.path}: no weights for {name!r} (has: {', '.join(ck.weights)}); "
                                      "a meta-learned checkpoint has E, G and D")
        E, G = build_embedder(mc), build_generator(mc)
        ck.load_into({e_name: E, g_name: G})
        for m in (E, G):
            m.to(dev).eval().requires_grad_(False)
        d_w = ck.weights["D"]
        if "W.weight" not in d_w:
            raise CheckpointError(f"{ck.path}: D has no per-video table W.weight")
        return cls(path=ck.path, config=ck.config, hash=checkpoint_hash(ck), step=ck.step, E=E, G=G,
                   D_weights=dict(d_w), num_videos=int(d_w["W.weight"].shape[0]), device=dev)

    @property
    def resolution(self) -> int:
        return int(self.config.model.resolution)

    def generator_copy(self) -> nn.Module:
        """A trainable copy of G (same device), for fine-tuning; the base G is never modified."""
        return copy.deepcopy(self.G).requires_grad_(True)

    def build_discriminator(self) -> nn.Module:
        """D with the checkpoint's weights on ``device`` (a fresh module each call)."""
        from reenact.models import build_discriminator

        D = build_discriminator(self.config.model, self.num_videos)
        try:
            D.load_state_dict(self.D_weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights of 'D' do not fit the model: {exc}") from None
        return D.to(self.device)
