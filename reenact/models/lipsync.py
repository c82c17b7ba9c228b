"""The landmark lip-sync expert (SyncNet-like, Chung & Zisserman 2016): its network, its checkpoints and the AV
offset / confidence it scores, in the core so that the metrics (:mod:`reenact.metrics.sync`) need no stage.

Two encoders map (a) 0.2 s of normalised log-mel centred on a video frame and (b) the mouth landmarks of the 5
frames around it (displacements from the clip's neutral shape in the canonical frame,
:mod:`reenact.landmarks.canonical`) to unit vectors; in-sync pairs lie close, off-sync ones far. As a metric
(:meth:`LipSyncExpert.av_sync`): mean embedding distance per audio offset over -15..15 frames; the AV offset is the
argmin, the confidence the median minus the minimum distance (Chung & Zisserman). Training (the contrastive loss,
and the expert's loss on the audio-to-landmark model) is the speech stage's: ``puppeteer.audio.sync_expert``.

The expert works at 25 fps (what it was trained on): other frame rates are resampled to 25 fps and the offset
is given back in frames of the input rate. A positive offset means the audio comes late (the mouth at frame t
matches the sound at frame t + offset).

Checkpoints are the project format (:mod:`reenact.checkpoint`) as the speech stage writes them
(``puppeteer.audio.config.save_audio_checkpoint``): ``meta.json`` says the network's ``kind`` and holds the
speech models' settings under ``"audio_config"``, of which the expert needs ``window`` and ``sync``
(:class:`SyncModelConfig`). The shipped weights stay with the speech models' (one model card for both):
``puppeteer/audio/weights/sync`` of this distribution.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import nn

from reenact.audio import features as F
from reenact.errors import CheckpointError, NoFaceError
from reenact.landmarks.parts import MOUTH

EXPERT_FPS = 25.0
# Shipped next to the audio-to-landmark model (``reenact`` and ``puppeteer`` install side by side): read as a
# file, nothing of the speech stage is imported.
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "puppeteer" / "audio" / "weights" / "sync"
DEFAULT_WINDOW = 20  # mel frames (10 ms) of audio per video frame, when a checkpoint does not say

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


# ------------------------------------------------------------------------------------------- checkpoints

@dataclass
class SyncModelConfig:
    """Lip-sync expert sizes (:class:`SyncNet`); ``audio_config.sync`` of a checkpoint."""

    channels: int = 96
    dim: int = 64
    hidden: int = 256
    dropout: float = 0.1
    visual_input: str = "shape"  # "shape": 13 mouth-shape measures per frame; "points": the 40 coordinates


def build_syncnet(cfg: SyncModelConfig) -> "SyncNet":
    """A fresh :class:`SyncNet` of these sizes."""
    return SyncNet(channels=cfg.channels, dim=cfg.dim, hidden=cfg.hidden, dropout=cfg.dropout,
                   visual_input=cfg.visual_input)


def open_audio_checkpoint(path: str | os.PathLike, kind: str):
    """The :class:`reenact.checkpoint` of a speech-model checkpoint holding a ``kind`` network ("sync", "a2l"),
    weights not yet loaded; :class:`CheckpointError` when it is missing or holds another network."""
    from reenact.checkpoint import load_checkpoint

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such audio checkpoint"
                              + (" (the shipped weights are missing from this install)" if "weights" in path.parts
                                 else ""))
    ck = load_checkpoint(path, train_state=False)
    if ck.meta.get("kind") != kind:
        raise CheckpointError(f"{ck.path}: holds a {ck.meta.get('kind')!r} network, expected {kind!r}")
    return ck


def load_lipsync(path: str | os.PathLike = DEFAULT_WEIGHTS) -> tuple["SyncNet", int, dict]:
    """(network in eval mode, audio window in mel frames, meta) of a lip-sync expert checkpoint."""
    ck = open_audio_checkpoint(path, "sync")
    audio_cfg = ck.meta.get("audio_config") or {}
    cfg = SyncModelConfig(**{**asdict(SyncModelConfig()), **(audio_cfg.get("sync") or {})})
    net = build_syncnet(cfg)
    ck.load_into({"sync": net})
    return net.float().eval(), int(audio_cfg.get("window", DEFAULT_WINDOW)), ck.meta


# ------------------------------------------------------------------------------------------- the metric

def resample_track(x: np.ndarray, fps: float, target: float = EXPERT_FPS) -> np.ndarray:
    """Linear resampling of a per-frame array ``(T, ...)`` from ``fps`` to ``target`` frames per second."""
    x = np.asarray(x, np.float32)
    if abs(fps - target) < 1e-6:
        return x
    n = max(1, int(round(len(x) * target / fps)))
    src = np.arange(n) * fps / target
    i0 = np.clip(np.floor(src).astype(int), 0, len(x) - 1)
    i1 = np.clip(i0 + 1, 0, len(x) - 1)
    w = (src - i0).reshape((-1,) + (1,) * (x.ndim - 1))
    return ((1 - w) * x[i0] + w * x[i1]).astype(np.float32)


class LipSyncExpert:
    """A trained :class:`SyncNet` ready to score clips. Build with :meth:`load` (a checkpoint directory; by
    default the weights shipped in ``puppeteer/audio/weights/sync``, :data:`DEFAULT_WEIGHTS`)."""

    def __init__(self, net: SyncNet, window: int = 20, device: str | torch.device = "cpu"):
        self.net = net.eval().to(device)
        self.window = window
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "LipSyncExpert":
        net, window, _ = load_lipsync(path or DEFAULT_WEIGHTS)
        return cls(net, window, device)

    @torch.no_grad()
    def distances(self, landmarks: np.ndarray, audio: np.ndarray | None, fps: float,
                  sample_rate: int = F.SAMPLE_RATE, max_offset: int = 15, valid: np.ndarray | None = None,
                  mel: torch.Tensor | None = None) -> np.ndarray:
        """Mean embedding distance for each audio offset ``-max_offset..max_offset`` (frames at 25 fps),
        ``(2 max_offset + 1,)``. landmarks ``(T, 68, 2)`` pixels (any consistent frame), audio mono at
        ``sample_rate`` aligned to frame 0, or instead its normalised features ``mel`` (``features.features``)."""
        from reenact.landmarks.canonical import canonicalize

        pts = np.asarray(landmarks, np.float32)
        if pts.ndim != 3 or pts.shape[1:] != (68, 2):
            raise ValueError(f"landmarks must be (T, 68, 2), got {pts.shape}")
        mouth = canonicalize(pts, valid).displacement[:, MOUTH]
        mouth = resample_track(mouth, fps)
        t = len(mouth)
        if t < FRAMES:
            raise ValueError(f"need at least {FRAMES} frames at 25 fps for AV sync, got {t}")
        if mel is None:
            mel = F.features(audio, sample_rate)
        win = F.frame_windows(mel, t + 2 * max_offset, EXPERT_FPS, self.window, offset=-max_offset)
        a = torch.cat([self.net.embed_audio(c.to(self.device)) for c in win.split(512)])  # frame k - max_offset
        seq = torch.from_numpy(np.ascontiguousarray(mouth)).unfold(0, FRAMES, 1).permute(0, 3, 1, 2)
        v = torch.cat([self.net.embed_mouth(c.to(self.device)) for c in seq.split(512)])  # centre j + 2
        centres = np.arange(len(v)) + FRAMES // 2
        # Every offset is scored on the same frames (the middle of the clip when it is long enough) so the
        # distances compare like with like; short clips use all frames, with silence past the audio's ends.
        keep = (centres >= max_offset) & (centres < t - max_offset)
        if keep.sum() < 10:
            keep[:] = True
        vi = torch.from_numpy(np.nonzero(keep)[0])
        out = []
        for o in range(-max_offset, max_offset + 1):
            ai = torch.from_numpy(centres[keep] + o + max_offset)
            out.append((v[vi] - a[ai]).norm(dim=-1).mean().item())
        return np.asarray(out, np.float64)

    def av_sync(self, landmarks: np.ndarray, audio: np.ndarray | None, fps: float,
                sample_rate: int = F.SAMPLE_RATE, max_offset: int = 15, valid: np.ndarray | None = None,
                mel: torch.Tensor | None = None) -> dict:
        """``{"status": "ok", "offset", "confidence", "min_dist", "median_dist"}``: offset in frames at ``fps``
        (positive: audio late), confidence = median - min of the per-offset mean distances. ``mel``: see
        :meth:`distances`."""
        d = self.distances(landmarks, audio, fps, sample_rate, max_offset, valid, mel)
        k = int(np.argmin(d))
        offset = (k - max_offset) * fps / EXPERT_FPS
        return {"status": "ok", "offset": float(offset), "confidence": float(np.median(d) - d[k]),
                "min_dist": float(d[k]), "median_dist": float(np.median(d))}

    def offset_confidence(self, frames: np.ndarray, audio: np.ndarray, fps: float,
                          sample_rate: int) -> tuple[float, float]:
        """The :class:`reenact.metrics.sync.SyncExpert` protocol on RGB frames: landmarks by dlib first."""
        from reenact.landmarks import create_detector

        det = create_detector("dlib")
        pts, ok = [], []
        for f in frames:
            faces = det.detect(np.ascontiguousarray(f))
            if faces:
                pts.append(max(faces, key=lambda x: x.area).points)
                ok.append(True)
            else:
                pts.append(pts[-1] if pts else np.zeros((68, 2), np.float32))
                ok.append(False)
        if not any(ok):
            raise NoFaceError("<AV-sync frames>")
        r = self.av_sync(np.stack(pts), audio, fps, sample_rate, valid=np.asarray(ok))
        return r["offset"], r["confidence"]
