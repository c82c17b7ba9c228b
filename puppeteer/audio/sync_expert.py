"""Training the landmark lip-sync expert: its contrastive loss, and the Wav2Lip-style expert loss it gives the
audio-to-landmark model (Prajwal et al. 2020).

The network (:class:`~reenact.models.lipsync.SyncNet`) and the scorer built on it
(:class:`~reenact.models.lipsync.LipSyncExpert`: AV offset and confidence, the metric of ``reenact eval``) live in
the core, :mod:`reenact.models.lipsync`, so the metrics need no stage; this module trains the network.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as Fn

from reenact.audio import features as F
from reenact.models.lipsync import FRAMES, LipSyncExpert, SyncNet


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


def av_sync(landmarks: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = F.SAMPLE_RATE,
            expert: LipSyncExpert | str | os.PathLike | None = None, max_offset: int = 15) -> dict:
    """AV offset and confidence of a landmark track ``(T, 68, 2)`` against ``audio`` (see :class:`LipSyncExpert`);
    ``expert`` is a loaded expert, a checkpoint path, or None for the shipped weights."""
    if not isinstance(expert, LipSyncExpert):
        expert = LipSyncExpert.load(expert)
    return expert.av_sync(landmarks, audio, fps, sample_rate, max_offset)
