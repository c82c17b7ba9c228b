"""Warp-guided generator: start from the source warped to the target landmarks, synthesise only where it fails.

A classical landmark warp (thin-plate spline over the 68 points and the crop's border) already copies the
person's own pixels to the right place; it fails in the mouth interior, on eyes closing/opening, in regions a head
turn reveals and at the crop border. So the generator

1. warps each of the K source frames to the target landmarks (``reenact.warp.tps_map``, fp32);
2. predicts, per source, a residual flow on top of that warp and a confidence (a small U-Net at 1/4 resolution
   on the target landmark image and the warped source); the sources are re-sampled with the refined flow and
   fused with softmax weights of their confidences, so for each pixel the best-matching shot wins;
3. runs the paper's AdaIN generator (identity from ``psi = P e``) on the target landmark image, the fused warp
   and its confidence, and outputs an image and a blend mask: ``out = m * warp + (1 - m) * synth``.

Sharp source texture passes through where the warp is right (m -> 1); G synthesises where it is not. At
initialisation the residual flow is zero and the mask favours the warp, so training starts from the warp's
quality instead of from noise: important on a dataset as small as ours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reenact.models.generator import Generator, GeneratorOutput

MAX_FLOW = 0.125  # bound of the residual flow, as a fraction of the image side (tanh-scaled)
MASK_BIAS = 2.0  # initial blend-mask logit: sigmoid(2) = 0.88 towards the warped source


def sample(src: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear read of ``src`` (B, C, H, W) at pixel coordinates ``coords`` (B, H, W, 2) (x, y), border padding."""
    h, w = src.shape[-2:]
    scale = torch.tensor([2.0 / w, 2.0 / h], device=coords.device, dtype=torch.float32)
    grid = (coords.float() + 0.5) * scale - 1.0
    return F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class _Conv(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, inplace=True))


class FlowNet(nn.Module):
    """Small U-Net at ``1/scale`` resolution: (target landmarks, warped source) -> residual flow (2, pixels of the
    full image) and a confidence logit (1), both upsampled to full resolution."""

    def __init__(self, cin: int, width: int = 32, scale: int = 4):
        super().__init__()
        self.scale = scale
        w = width
        self.e1 = _Conv(cin, w)
        self.e2 = _Conv(w, 2 * w, 2)
        self.e3 = _Conv(2 * w, 4 * w, 2)
        self.m = _Conv(4 * w, 4 * w)
        self.d2 = _Conv(4 * w + 2 * w, 2 * w)
        self.d1 = _Conv(2 * w + w, w)
        self.out = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # zero residual flow and equal confidences at the start
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        x = F.interpolate(x, scale_factor=1 / self.scale, mode="bilinear", antialias=True, align_corners=False)
        h1 = self.e1(x)
        h2 = self.e2(h1)
        h = self.m(self.e3(h2))
        h = self.d2(torch.cat([F.interpolate(h, size=h2.shape[-2:], mode="bilinear", align_corners=False), h2], 1))
        h = self.d1(torch.cat([F.interpolate(h, size=h1.shape[-2:], mode="bilinear", align_corners=False), h1], 1))
        o = F.interpolate(self.out(h).float(), size=size, mode="bilinear", align_corners=False)
        flow = torch.tanh(o[:, :2]) * (MAX_FLOW * size[-1])
        return flow, o[:, 2:3]


