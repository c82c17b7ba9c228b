"""Configuration of the speech models (omegaconf structured config) and their checkpoints.

The lip-sync expert's sizes (:class:`~reenact.models.lipsync.SyncModelConfig`) and checkpoint reading
(:func:`~reenact.models.lipsync.open_audio_checkpoint`) are the core's, which scores AV sync without this stage.
The audio checkpoints use the project format (:mod:`reenact.checkpoint`: safetensors + meta.json + config.yaml).
``config.yaml`` there is the image model's ``Config`` schema, which has no place for these settings, so the
:class:`AudioConfig` is stored in ``meta.json`` under ``"audio_config"`` (and ``"kind"`` says which network).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from reenact.models.lipsync import SyncModelConfig, build_syncnet, open_audio_checkpoint


@dataclass
class A2LModelConfig:
    """Audio-to-landmark network sizes (:class:`puppeteer.audio.model.AudioToLandmarks`)."""

    channels: int = 96
    dim: int = 128
    hidden: int = 128  # GRU width (temporal="gru")
    layers: int = 2
    dropout: float = 0.3
    temporal: str = "conv"  # "conv": +-0.24 s of context per frame; "gru": bidirectional GRU over the sequence


@dataclass
class AudioTrainConfig:
    """Optimisation of one of the two networks."""

    steps: int = 1500
    batch_size: int = 32
    length: int = 40  # frames per training sequence (audio-to-landmark); the expert uses 5 (+ offsets)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_every: int = 250
    patience: int = 10  # stop after this many validations without a better held-out score (0: never);
    # the weights of the best validation are what is saved either way


@dataclass
class AudioConfig:
    """Everything the speech models need. ``window``: mel frames (10 ms) of audio context per video frame."""

    window: int = 20
    fps: float = 25.0
    a2l: A2LModelConfig = field(default_factory=A2LModelConfig)
    sync: SyncModelConfig = field(default_factory=SyncModelConfig)
    train_a2l: AudioTrainConfig = field(
        default_factory=lambda: AudioTrainConfig(steps=800, batch_size=16, length=40, lr=2e-3, weight_decay=0.01,
                                                 val_every=200))
    train_sync: AudioTrainConfig = field(
        default_factory=lambda: AudioTrainConfig(steps=2500, batch_size=64, length=5, lr=1e-3))
    sync_weight: float = 0.05  # Wav2Lip-style expert loss on the audio-to-landmark model (0: off)
    velocity_weight: float = 0.5  # match frame-to-frame motion too: smooth, non-jittery output
    jaw_weight: float = 0.5  # jaw points follow head turns too, which audio cannot predict: trust them less
    min_shift: int = 5  # off-sync negatives of the expert are shifted by at least this many frames
    max_offset: int = 15
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is fastest on a busy shared machine


def audio_config(overrides: list[str] | None = None, base: dict | None = None) -> AudioConfig:
    """Defaults, then ``base`` (a dict, e.g. from a checkpoint), then dotted ``overrides`` (``train_a2l.steps=10``)."""
    cfg = OmegaConf.structured(AudioConfig)
    if base:
        cfg = OmegaConf.merge(cfg, base)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg  # type: ignore[return-value]


def build(kind: str, cfg: AudioConfig):
    """A fresh network of ``kind`` ("a2l" or "sync") for ``cfg``."""
    from puppeteer.audio.model import AudioToLandmarks

    if kind == "a2l":
        m = cfg.a2l
        return AudioToLandmarks(channels=m.channels, dim=m.dim, hidden=m.hidden, layers=m.layers, dropout=m.dropout,
                                temporal=m.temporal)
    if kind == "sync":
        return build_syncnet(cfg.sync)
    raise ValueError(f"unknown audio network kind {kind!r} (expected 'a2l' or 'sync')")


def save_audio_checkpoint(path: str | os.PathLike, kind: str, net, cfg: AudioConfig, meta: dict[str, Any],
                          half: bool = False) -> Path:
    """Write ``net`` in the project checkpoint format; ``half`` stores fp16 weights (shipped models)."""
    import copy

    from reenact.checkpoint import save_checkpoint

    if half:
        net = copy.deepcopy(net).half()
    meta = dict(meta, kind=kind, audio_config=OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    return save_checkpoint(path, {kind: net}, None, meta)


def load_audio_checkpoint(path: str | os.PathLike, kind: str):
    """(network in eval mode, AudioConfig, meta) from a checkpoint written by :func:`save_audio_checkpoint`."""
    ck = open_audio_checkpoint(path, kind)
    cfg = audio_config(base=ck.meta.get("audio_config"))
    net = build(kind, cfg)
    ck.load_into({kind: net})
    return net.float().eval(), cfg, ck.meta
