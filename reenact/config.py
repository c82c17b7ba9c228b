"""Typed configuration: omegaconf structured configs + YAML presets (``reenact/configs/*.yaml``).

``load_config("small", ["train.batch_size=16"])`` merges, in order: the dataclass defaults, the preset,
then dotted command-line overrides. The resolved config is saved beside every checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PRESET_DIR = Path(__file__).with_name("configs")


@dataclass
class AugmentConfig:
    """Episode augmentation, applied on the training device (kornia), identically to all K+1 frames."""

    flip: float = 0.5  # probability of a horizontal flip (landmarks mirrored with their part indices)
    scale: float = 0.1  # random zoom in [1 - scale, 1 + scale]
    shift: float = 0.05  # random translation, fraction of the image size
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02


@dataclass
class DataConfig:
    """Where episodes come from (a folder written by ``reenact prepare``)."""

    root: str = ""  # prepared dataset folder
    k_shots: int = 8  # K frames for the embedder; the episode has K + 1 frames
    val_identities: list[str] = field(default_factory=list)  # held out of training (identity names)
    val_fraction: float = 0.1  # if val_identities is empty: this fraction of identities, chosen by a hash
    num_workers: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """Network sizes (filled in by reenact.models)."""

    resolution: int = 256


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(preset: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Structured config from defaults, a preset name (or YAML path) and dotted overrides."""
    cfg = OmegaConf.structured(Config)
    if preset:
        path = Path(preset)
        if not path.suffix:
            path = PRESET_DIR / f"{preset}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such preset (known: {', '.join(presets())})")
        cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> Config:
    return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))  # type: ignore[return-value]