class WarpGenerator(nn.Module):
    """``forward(lmk (B,3,H,W), e (B,D), *, src (B,K,3,H,W) in [-1,1], src_points (B,K,68,2),
    tgt_points (B,68,2)) -> GeneratorOutput`` (image (B,3,H,W) in [-1,1]); points are pixels of the H x W images.

    Same interface as :class:`Generator` (``adain_params``, ``forward_psi``, ``num_adain_params``, ``P``), so
    fine-tuning works the same way; the sources are the K shots (in stage 2, the user's photos), required here.
    The output's ``aux`` holds the fused warp and the blend mask (detached) for sample grids; its ``reg``, with
    gradients (the trainer weighs them: ``loss.flow_tv_weight``, ``loss.warp_trust_weight``): ``flow_tv``, the
    mean absolute difference of the residual flow between neighbour pixels (in pixels): a flow that varies from
    pixel to pixel resamples the texture unevenly and blurs it; ``synth_use``, the mean of ``1 - mask``: how much
    of the image the synthesis branch paints.
    """

    needs_sources = True  # reads the K shots: avatars carry their crops

    def __init__(self, cfg):
        super().__init__()
        self.flow = FlowNet(6, width=max(16, cfg.base_channels), scale=4)
        self.synth = Generator(cfg, in_channels=3 + 3 + 1, out_channels=4)
        self.embed_dim = cfg.embed_dim

    @property
    def P(self):
        return self.synth.P

    @property
    def num_adain_params(self) -> int:
        return self.synth.num_adain_params

    def adain_params(self, e: torch.Tensor) -> torch.Tensor:
        return self.synth.adain_params(e)

    def forward(self, lmk: torch.Tensor, e: torch.Tensor, *, src: torch.Tensor | None = None,
                src_points: torch.Tensor | None = None, tgt_points: torch.Tensor | None = None) -> GeneratorOutput:
        return self.forward_psi(lmk, self.adain_params(e), src=src, src_points=src_points, tgt_points=tgt_points)

    def warp_sources(self, lmk: torch.Tensor, src: torch.Tensor, src_points: torch.Tensor, tgt_points: torch.Tensor,
                     reg: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused warp of the K sources to the target: ``(warp (B,3,H,W), confidence (B,1,H,W) in [0,1])``;
        adds ``flow_tv`` to ``reg`` when given and gradients are enabled."""
        from reenact.warp import tps_map

        B, K, C, H, W = src.shape
        if src_points.shape[:2] != (B, K) or tgt_points.shape[0] != B:
            raise ValueError(f"sources {tuple(src.shape)}, src_points {tuple(src_points.shape)} and tgt_points "
                             f"{tuple(tgt_points.shape)} disagree")
        flat_src = src.reshape(B * K, C, H, W)
        tgt_rep = tgt_points.float().repeat_interleave(K, 0)
        with torch.autocast(device_type=src.device.type, enabled=False):
            coords = tps_map(src_points.reshape(B * K, -1, 2).float(), tgt_rep, H, W)  # (BK, H, W, 2)
            warped = sample(flat_src, coords)
        lmk_rep = lmk.repeat_interleave(K, 0)
        flow, logit = self.flow(torch.cat([lmk_rep.to(warped.dtype), warped], 1).to(lmk.dtype))
        if reg is not None and torch.is_grad_enabled():  # training only: rendering skips the extra passes
            f = flow.float()
            reg["flow_tv"] = ((f[..., 1:, :] - f[..., :-1, :]).abs().mean()
                                        + (f[..., :, 1:] - f[..., :, :-1]).abs().mean())
        with torch.autocast(device_type=src.device.type, enabled=False):
            refined = sample(flat_src, coords + flow.float().permute(0, 2, 3, 1))
            logit = logit.float().view(B, K, 1, H, W)
            weights = torch.softmax(logit, dim=1)
            fused = (weights * refined.view(B, K, C, H, W)).sum(1)
            conf = (weights * torch.sigmoid(logit)).sum(1)
        return fused, conf

    def forward_psi(self, lmk: torch.Tensor, psi: torch.Tensor, *, src: torch.Tensor | None = None,
                    src_points: torch.Tensor | None = None,
                    tgt_points: torch.Tensor | None = None) -> GeneratorOutput:
        if src is None or src_points is None or tgt_points is None:
            raise ValueError("the warp-guided generator needs src, src_points and tgt_points (the K shots)")
        if psi.shape[0] != lmk.shape[0]:
            psi = psi.expand(lmk.shape[0], -1)
        if src.shape[0] != lmk.shape[0]:  # one set of shots for a batch of targets (rendering an avatar)
            src = src.expand(lmk.shape[0], *src.shape[1:])
            src_points = src_points.expand(lmk.shape[0], *src_points.shape[1:])
        reg: dict[str, torch.Tensor] = {}
        fused, conf = self.warp_sources(lmk, src, src_points, tgt_points, reg)
        x = torch.cat([lmk, fused.to(lmk.dtype), (conf * 2 - 1).to(lmk.dtype)], 1)
        if lmk.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        raw = self.synth.decode(x, psi)
        synth = torch.tanh(raw[:, :3])
        mask = torch.sigmoid(raw[:, 3:4] + MASK_BIAS)
        out = mask * fused.float() + (1 - mask) * synth
        if torch.is_grad_enabled():
            reg["synth_use"] = (1 - mask).mean()
        return GeneratorOutput(out, {"warp": fused.detach(), "mask": mask.detach() * 2 - 1}, reg)
