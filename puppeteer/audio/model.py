"""The audio-to-landmark network of the speech side (its audio-window encoder and the lip-sync expert's network,
:class:`~reenact.models.lipsync.SyncNet`, live in the core: :mod:`reenact.models.lipsync`).

All are pure ``nn.Module``s. Inputs are per-video-frame windows of normalised log-mel
(:func:`reenact.audio.features.frame_windows`): ``(B, T, W, 80)``, W mel frames (10 ms each) centred on each
video frame. Outputs are landmark displacements in the canonical frame (unit inter-ocular distance) of
:mod:`puppeteer.audio.data`.
"""
from __future__ import annotations

import torch
from torch import nn

from reenact.models.lipsync import AudioEncoder

from puppeteer.audio.data import ANIMATED

class TemporalConv(nn.Module):
    """Residual 1-D convolutions over video frames ``(B, T, dim) -> (B, T, dim)``: kernel 5 at dilations 1 and 2,
    so each output sees +-6 frames (0.24 s at 25 fps) of audio features: enough for co-articulation (lips move a
    little before and after the sound), short enough that the mouth does not open long before speech starts."""

    def __init__(self, dim: int, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, 5, padding=2 * 2 ** i, dilation=2 ** i), nn.GroupNorm(8, dim),
                          nn.SiLU(), nn.Dropout(dropout))
            for i in range(layers))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.transpose(1, 2)
        for block in self.blocks:
            h = h + block(h)
        return h.transpose(1, 2)


class AudioToLandmarks(nn.Module):
    """Speech -> per-frame displacements of the jaw and mouth (``ANIMATED``, 37 points) from the neutral face.

    mel windows ``(B, T, W, 80)`` -> ``(B, T, 37, 2)`` in inter-ocular units. A per-frame audio encoder, then a
    temporal model over frames (``temporal="conv"``: residual convolutions with a +-0.24 s reach; ``"gru"``: a
    bidirectional GRU over the whole sequence), then a linear head. ``scale`` (a buffer set from the training
    targets' deviation) lets the head work in unit-variance numbers; the training's velocity loss keeps the output
    smooth."""

    def __init__(self, n_mels: int = 80, channels: int = 96, dim: int = 128, hidden: int = 128,
                 layers: int = 2, dropout: float = 0.1, temporal: str = "conv"):
        super().__init__()
        self.num_points = len(ANIMATED)
        self.temporal = temporal
        self.encoder = AudioEncoder(n_mels, channels, dim, dropout)
        if temporal == "gru":
            self.gru = nn.GRU(dim, hidden, layers, batch_first=True, bidirectional=True,
                              dropout=dropout if layers > 1 else 0.0)
            out = 2 * hidden
        elif temporal == "conv":
            self.tconv = TemporalConv(dim, layers, dropout)
            out = dim
        else:
            raise ValueError(f"temporal must be 'conv' or 'gru', got {temporal!r}")
        self.head = nn.Linear(out, self.num_points * 2)
        self.register_buffer("scale", torch.full((self.num_points, 2), 0.03))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b, t = mel.shape[:2]
        h = self.encoder(mel.flatten(0, 1)).view(b, t, -1)
        h = self.gru(h)[0] if self.temporal == "gru" else self.tconv(h)
        return self.head(h).view(b, t, self.num_points, 2) * self.scale


def full_displacement(animated: torch.Tensor) -> torch.Tensor:
    """``(..., 37, 2)`` displacements of ``ANIMATED`` -> ``(..., 68, 2)`` with zeros elsewhere."""
    out = animated.new_zeros(animated.shape[:-2] + (68, 2))
    out[..., torch.as_tensor(ANIMATED, device=animated.device), :] = animated
    return out
