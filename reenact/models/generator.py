"""Generator G: target landmark image + identity embedding -> RGB frame (Zakharov et al. 2019).

Encoder of the landmark image (residual downsampling blocks with instance norm), residual middle blocks and
upsampling blocks whose instance-norm affine parameters are person-specific: ``psi = P e`` (AdaIN).
Fine-tuning (stage 2) can optimise ``psi`` directly through :meth:`Generator.forward_psi`.

Every generator of the project has the call signature of :class:`Generator` (``forward(lmk, e, *, src,
src_points, tgt_points)``, ``forward_psi(lmk, psi, ...)``) and returns a :class:`GeneratorOutput`: what it
computed, never kept on the module, so one call cannot leak into the next and callers need not know the
variant. Generators that do not read the K source shots accept them and ignore them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reenact.models.blocks import (AdaIN, ResBlockAdaIN, ResBlockDown, ResBlockUp, SelfAttention, channels,
                                   conv, linear, log2_int)


class GeneratorOutput(NamedTuple):
    """What one generator call computed.

    ``image``: ``(B, 3, H, W)`` float32 in [-1, 1]. ``aux``: detached maps for sample grids, each
    ``(B, C, H, W)`` in [-1, 1] (warp-guided G: ``warp``, the fused warped sources, and ``mask``, the blend
    mask); empty for the base G. ``reg``: scalar regularisers with gradients, only when gradients are enabled
    (warp-guided G: ``flow_tv``, ``synth_use``; a trainer weighs the ones it wants); empty otherwise.
    """

    image: torch.Tensor
    aux: dict[str, torch.Tensor]
    reg: dict[str, torch.Tensor]


class Generator(nn.Module):
    """``forward(lmk (B, 3, H, W) in [-1, 1], e (B, D)) -> GeneratorOutput`` (image in [-1, 1], tanh).

    ``in_channels``/``out_channels`` let the warp-guided variant feed extra inputs (the warped source) and read
    extra outputs (a blend mask) through :meth:`decode`, which returns the raw tensor (before the tanh when
    ``out_channels != 3``).
    """

    needs_sources = False  # sees only the target landmarks and the embedding: avatars need not carry the shots

    def __init__(self, cfg, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.raw_output = out_channels != 3
        s = cfg.spectral_norm
        n = cfg.num_down
        if n < 1 or log2_int(cfg.resolution, "model.resolution") - n < 2:
            raise ValueError(f"model.num_down={n} does not fit resolution {cfg.resolution}")
        widths = channels(cfg.base_channels, cfg.max_channels, n)
        self.down = nn.ModuleList()
        self.attn_down_after = -1
        cin, res = in_channels, cfg.resolution
        for i, cout in enumerate(widths):
            self.down.append(ResBlockDown(cin, cout, s, norm=True, first=(i == 0)))
            cin, res = cout, res // 2
            if res == cfg.attention_res:
                self.attn_down_after = i
        self.attn_down = SelfAttention(widths[self.attn_down_after], s) if self.attn_down_after >= 0 else None
        self.middle = nn.ModuleList(ResBlockAdaIN(cin, s) for _ in range(cfg.num_res))
        self.up = nn.ModuleList()
        self.attn_up_after = -1
        outs = widths[-2::-1] + [widths[0]]  # mirror of the encoder, ending at base width
        for i, cout in enumerate(outs):
            self.up.append(ResBlockUp(cin, cout, s))
            cin, res = cout, res * 2
            if res == cfg.attention_res_up:
                self.attn_up_after = i
        self.attn_up = SelfAttention(outs[self.attn_up_after], s) if self.attn_up_after >= 0 else None
        # Optional U-Net skips (``model.unet_skips``): the output of each upsampling block gets a 1x1 projection of
        # the encoder feature at its resolution added (the full-resolution block: of the input itself). The paper's
        # G has none: it sees only landmarks. The warp-guided variant feeds the warped source as input, and without
        # skips its texture must squeeze through the 16 px bottleneck, which blurs the synthesised regions.
        self.skips = None
        if getattr(cfg, "unet_skips", False):
            enc = [in_channels] + widths[:-1]  # channels of the input and of each encoder output but the last
            self.skips = nn.ModuleList(conv(enc[n - 1 - i], outs[i], 1, s) for i in range(n))
        self.out_norm = AdaIN(cin)
        self.out_conv = conv(cin, out_channels, 3, s)
        self.sizes = [b.num_params for b in self.middle] + [b.num_params for b in self.up] + [self.out_norm.num_params]
        self.num_adain_params = sum(self.sizes)
        # P: the projection matrix of the paper (no bias). Spectral norm bounds |psi| <= |e| at the start.
        self.P = linear(cfg.embed_dim, self.num_adain_params, s, bias=False)
        self.embed_dim = cfg.embed_dim

    def adain_params(self, e: torch.Tensor) -> torch.Tensor:
        """``e (B, D) -> psi (B, num_adain_params)``."""
        return self.P(e.float()).float()

    def forward(self, lmk: torch.Tensor, e: torch.Tensor, *, src: torch.Tensor | None = None,
                src_points: torch.Tensor | None = None, tgt_points: torch.Tensor | None = None) -> GeneratorOutput:
        return self.forward_psi(lmk, self.adain_params(e))

    def forward_psi(self, lmk: torch.Tensor, psi: torch.Tensor, *, src: torch.Tensor | None = None,
                    src_points: torch.Tensor | None = None,
                    tgt_points: torch.Tensor | None = None) -> GeneratorOutput:
        """``lmk (B, 3, H, W)``, ``psi (B, num_adain_params)`` (or (1, n), broadcast) -> the image.
        The sources (the warp-guided variant's inputs) are accepted and ignored, so callers need not branch."""
        return GeneratorOutput(self.decode(lmk, psi), {}, {})

    def decode(self, lmk: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """The network on ``lmk (B, in_channels, H, W)``: ``(B, out_channels, H, W)`` float32, tanh'ed when
        ``out_channels == 3``."""
        if psi.shape[-1] != self.num_adain_params:
            raise ValueError(f"psi has {psi.shape[-1]} values, generator expects {self.num_adain_params}")
        if psi.shape[0] != lmk.shape[0]:
            psi = psi.expand(lmk.shape[0], -1)
        parts = list(psi.split(self.sizes, dim=1))
        x = lmk
        feats = [lmk]
        for i, block in enumerate(self.down):
            x = block(x)
            feats.append(x)
            if i == self.attn_down_after:
                x = self.attn_down(x)
        for block in self.middle:
            x = block(x, parts.pop(0))
        for i, block in enumerate(self.up):
            x = block(x, parts.pop(0))
            if self.skips is not None:
                x = x + self.skips[i](feats[len(self.down) - 1 - i])
            if i == self.attn_up_after:
                x = self.attn_up(x)
        x = self.out_conv(F.relu(self.out_norm(x, parts.pop(0))))
        return x.float() if self.raw_output else torch.tanh(x.float())
