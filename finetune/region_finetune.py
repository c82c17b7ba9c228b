"""Fine-tuning a region generator on one person's photos (stage 2 for the photo renderer).

With one photo the only target is the photo itself, and a warp of the photo to its own landmarks is the photo:
a generator trained on that pair learns to pass its input through. So each fine-tuning pair is a warp round
trip: the photo's mouth is first warped to another mouth shape (inner lips closed, or opened, by a random
amount), then warped back to the photo's own landmarks. The round trip destroys what a warp cannot keep
(teeth stretched into lips, a closed mouth squeezed), and G learns to restore this person's mouth from it,
exactly the job it does when driven. Pairs are made once (a small pool, mirrored at random during training);
the loss is the meta-learning reconstruction (pyramid L1 + (1 - SSIM) + inner-polygon L1 + the mask prior, and
the EfficientNet-Lite0 perceptual term when its weight, by default the model's ``loss.perceptual``, is > 0) on the
blend the renderer makes (G's paint through ``mask x support x window``), updating G and the person's ``psi``.

An optional identity term (``identity`` > 0) judges the mouth in its face: the mouth crop alone is not a face, so
the blend is pasted back into the photo's SFace-aligned 112 px face (:class:`ComposedIdentity`: one
``grid_sample`` through the aligned face -> photo -> mouth crop matrices, weighted by ``support x window``, where
the renderer lets G paint) and scored with ``1 - cos`` of its SFace embedding and the photo's. Every pair's target
is the photo itself, so the photo's embedding is computed once.
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
    """``n`` round-trip pairs: (warped input, target crop, target drawing, inner mask, blend support, photo ->
    crop matrix), numpy; pair ``i`` is made from photo ``i % len(photos)``."""
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
        out.append((warped, tgt, draw, inner, sup, m))
    return out


class ComposedIdentity(torch.nn.Module):
    """SFace identity of mouth-crop blends pasted back into their photos' aligned faces.

    ``photos``: the K photos (RGB uint8), ``points`` their landmarks, ``matrices`` ``(N, 2, 3)`` photo -> mouth
    crop of each of N pairs, ``supports`` ``(N, 1, S, S)`` the pairs' paste weights (``support x window``),
    ``owner[i]``: the photo of pair i. ``compose(blend, idx)`` -> ``(B, 3, 112, 112)`` faces in [-1, 1]:
    the photo's aligned face with the blends of pairs ``idx`` pasted in; ``forward(blend, idx)`` -> ``1 - mean
    cos`` of their SFace embeddings and their photos'. ``net``: a loaded SFace (default: ``load_sface``)."""

    def __init__(self, photos, points, matrices, supports, owner, device, net=None):
        super().__init__()
        from reenact.losses_offline import SFACE_SIZE, align_faces, face_matrix, sampling_grid, to_sface_input

        if net is None:
            from reenact.pretrained import load_sface

            net = load_sface(device)
        self.net, self._to_input = net, to_sface_input
        n = SFACE_SIZE
        pts = torch.from_numpy(np.stack(points).astype(np.float32)).to(device)
        images = [to_net(p, device)[None] for p in photos]
        faces = torch.cat([align_faces(x, q[None]) for x, q in zip(images, pts)])  # (K, 3, 112, 112)
        self.register_buffer("faces", faces)
        with torch.no_grad():
            self.register_buffer("real", self.embed(faces))  # (K, 128): the target of every pair
        owner = torch.as_tensor(owner, dtype=torch.long, device=device)
        self.register_buffer("owner", owner)
        S = supports.shape[-1]
        # aligned face -> photo (A), photo -> crop (M): face -> crop = M [A; 0 0 1]
        a = face_matrix(pts, n)[owner]  # (N, 2, 3) float64
        m = torch.as_tensor(np.asarray(matrices), dtype=torch.float64, device=device)
        fc = m[..., :2] @ a
        fc[..., 2] += m[..., 2]
        self.register_buffer("grid", sampling_grid(fc, n, S, S).float())
        self.register_buffer("alpha", F.grid_sample(supports.float(), self.grid, mode="bilinear",
                                                    padding_mode="zeros", align_corners=False))
        # crop pixels per face pixel: the blend is shrunk to about the face's scale first (antialiased), so the
        # bilinear read does not alias the crop's detail
        scale = float(torch.linalg.det(fc[..., :2]).abs().sqrt().mean())
        self.side = S if scale < 1.25 else max(8, int(round(S / scale)))

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(self._to_input(faces)), dim=1)

    def compose(self, blend: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        src = blend if self.side == blend.shape[-1] else \
            F.interpolate(blend, size=(self.side, self.side), mode="bilinear", antialias=True, align_corners=False)
        pasted = F.grid_sample(src, self.grid[idx], mode="bilinear", padding_mode="border", align_corners=False)
        face = self.faces[self.owner[idx]]
        return face + self.alpha[idx] * (pasted - face)

    def forward(self, blend: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        with torch.autocast(blend.device.type, enabled=False):
            fake = self.embed(self.compose(blend.float(), idx))
            return 1 - (fake * self.real[self.owner[idx]]).sum(1).mean()


def finetune_region(base, photos: list[np.ndarray], points: list[np.ndarray], psi0: torch.Tensor, *,
                    steps: int = 100, seed: int = 0, progress: bool = True, lr: float = 5e-5, lr_psi: float = 1e-3,
                    batch_size: int = 4, pool: int = 32, identity: float = 0.0, perceptual: float | None = None):
    """Returns ``(G, psi, history, seconds)``: a fine-tuned copy of ``base.G`` and ``psi`` ``(1, n)``.

    identity: weight of the composed-face SFace term (0: off). perceptual: weight of the EfficientNet-Lite0 term on
    the mouth crops (None: the model's ``loss.perceptual``; 0: off)."""
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
    w_perceptual = float(w.perceptual if perceptual is None else perceptual)
    w_identity = float(identity)
    if w_perceptual < 0 or w_identity < 0:
        raise ValueError(f"loss weights must be >= 0, got identity={identity}, perceptual={perceptual}")
    perceptual = None
    if w_perceptual > 0:
        from reenact.losses_offline import EfficientPerceptual

        perceptual = EfficientPerceptual().to(dev)
    composed = None
    if w_identity > 0:
        composed = ComposedIdentity(photos, points, [q[5] for q in pairs], sup,
                                    [i % len(photos) for i in range(len(pairs))], dev)
    G = copy.deepcopy(base.G).train().requires_grad_(True)
    psi = psi0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": G.parameters(), "lr": lr}, {"params": [psi], "lr": lr_psi}], betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for step in tqdm(range(steps), desc="fine-tune", disable=not progress):
        idx = torch.randint(len(pairs), (batch_size,), generator=gen)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        batch = [x[idx] for x in (warped, tgt, draw, inner, outer, sup)]
        fl = flip[:, None, None, None].to(dev)
        batch = [torch.where(fl, x.flip(-1), x) for x in batch]
        wi, ti, di, ii, oi, si = batch
        out = G(wi, di, psi)
        blend = wi + out.mask * si * (out.rgb - wi)
        terms = {"pyramid": pyramid_l1(blend, ti), "ssim": 1 - ssim(blend, ti),
                 "inner": ((blend - ti).abs() * ii).sum() / (3 * ii.sum()).clamp_min(1),
                 "mask_outside": (out.mask * (1 - oi)).mean()}
        weights = {"pyramid": w.pyramid, "ssim": w.ssim, "inner": w.inner, "mask_outside": w.mask_outside}
        if perceptual is not None:
            terms["perceptual"] = perceptual(blend, ti)
            weights["perceptual"] = w_perceptual
        if composed is not None:  # pasted back unmirrored: the photo's face is not mirrored
            terms["identity"] = composed(torch.where(fl, blend.flip(-1), blend), idx.to(dev))
            weights["identity"] = w_identity
        logs = update(opt, terms, weights=weights,
                      where=f"fine-tuning step {step}", grad_clip=10.0)
        history.append(logs)
    G.eval().requires_grad_(False)
    return G, psi.detach(), history, time.time() - t0
