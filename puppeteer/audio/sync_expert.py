"""A lip-sync expert on landmarks (SyncNet-like, Chung & Zisserman 2016) and the AV-sync metric built on it.

Two encoders map (a) 0.2 s of normalised log-mel centred on a video frame and (b) the mouth landmarks of the 5
frames around it (displacements from the clip's neutral shape in the canonical frame, :mod:`puppeteer.audio.data`)
to unit vectors; in-sync pairs lie close, off-sync ones far. The expert serves

- as a loss for the audio-to-landmark model (:func:`sync_loss`, Wav2Lip-style: Prajwal et al. 2020), and
- as a metric (:meth:`LipSyncExpert.av_sync`): mean embedding distance per audio offset over -15..15 frames;
  the AV offset is the argmin, the confidence the median minus the minimum distance (Chung & Zisserman).

The expert works at 25 fps (what it was trained on): other frame rates are resampled to 25 fps and the offset
is given back in frames of the input rate. A positive offset means the audio comes late (the mouth at frame t
matches the sound at frame t + offset).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn

from reenact.errors import NoFaceError
from reenact.landmarks.parts import MOUTH

from puppeteer.audio import features as F
from puppeteer.audio.model import FRAMES, SyncNet  # the network; this module trains it and scores with it

EXPERT_FPS = 25.0
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "sync"


# ------------------------------------------------------------------------------------------- training loss

def negative_offsets(max_offset: int = 15, min_shift: int = 5) -> list[int]:
    """Audio offsets (frames) used as negatives of the same clip: ``min_shift <= |o| <= max_offset``."""
    return [o for o in range(-max_offset, max_offset + 1) if abs(o) >= min_shift]


def contrastive_loss(net: SyncNet, mel: torch.Tensor, mouth: torch.Tensor, pad: int = 15,
                     min_shift: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE over in-sync / off-sync pairs.

    mel: ``(B, 5 + 2 pad, W, 80)`` audio windows of frames ``t - pad .. t + 4 + pad``; mouth ``(B, 5, 20, 2)`` of
    frames ``t .. t + 4``. Each mouth sequence is scored against its own audio (the positive), its own clip's
    audio shifted by ``min_shift..pad`` frames either way, and the other samples' in-sync audio.
    Returns (loss, accuracy of picking the positive among the clip's own offsets)."""
    b = mel.shape[0]
    centre = pad + FRAMES // 2
    offs = negative_offsets(pad, min_shift)
    idx = [centre] + [centre + o for o in offs]
    a = net.embed_audio(mel[:, idx].flatten(0, 1)).view(b, len(idx), -1)  # (B, 1 + O, E): only what is scored
    v = net.embed_mouth(mouth)
    s_own = torch.einsum("be,boe->bo", v, a)
    s_other = v @ a[:, 0].T                                                   # (B, B): diagonal is the positive
    logits = torch.cat([s_own, s_other], 1) * net.logit_scale.exp().clamp(max=100)
    # Mask after scaling: a -inf before the product would give 0 * inf = nan in the temperature's gradient.
    mask = torch.cat([torch.zeros(b, len(idx), dtype=torch.bool, device=v.device),
                      torch.eye(b, dtype=torch.bool, device=v.device)], 1)
    logits = logits.masked_fill(mask, float("-inf"))
    target = torch.zeros(b, dtype=torch.long, device=v.device)
    # Accuracy among the clip's own offsets: what the AV-offset search depends on.
    return Fn.cross_entropy(logits, target), (logits[:, :len(idx)].argmax(1) == 0).float().mean()


def sync_loss(net: SyncNet, mel: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
    """Wav2Lip-style expert loss on generated mouths: ``1 - cos`` between the audio and mouth embeddings of each
    5-frame window. mel ``(B, T, W, 80)`` windows of frames 0..T-1, mouth ``(B, T, 20, 2)`` predicted displacements;
    the expert (kept frozen by the caller) scores windows centred on frames 2..T-3."""
    b, t = mouth.shape[:2]
    if t < FRAMES:
        return mouth.new_zeros(())
    win = mouth.unfold(1, FRAMES, 1).permute(0, 1, 4, 2, 3)  # (B, T-4, 5, 20, 2)
    v = net.embed_mouth(win.flatten(0, 1))
    a = net.embed_audio(mel[:, FRAMES // 2: t - FRAMES // 2].flatten(0, 1))
    return (1.0 - (a * v).sum(-1)).mean()


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
    default the weights shipped in ``puppeteer/audio/weights/sync``)."""

    def __init__(self, net: SyncNet, window: int = 20, device: str | torch.device = "cpu"):
        self.net = net.eval().to(device)
        self.window = window
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "LipSyncExpert":
        from puppeteer.audio.config import load_audio_checkpoint

        net, cfg, _ = load_audio_checkpoint(path or DEFAULT_WEIGHTS, "sync")
        return cls(net, cfg.window, device)

    @torch.no_grad()
    def distances(self, landmarks: np.ndarray, audio: np.ndarray | None, fps: float,
                  sample_rate: int = F.SAMPLE_RATE, max_offset: int = 15, valid: np.ndarray | None = None,
                  mel: torch.Tensor | None = None) -> np.ndarray:
        """Mean embedding distance for each audio offset ``-max_offset..max_offset`` (frames at 25 fps),
        ``(2 max_offset + 1,)``. landmarks ``(T, 68, 2)`` pixels (any consistent frame), audio mono at
        ``sample_rate`` aligned to frame 0, or instead its normalised features ``mel`` (``features.features``)."""
        from puppeteer.audio.data import canonicalize

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


def av_sync(landmarks: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = F.SAMPLE_RATE,
            expert: LipSyncExpert | str | os.PathLike | None = None, max_offset: int = 15) -> dict:
    """AV offset and confidence of a landmark track ``(T, 68, 2)`` against ``audio`` (see :class:`LipSyncExpert`);
    ``expert`` is a loaded expert, a checkpoint path, or None for the shipped weights."""
    if not isinstance(expert, LipSyncExpert):
        expert = LipSyncExpert.load(expert)
    return expert.av_sync(landmarks, audio, fps, sample_rate, max_offset)
