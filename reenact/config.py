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
    """Network sizes of the embedder E, generator G and discriminator D (``reenact.models``)."""

    resolution: int = 256  # square image side in pixels, a power of two >= 16 (frames are resized to it)
    base_channels: int = 64  # channels of the first (full-resolution) block; doubled at each downsampling
    max_channels: int = 512  # cap on the channel width of any block
    embed_dim: int = 512  # size N of the identity embedding e (and of D's per-video rows W[i])
    num_down: int = 4  # G's downsampling blocks (256 px -> 16 px bottleneck); E and D always go down to 4 px
    num_res: int = 4  # G's middle residual blocks with AdaIN, at the bottleneck resolution
    attention_res: int = 32  # self-attention in the downsampling paths (E, D, G encoder) at this side (0: none)
    attention_res_up: int = 64  # self-attention in G's upsampling path at this side (0: none)
    spectral_norm: bool = True  # spectral normalisation of every conv / linear layer (paper: all networks)
    unet_skips: bool = False  # G: add encoder features to the upsampling path at each resolution (U-Net)
    generator: str = "base"  # ``build_generator``: "base" (paper) or "warp" (warp-guided: source warped + AdaIN synthesis)


@dataclass
class LossConfig:
    """Loss weights (Zakharov et al. 2019 values where the paper gives them) and the content-loss backbones."""

    adv_weight: float = 1.0  # hinge adversarial term of G
    fm_weight: float = 10.0  # feature matching on D's residual-block activations (paper: 10)
    mch_weight: float = 80.0  # embedding match |W[i] - e_i|_1 (paper: 80)
    # any of "pyramid", "vgg19", "vggface", "identity", "efficientnet" (the last two: extra `losses`, no download)
    content: list[str] = field(default_factory=lambda: ["pyramid"])
    pyramid_weight: float = 10.0  # multi-scale L1 (offline default, needs no weights)
    pyramid_levels: int = 4  # scales of the Gaussian pyramid
    ssim_weight: float = 1.0  # (1 - SSIM) term of the offline default
    vgg19_weight: float = 0.15  # paper: 1.5e-1
    vgg19_path: str = ""  # local VGG19 ImageNet weights (.safetensors / .pth, torchvision key layout)
    vggface_weight: float = 0.025  # paper: 2.5e-2
    vggface_path: str = ""  # local VGGFace (VGG16 layout) weights, Caffe-style BGR 0-255 input
    identity_weight: float = 1.0  # "identity": 1 - cosine of SFace embeddings of output and target (not tuned yet)
    efficientnet_weight: float = 1.0  # "efficientnet": EfficientNet-Lite0 normalised-feature L1 (not tuned yet)
    # warp-guided G only (the ``reg`` of its output): smoothness of the residual flow (a flow that varies from
    # pixel to pixel blurs the warped texture: measured, its sharpness fell from 0.80 to 0.63 of the real frame's)
    # and a prior towards passing the warp through (the synthesis branch painted over warped pixels that were
    # better: held-out SSIM 0.770 of the model's own warp vs 0.751 of its output). 0: off.
    flow_tv_weight: float = 0.0
    warp_trust_weight: float = 0.0


@dataclass
class TrainConfig:
    """Meta-learning (stage 1) trainer settings; only ``meta_learning.trainer`` reads these."""

    out_dir: str = "runs/default"  # checkpoints/, samples/, metrics.jsonl go here
    seed: int = 0  # every step's randomness derives from (seed, step, rank): exact resume
    steps: int = 100_000  # total optimisation steps (G/E updates)
    batch_size: int = 8  # episodes per process per step (global batch = batch_size * world size)
    lr_g: float = 5e-5  # Adam lr of E and G (paper: 5e-5)
    lr_d: float = 2e-4  # Adam lr of D (paper: 2e-4, two-time-scale)
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])  # Adam betas (SAGAN / TTUR convention)
    d_steps: int = 1  # D updates per G/E update on the same batch (paper: 2)
    grad_clip: float = 0.0  # max global grad norm per network (0: no clipping)
    amp: str = "auto"  # "auto" (bf16 autocast on CUDA, off on CPU), "bf16" or "off"
    channels_last: bool = True  # NHWC memory format on CUDA (faster convs with bf16)
    compile: bool = False  # torch.compile E, G and D
    deterministic: bool = False  # cudnn deterministic kernels (exact GPU resume, slower)
    ema: float = 0.0  # EMA decay of E and G weights for samples / validation / export (0: no EMA)
    augment: bool = True  # apply data.augment on the device
    checkpoint_every: int = 1000  # steps between checkpoints (also written at the last step)
    keep_checkpoints: int = 3  # newest checkpoints kept (0: keep all)
    state_dtype: str = "float32"  # "float32" (exact resume) or "bfloat16" (compact, approximate resume)
    shard_mb: float = 0  # > 0: checkpoint weight files above this many MiB are written as shards; 0: one file each
    shots_min: int = 0  # > 0: each step uses k ~ U[shots_min, K] shots (train for 1-shot use too); 0: always K
    init_weights: str = ""  # checkpoint whose E/G/D weights start a new run (ignored when resuming)
    resume: str = "auto"  # "auto": out_dir's latest checkpoint if any; "none"; or a checkpoint path
    log_every: int = 50  # steps between metrics.jsonl lines / progress-bar updates of averaged losses
    sample_every: int = 1000  # steps between sample grids (PNG under out_dir/samples)
    val_every: int = 1000  # steps between validation passes on held-out identities (0: never)
    val_episodes: int = 16  # validation episodes (fixed seeds, so values are comparable over time)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    progress: bool = True  # tqdm progress bar on rank 0
    wandb: bool = False  # log to Weights & Biases if the package is installed
    wandb_mode: str = "offline"  # wandb.init mode: "offline" (default), "online" or "disabled"
    wandb_project: str = "reenact"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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


