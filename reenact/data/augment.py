"""Episode augmentation on the training device (batched, kornia), the same draw for all K+1 frames of an
episode so the identity the embedder sees matches the target.

Geometry (flip, zoom, shift) moves the landmarks with the pixels; a flip also permutes the landmark indices
(``MIRROR_PERMUTATION``) so each point stays on its semantic part (the right eye stays index 36-41).
"""
from __future__ import annotations

import torch
from torch import nn

from reenact.config import AugmentConfig
from reenact.landmarks.parts import MIRROR_PERMUTATION


class EpisodeAugment(nn.Module):
    """``forward(frames uint8 (B,N,3,H,W), points (B,N,68,2), generator=None)`` ->
    ``(frames float (B,N,3,H,W) in [-1,1], points float (B,N,68,2))``. Identity in eval mode."""

    def __init__(self, cfg: AugmentConfig | None = None):
        super().__init__()
        self.cfg = cfg or AugmentConfig()
        self.register_buffer("perm", torch.as_tensor(MIRROR_PERMUTATION), persistent=False)

    def forward(self, frames: torch.Tensor, points: torch.Tensor, generator: torch.Generator | None = None):
        import kornia

        b, n, c, h, w = frames.shape
        x = frames.float().div(255.0)
        pts = points.float()
        if not self.training:
            return x * 2 - 1, pts
        cfg = self.cfg
        dev = x.device

        def rand(*shape):  # uniform [0, 1) drawn on the CPU generator for exact reproducibility
            return torch.rand(*shape, generator=generator).to(dev)

        flip = rand(b) < cfg.flip
        zoom = 1 + (rand(b) * 2 - 1) * cfg.scale
        shift = (rand(b, 2) * 2 - 1) * cfg.shift * torch.tensor([w, h], device=dev)
        # Affine map (pixels): flip about the centre, zoom about the centre, then shift.
        cx, cy = (w - 1) / 2, (h - 1) / 2
        sx = torch.where(flip, -zoom, zoom)
        mat = torch.zeros(b, 2, 3, device=dev)
        mat[:, 0, 0] = sx
        mat[:, 1, 1] = zoom
        mat[:, 0, 2] = cx - sx * cx + shift[:, 0]
        mat[:, 1, 2] = cy - zoom * cy + shift[:, 1]
        x = kornia.geometry.transform.warp_affine(
            x.reshape(b * n, c, h, w), mat.repeat_interleave(n, 0), (h, w), mode="bilinear",
            padding_mode="reflection", align_corners=True).reshape(b, n, c, h, w)
        pts = pts @ mat[:, None, :, :2].transpose(-1, -2) + mat[:, None, None, :, 2]
        pts = torch.where(flip[:, None, None, None], pts[:, :, self.perm], pts)
        # Colour: one jitter per episode.
        def per_frame(v):
            return v.repeat_interleave(n, 0)

        flat = x.reshape(b * n, c, h, w)
        if cfg.brightness > 0:
            flat = kornia.enhance.adjust_brightness(flat, per_frame((rand(b) * 2 - 1) * cfg.brightness))
        if cfg.contrast > 0:
            flat = kornia.enhance.adjust_contrast(flat, per_frame(1 + (rand(b) * 2 - 1) * cfg.contrast))
        if cfg.saturation > 0:
            flat = kornia.enhance.adjust_saturation(flat, per_frame(1 + (rand(b) * 2 - 1) * cfg.saturation))
        if cfg.hue > 0:
            flat = kornia.enhance.adjust_hue(flat, per_frame((rand(b) * 2 - 1) * cfg.hue * 2 * torch.pi))
        x = flat.clamp(0, 1).reshape(b, n, c, h, w)
        return x * 2 - 1, pts
