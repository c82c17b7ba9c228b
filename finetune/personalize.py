"""Stage 2 of Zakharov et al. 2019: few-shot personalisation of the meta-learned model.

1. The embedder E averages the embeddings of the K source crops: ``e = mean_k E(x_k, y_k)``.
2. Feed-forward (FF, ``steps=0``): the person-specific AdaIN parameters are ``psi' = P e`` and G is unchanged.
3. Fine-tuning (FT): ``psi'`` (initialised to ``P e``) and G's weights are optimised on the K images, against
   D with its personal vector initialised to ``w' = w0 + e`` (our D adds ``w0`` itself, so the free
   vector starts at ``e``). Losses (paper, stage 2): G: content + adversarial hinge + feature matching; D:
   hinge. No embedding-match term. The K images are augmented (mirror flips with landmark mirroring, small
   zoom and shifts; no colour jitter, which would teach G the wrong skin tones) so that one shot does not
   just get memorised pixel by pixel.

Randomness (which shots, which augmentation) comes from one CPU generator seeded with ``seed``, so a run is
repeatable on the same device.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from finetune.shots import Shot
from reenact.errors import NonFiniteLossError
from reenact.gan import update
from reenact.losses import ContentLoss, d_hinge, feature_matching, g_hinge
from reenact.models.base_model import BaseModel
from reenact.options import AT_LEAST_1, NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, UNIT, option

__all__ = ["FinetuneOptions", "Personalization", "personalize", "embed", "NonFiniteLossError"]


@dataclass
class FinetuneOptions:
    """Settings of stage 2. ``None`` learning rates take the base model's stage-1 values (paper: 5e-5 for G,
    2e-4 for D); betas likewise."""

    # None: the model's own default (``finetune_steps``: 100 for the crop model, 0 for the photo model, whose
    # fine-tuning on warp round trips of one photo pulls G back towards the warp: docs/results.md)
    steps: int | None = option(None, "fine-tuning steps, 0 for feed-forward (default: the model's: 0 for the photo "
                                     "model, 100 for the crop model)", type=NON_NEGATIVE)
    lr_g: float | None = option(None, "generator learning rate (default: the model's)", type=POSITIVE_FLOAT)
    lr_d: float | None = option(None, "discriminator learning rate (default: the model's)", type=POSITIVE_FLOAT)
    batch_size: int = option(4, "augmented shots per step, drawn from the K shots in turn", type=AT_LEAST_1)
    augment: bool = option(True, "no augmentation of the shots (mirror flips, zoom, shift)")
    flip: float = option(0.5, "probability of a mirror flip", type=UNIT)
    scale: float = option(0.05, "random zoom in [1 - scale, 1 + scale]", type=NON_NEGATIVE_FLOAT)
    shift: float = option(0.03, "random shift, fraction of the crop side", type=NON_NEGATIVE_FLOAT)
    seed: int = option(0, "augmentation / sampling seed")
    progress: bool = option(True, "no progress bar")
    # "all": G and psi' (the paper's stage 2). "psi": only psi' (the AdaIN parameters), G frozen: the avatar file
    # holds psi' alone; on held-out faces it reaches the figures of "all" (docs/results.md).
    train: str = option("all", "what fine-tuning trains: all (G and psi', the paper) or psi (psi' alone)",
                        choices=("all", "psi"))
    lr_psi: float | None = option(None, "psi's learning rate (default: lr_g); psi alone needs a larger one to move",
                                  type=POSITIVE_FLOAT)
    # warp-guided G: weight of the mean synthesis share (1 - blend mask) in G's loss, a prior towards passing the
    # sources' warped pixels through instead of painting over them (0: off, the paper's FT)
    warp_trust: float = option(0.0, "penalty on the warp-guided G's painted share (0: off)",
                               type=NON_NEGATIVE_FLOAT)
    # photo renderer (region generators): extra terms of fine-tuning (finetune.region_finetune; issue 21)
    identity: float = option(0.0, "photo renderer: weight of the SFace identity loss on the mouth pasted back into "
                                  "the photo's face (0: off)", type=NON_NEGATIVE_FLOAT)
    perceptual: float | None = option(None, "photo renderer: weight of the EfficientNet-Lite0 perceptual loss on "
                                            "the mouth crops (default: the model's loss.perceptual)",
                                      type=NON_NEGATIVE_FLOAT)

    def for_model(self, base) -> "FinetuneOptions":
        """These options with ``steps`` filled in from ``base.finetune_steps`` when not given."""
        return self if self.steps is not None else dataclasses.replace(self, steps=int(base.finetune_steps))

    def __post_init__(self):
        if self.train not in ("all", "psi"):
            raise ValueError(f"train must be 'all' or 'psi', got {self.train!r}")
        if self.steps is not None and int(self.steps) < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if float(self.identity) < 0 or (self.perceptual is not None and float(self.perceptual) < 0):
            raise ValueError(f"identity and perceptual weights must be >= 0, got {self.identity}, {self.perceptual}")


@dataclass
class Personalization:
    """What stage 2 produces. ``e``: (1, D) mean embedding; ``psi``: (1, n) AdaIN parameters; ``generator``:
    the fine-tuned G's state dict (None for feed-forward); ``history``: per-step losses."""

    e: torch.Tensor
    psi: torch.Tensor
    generator: dict[str, torch.Tensor] | None
    options: FinetuneOptions
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def shots_to_tensors(shots: list[Shot], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops ``(K, 3, R, R)`` uint8 and crop landmarks ``(K, 68, 2)`` float32 on ``device``."""
    crops = torch.from_numpy(np.stack([s.crop for s in shots])).permute(0, 3, 1, 2).contiguous()
    pts = torch.from_numpy(np.stack([s.crop_points for s in shots]).astype(np.float32))
    return crops.to(device), pts.to(device)


def mirror_points(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """Landmarks ``(..., 68, 2)`` of the horizontally flipped ``resolution``-pixel crop, re-indexed so each point
    stays on its semantic part (as ``EpisodeAugment``'s flip)."""
    from reenact.landmarks.parts import MIRROR_PERMUTATION

    out = points.clone()
    out[..., 0] = (resolution - 1) - out[..., 0]
    return out[..., torch.as_tensor(MIRROR_PERMUTATION, device=points.device), :]


def landmark_images(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """``(B, 68, 2)`` crop pixels -> ``(B, 3, R, R)`` landmark images in [-1, 1] (the networks' input)."""
    from reenact.draw import rasterize

    return rasterize(points, resolution) * 2 - 1


@torch.no_grad()
def embed(base: BaseModel, shots: list[Shot]) -> torch.Tensor:
    """Mean embedding ``(1, D)`` of the K shots (no augmentation)."""
    crops, pts = shots_to_tensors(shots, base.device)
    frames = crops.float() / 127.5 - 1
    lmk = landmark_images(pts, base.resolution)
    e, _ = base.E(frames[None], lmk[None])
    return e.float()


def personalize(base: BaseModel, shots: list[Shot], options: FinetuneOptions | None = None) -> Personalization:
    """Embed the shots and (``options.steps > 0``) fine-tune G, psi' and D on them."""
    opt = (options or FinetuneOptions()).for_model(base)
    t0 = time.perf_counter()
    e = embed(base, shots)
    psi0 = base.G.adain_params(e).detach()
    if int(opt.steps) == 0:
        return Personalization(e=e, psi=psi0, generator=None, options=opt, seconds=time.perf_counter() - t0)
    G, psi, history = _finetune(base, shots, e, psi0, opt)
    if opt.train == "psi":
        G = None  # G is the base generator: the avatar stores psi' alone
    return Personalization(e=e, psi=psi, generator=G, options=opt, history=history,
                           seconds=time.perf_counter() - t0)


def _finetune(base: BaseModel, shots: list[Shot], e: torch.Tensor, psi0: torch.Tensor,
              opt: FinetuneOptions) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[dict[str, float]]]:
    from reenact.config import AugmentConfig
    from reenact.data.augment import EpisodeAugment

    cfg, dev, R = base.config, base.device, base.resolution
    tc, lc = cfg.train, cfg.loss
    lr_g = float(tc.lr_g if opt.lr_g is None else opt.lr_g)
    lr_d = float(tc.lr_d if opt.lr_d is None else opt.lr_d)
    betas = tuple(float(b) for b in tc.betas)
    amp = dev.type == "cuda"  # bf16 autocast on GPU, as in stage 1; CPU stays fp32
    content = ContentLoss(lc).to(dev)  # the stage-1 content terms (incl. VGG when the base model used it)
    G = base.generator_copy().train()
    D = base.build_discriminator().train()
    psi = nn.Parameter(psi0.clone())
    w = nn.Parameter(e.detach().clone())  # D scores with (w + w0): this is the paper's w' = w0 + e
    d_params = [p for n, p in D.named_parameters() if not n.startswith("W.")]  # the per-video table is unused
    lr_psi = lr_g if opt.lr_psi is None else float(opt.lr_psi)
    if opt.train == "psi":
        G.requires_grad_(False)
    g_groups = [{"params": [psi], "lr": lr_psi}] + ([{"params": list(G.parameters())}] if opt.train == "all" else [])
    opt_g = torch.optim.Adam(g_groups, lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam([*d_params, w], lr=lr_d, betas=betas)
    # Mirror flips are drawn here, not by EpisodeAugment: a flipped target goes with flipped sources. The
    # warp-guided G warps the shots onto the target; a mirrored target from unmirrored shots is a picture no
    # warp can make (hair parting, lighting), so G learned to paint over the warp and fine-tuning blurred.
    augment = EpisodeAugment(AugmentConfig(flip=0.0, scale=opt.scale, shift=opt.shift, brightness=0.0,
                                           contrast=0.0, saturation=0.0, hue=0.0)).to(dev)
    augment.train(bool(opt.augment))
    crops, pts = shots_to_tensors(shots, dev)
    K, B = len(shots), int(opt.batch_size)
    flip_p = float(opt.flip) if opt.augment else 0.0
    mirrored_crops, mirrored_pts = crops.flip(-1), mirror_points(pts, R)
    shot_frames = crops.float() / 127.5 - 1
    mirrored_frames = mirrored_crops.float() / 127.5 - 1

    def sources(tgt_points, flip):  # all K shots, mirrored with their target (the base G ignores them)
        f = flip[:, None, None, None, None]
        src = torch.where(f, mirrored_frames[None], shot_frames[None])
        src_points = torch.where(f[..., 0], mirrored_pts[None], pts[None])
        return {"src": src, "src_points": src_points, "tgt_points": tgt_points}

    gen = torch.Generator().manual_seed(int(opt.seed))
    order: list[int] = []
    weights = {"adv": float(lc.adv_weight), "fm": float(lc.fm_weight)}
    advice = "try fewer steps or a lower learning rate (lr_g, lr_d)"
    history: list[dict[str, float]] = []

    from tqdm.auto import tqdm

    bar = tqdm(total=int(opt.steps), desc="fine-tuning", unit="step", disable=not opt.progress, dynamic_ncols=True)
    try:
        for step in range(int(opt.steps)):
            while len(order) < B:  # the shots in turn, each pass in a fresh random order
                order += torch.randperm(K, generator=gen).tolist()
            idx, order = order[:B], order[B:]
            flip = (torch.rand(B, generator=gen) < flip_p).to(dev)
            shot = torch.where(flip[:, None, None, None], mirrored_crops[idx], crops[idx])
            shot_pts = torch.where(flip[:, None, None], mirrored_pts[idx], pts[idx])
            real, p = augment(shot[:, None], shot_pts[:, None], generator=gen)
            real, lmk = real[:, 0], landmark_images(p[:, 0], R)

            # G and psi' (D frozen)
            D.requires_grad_(False)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = G.forward_psi(lmk, psi, **sources(p[:, 0], flip))
                fake = out.image
                wd = w.detach().expand(B, -1)
                scores, feats = D(torch.cat([real, fake]), torch.cat([lmk, lmk]), w=torch.cat([wd, wd]))
            terms = {k: content.weights[k] * v for k, v in content(fake, real).items()}
            terms["adv"] = weights["adv"] * g_hinge(scores[B:])["adv"]
            terms["fm"] = weights["fm"] * feature_matching([f[:B] for f in feats], [f[B:] for f in feats])["fm"]
            if opt.warp_trust and "synth_use" in out.reg:
                terms["synth_use"] = float(opt.warp_trust) * out.reg["synth_use"]
            where = f"fine-tuning step {step + 1}"
            logs = update(opt_g, terms, total_name="g_total", where=f"{where} (generator update)", hint=advice)

            # D and w'
            D.requires_grad_(True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                scores, _ = D(torch.cat([real, fake.detach()]), torch.cat([lmk, lmk]), w=w.expand(2 * B, -1))
            dlogs = update(opt_d, d_hinge(scores[:B], scores[B:]), total_name="d_total",
                           where=f"{where} (discriminator update)", hint=advice)
            logs["d_total"] = dlogs["d_total"]
            history.append(logs)
            bar.update(1)
            if step % 10 == 0 or step + 1 == opt.steps:
                bar.set_postfix(g=f"{logs['g_total']:.3f}", d=f"{logs['d_total']:.3f}", refresh=False)
    finally:
        bar.close()
    G.eval().requires_grad_(False)
    return {k: v.detach() for k, v in G.state_dict().items()}, psi.detach().clone(), history
