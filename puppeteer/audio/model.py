"""Networks of the speech side: an audio-window encoder, the audio-to-landmark model and the lip-sync expert's
network (:class:`SyncNet`; trained and applied by :mod:`puppeteer.audio.sync_expert`).

All are pure ``nn.Module``s. Inputs are per-video-frame windows of normalised log-mel
(:func:`puppeteer.audio.features.frame_windows`): ``(B, T, W, 80)``, W mel frames (10 ms each) centred on each
video frame. Outputs are landmark displacements in the canonical frame (unit inter-ocular distance) of
:mod:`puppeteer.audio.data`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import nn

from reenact.landmarks.parts import MOUTH

from puppeteer.audio.data import ANIMATED

# Mouth shape measures (linear in the displacements, so they apply to displacements too): (a, b, axis) is
# ``p[b, axis] - p[a, axis]`` (b = None: ``p[a, axis]``), indices into the 20 mouth points (0 = point 48).
SHAPE_MEASURES = (
    (13, 19, 1), (14, 18, 1), (15, 17, 1),   # inner lip gaps (61-67, 62-66, 63-65)
    (2, 10, 1), (3, 9, 1), (4, 8, 1),        # outer lip gaps (50-58, 51-57, 52-56)
    (0, 6, 0), (12, 16, 0),                  # mouth width outer (48-54) and inner (60-64)
    (3, None, 1), (9, None, 1), (18, None, 1),  # heights of the upper lip, lower lip, inner lower lip
    (0, None, 1), (6, None, 1),              # mouth corners up/down
)
FRAMES = 5  # landmark frames per sample (0.2 s at 25 fps)


class AudioEncoder(nn.Module):
    """One mel window ``(N, W, n_mels)`` -> a feature vector ``(N, dim)``: 1-D convolutions over time with the mel
    bins as channels (a phone spans a few 10 ms frames); the first one strided, since 20 ms steps still resolve
    phones and it halves the cost. Mean + max pooling over time leaves the window length free."""

    def __init__(self, n_mels: int = 80, channels: int = 96, dim: int = 128, dropout: float = 0.1):
        super().__init__()

        def block(cin, cout, k, stride):
            return nn.Sequential(nn.Conv1d(cin, cout, k, stride, (k - 1) // 2), nn.GroupNorm(8, cout), nn.SiLU())

        self.net = nn.Sequential(block(n_mels, channels, 4, 2), block(channels, channels, 3, 1),
                                 block(channels, channels, 3, 2))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * channels, dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.net(mel.transpose(1, 2))  # (N, C, W / 4)
        h = torch.cat([h.mean(-1), h.amax(-1)], 1)
        return self.out(self.drop(h))


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


class SyncNet(nn.Module):
    """Audio windows ``(N, W, 80)`` and mouth displacement sequences ``(N, 5, 20, 2)`` (inter-ocular units) ->
    unit embeddings ``(N, dim)`` each. ``scale`` turns displacements into unit-size numbers; ``logit_scale`` is the
    learned inverse temperature of the contrastive loss (not used by the metric)."""

    def __init__(self, n_mels: int = 80, channels: int = 96, dim: int = 64, hidden: int = 256,
                 frames: int = FRAMES, dropout: float = 0.1, visual_input: str = "shape"):
        super().__init__()
        self.frames = frames
        self.audio = AudioEncoder(n_mels, channels, dim, dropout)
        if visual_input == "shape":
            proj = torch.zeros(len(SHAPE_MEASURES), len(MOUTH), 2)
            for k, (a, b, axis) in enumerate(SHAPE_MEASURES):
                if b is None:
                    proj[k, a, axis] = 1.0
                else:
                    proj[k, b, axis], proj[k, a, axis] = 1.0, -1.0
        elif visual_input == "points":
            proj = torch.eye(len(MOUTH) * 2).view(-1, len(MOUTH), 2)
        else:
            raise ValueError(f"visual_input must be 'shape' or 'points', got {visual_input!r}")
        # A few shape measures instead of 40 coordinates: far fewer inputs to overfit on 20 minutes of data,
        # and they ignore landmark slide along the lip contour, which is mostly detector jitter.
        self.register_buffer("proj", proj)
        self.visual = nn.Sequential(
            nn.Linear(frames * proj.shape[0], hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.register_buffer("scale", torch.tensor(0.03))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return Fn.normalize(self.audio(mel), dim=-1)

    def embed_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("ntpc,kpc->ntk", mouth / self.scale, self.proj)
        return Fn.normalize(self.visual(x.flatten(1)), dim=-1)

    def forward(self, mel: torch.Tensor, mouth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_audio(mel), self.embed_mouth(mouth)
