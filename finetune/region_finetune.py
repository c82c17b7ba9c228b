"""Fine-tuning a region generator on one person's photos (stage 2 for the photo renderer).

With one photo the only target is the photo itself, and a warp of the photo to its own landmarks is the photo:
a generator trained on that pair learns to pass its input through. So each fine-tuning pair is a warp round
trip: the photo's mouth is first warped to another mouth shape (inner lips closed, or opened, by a random
amount), then warped back to the photo's own landmarks. The round trip destroys what a warp cannot keep
(teeth stretched into lips, a closed mouth squeezed), and G learns to restore this person's mouth from it,
exactly the job it does when driven. Pairs are made once (a small pool, mirrored at random during training);
the loss is the meta-learning reconstruction (pyramid L1 + (1 - SSIM) + inner-polygon L1 + the mask prior, and
the EfficientNet-Lite0 perceptual term when the model's ``loss.perceptual`` > 0) on the blend the renderer makes
(G's paint through ``mask x support x window``), updating G and the person's ``psi``.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from reenact.gan import update
from reenact.geometry import transform
from reenact.losses import pyramid_l1, ssim
from reenact.photowarp import PhotoWarp
from reenact.regions import crop_region, draw_region, region_matrix
from reenact.crop import border_mask
from reenact.renderer import WINDOW_FEATHER, support, to_net


def _alter_mouth(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The landmarks with the inner lips (and the lower lip and chin with them) moved: closed (t < 0) or
    opened (t > 0) by up to 0.15 inter-ocular distances."""
    p = np.asarray(points, np.float64).copy()
    iod = float(np.linalg.norm(p[45] - p[36])) or 1.0
    gap = np.linalg.norm(p[[61, 62, 63]] - p[[67, 66, 65]], axis=1).mean()
    t = rng.uniform(-1.0, 1.0)
    shift = t * gap / 2 if t < 0 else t * 0.15 * iod / 2  # < 0 closes (at most fully), > 0 opens
    down = [65, 66, 67, 55, 56, 57, 58, 59, 6, 7, 8, 9, 10]
    up = [61, 62, 63]
    p[down, 1] += shift
    p[up, 1] -= shift
    return p.astype(np.float32)


def make_pairs(photos: list[np.ndarray], points: list[np.ndarray], spec, size: int, n: int, seed: int):
    """``n`` round-trip pairs: (warped input, target crop, target drawing, inner mask, blend support), numpy."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        j = i % len(photos)
        photo, p = photos[j], np.asarray(points[j], np.float32)
        alt = _alter_mouth(p, rng)
        altered = PhotoWarp(p).warp(photo, alt)
        m = region_matrix(p, spec, size)
        warped = PhotoWarp(alt).warp_region(altered, p, m, size)
        tgt = crop_region(photo, m, size)
        draw = draw_region(transform(p, m), spec, size)
        inner = (draw[0] > 0.5).astype(np.float32)
        sup = support(transform(p, m), spec, size) * border_mask(size, WINDOW_FEATHER)
        out.append((warped, tgt, draw, inner, sup))
    return out


def finetune_region(base, photos: list[np.ndarray], points: list[np.ndarray], psi0: torch.Tensor, *,
                    steps: int = 100, seed: int = 0, progress: bool = True, lr: float = 5e-5, lr_psi: float = 1e-3,
                    batch_size: int = 4, pool: int = 32):
    """Returns ``(G, psi, history, seconds)``: a fine-tuned copy of ``base.G`` and ``psi`` ``(1, n)``."""
    from tqdm.auto import tqdm

    t0 = time.time()
    dev, spec, S = base.device, base.spec, base.size
    w = base.config.loss
    torch.manual_seed(seed)
    pairs = make_pairs(photos, points, spec, S, pool, seed)
    warped = to_net(np.stack([q[0] for q in pairs]), dev)
    tgt = to_net(np.stack([q[1] for q in pairs]), dev)
    draw = torch.from_numpy(np.stack([q[2] for q in pairs])).to(dev)
    inner = F.max_pool2d(torch.from_numpy(np.stack([q[3] for q in pairs]))[:, None].to(dev), 5, 1, 2)
    outer = F.max_pool2d(draw[:, 1:2], 9, 1, 4)
    sup = torch.from_numpy(np.stack([q[4] for q in pairs]))[:, None].to(dev)
    perceptual = None
    if w.perceptual > 0:
        from reenact.losses_offline import EfficientPerceptual

        perceptual = EfficientPerceptual().to(dev)
    G = copy.deepcopy(base.G).train().requires_grad_(True)
    psi = psi0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": G.parameters(), "lr": lr}, {"params": [psi], "lr": lr_psi}], betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for step in tqdm(range(steps), desc="fine-tune", disable=not progress):
        idx = torch.randint(len(pairs), (batch_size,), generator=gen)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        batch = [x[idx] for x in (warped, tgt, draw, inner, outer, sup)]
        batch = [torch.where(flip[:, None, None, None].to(dev), x.flip(-1), x) for x in batch]
        wi, ti, di, ii, oi, si = batch
        out = G(wi, di, psi)
        blend = wi + out.mask * si * (out.rgb - wi)
        terms = {"pyramid": pyramid_l1(blend, ti), "ssim": 1 - ssim(blend, ti),
                 "inner": ((blend - ti).abs() * ii).sum() / (3 * ii.sum()).clamp_min(1),
                 "mask_outside": (out.mask * (1 - oi)).mean()}
        weights = {"pyramid": w.pyramid, "ssim": w.ssim, "inner": w.inner, "mask_outside": w.mask_outside}
        if perceptual is not None:
            terms["perceptual"] = perceptual(blend, ti)
            weights["perceptual"] = w.perceptual
        logs = update(opt, terms, weights=weights,
                      where=f"fine-tuning step {step}", grad_clip=10.0)
        history.append(logs)
    G.eval().requires_grad_(False)
    return G, psi.detach(), history, time.time() - t0