# --- region generators (the photo renderer's learned part; see reenact.models.region) ----------------------

@dataclass
class RegionModelConfig:
    region: str = "mouth"  # a name of reenact.regions.REGIONS
    size: int = 128  # crop side in pixels
    embed_dim: int = 256
    g_width: int = 48  # G's widths: w, 2w, 4w at 64, 32, 16 px
    g_head: str = "resize"  # G's output: "resize" (bilinear x2 + conv) or "shuffle" (sub-pixel conv: checkerboards)
    e_base: int = 32
    d_base: int = 32


@dataclass
class RegionLossConfig:
    pyramid: float = 10.0  # Gaussian-pyramid L1 of the blend vs the real crop
    ssim: float = 5.0  # 1 - SSIM
    inner: float = 20.0  # extra L1 inside the target's inner polygon (teeth, cavity)
    adv: float = 0.1  # hinge (at 1.0 with these weights D won within 1000 steps and G collapsed to painting all)
    adv_start: int = 3000  # adv and fm are off before this step (G first learns to reconstruct) ...
    adv_warmup: int = 2000  # ... then ramp up linearly over these steps
    fm: float = 10.0  # feature matching
    mch: float = 1.0  # |W_i - e| (Zakharov et al.'s embedding match); at 10 the embeddings shrank to ~0 together
    mask_outside: float = 5.0  # mean mask outside the dilated outer polygon: pass the warp there
    local_d: bool = True  # D sees a fake's support (where the renderer lets G paint) over the real crop
    # EfficientNet-Lite0 normalised-feature L1 of the blend vs the real crop (extra `losses`; 0: off). Mouth crops
    # hold no whole face, so SFace's identity loss has no place here.
    perceptual: float = 0.0


@dataclass
class RegionDataConfig:
    root: str = ""  # prepared folder with regions/<region>/ (reenact prepare)
    val_fraction: float = 0.1
    max_shots: int = 8
    hard: float = 0.5
    augment: bool = True
    num_workers: int = 8


@dataclass
class RegionTrainConfig:
    out_dir: str = "runs/region"
    steps: int = 20000
    batch_size: int = 32
    lr_g: float = 1.0e-4
    lr_e: float = 5.0e-5
    lr_d: float = 2.0e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    grad_clip: float = 10.0
    ema: float = 0.999
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # "auto": bf16 autocast on CUDA
    val_every: int = 500
    val_episodes: int = 256
    log_every: int = 50
    init_weights: str = ""  # a region checkpoint to start from (fresh optimisers)
    best_by: str = "interior"  # "interior": val interior PSNR; "score": interior gain / 2 dB + mouth SSIM gain / 0.03
    shard_mb: float = 0.0  # > 0: weight files of at most this many MiB (15 to bring them back from a GPU machine)


@dataclass
class RegionConfig:
    kind: str = "region"
    data: RegionDataConfig = field(default_factory=RegionDataConfig)
    model: RegionModelConfig = field(default_factory=RegionModelConfig)
    loss: RegionLossConfig = field(default_factory=RegionLossConfig)
    train: RegionTrainConfig = field(default_factory=RegionTrainConfig)


def load_region_config(overrides: list[str] | None = None, base: Any = None) -> RegionConfig:
    """Region config from defaults (or ``base``, e.g. a saved config's YAML text) and dotted overrides."""
    cfg = OmegaConf.structured(RegionConfig)
    if base is not None:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(base) if isinstance(base, str) else base)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    if cfg.train.best_by not in ("interior", "score"):
        raise ValueError(f"train.best_by must be 'interior' or 'score', got {cfg.train.best_by!r}")
    return cfg  # type: ignore[return-value]
