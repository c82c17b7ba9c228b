"""Audio-visual sync (offset and confidence) from a lip-sync expert.

The papers measure lip sync with SyncNet (Chung & Zisserman 2016): embeddings of audio and mouth are compared at
audio offsets of -15..15 frames; the offset is the argmin of the mean distance and the confidence the median minus
the minimum distance. The expert here is the landmark-based one of :mod:`reenact.models.lipsync` (mouth
landmarks, not pixels: it scores what a landmark-driven renderer was asked to draw, or, with landmarks detected on
output frames, what it drew).

Without an expert (no ``expert`` object and no ``checkpoint``) :func:`av_sync` reports itself unavailable: a
metric is never faked, and evaluation reports go on saying so. :func:`summarize` turns per-clip results into the
figures the evaluation reports give (mean offset, mean absolute offset, share in sync, mean confidence).
"""
from __future__ import annotations

import os
from typing import Protocol

import numpy as np

UNAVAILABLE = {"status": "unavailable", "reason": "no lip-sync expert given (pass a checkpoint, or 'default')"}


class SyncExpert(Protocol):
    """What a lip-sync expert must offer: the offset (frames, audio relative to video) and confidence of a clip
    of RGB uint8 face crops (T, H, W, 3) at ``fps`` against mono float32 audio at ``sample_rate``."""

    def offset_confidence(self, frames: np.ndarray, audio: np.ndarray, fps: float,
                          sample_rate: int) -> tuple[float, float]: ...


def load_expert(checkpoint: str | os.PathLike, device: str = "cpu"):
    """The landmark lip-sync expert from a checkpoint directory; ``"default"``: the shipped weights
    (:data:`reenact.models.lipsync.DEFAULT_WEIGHTS`)."""
    from reenact.models.lipsync import LipSyncExpert  # lazy: torch loads on first use

    return LipSyncExpert.load(None if str(checkpoint) == "default" else checkpoint, device)


def av_sync(frames_or_landmarks: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = 16000,
            expert: SyncExpert | None = None, checkpoint: str | os.PathLike | None = None,
            valid: np.ndarray | None = None) -> dict:
    """AV sync of a clip: ``{"status": "ok", "offset": frames, "confidence": c, ...}``, or ``UNAVAILABLE``.

    frames_or_landmarks: a landmark track ``(T, 68, 2)`` (any pixel frame) or RGB frames ``(T, H, W, 3)``
    (landmarks are then detected with dlib). The expert is ``expert`` or loaded from ``checkpoint``. For a
    landmark track and the landmark expert, the result also has ``min_dist`` and ``median_dist``, and ``valid``
    (T,) marks the frames whose landmarks were detected (the others, interpolated, do not fix the track's
    canonical frame). Offsets are in frames at ``fps``; positive means the audio comes late. Never raises for a
    missing expert."""
    if expert is None and checkpoint is None:
        return dict(UNAVAILABLE)
    if expert is None:
        expert = load_expert(checkpoint)
    x = np.asarray(frames_or_landmarks)
    if x.ndim == 3 and x.shape[1:] == (68, 2) and hasattr(expert, "av_sync"):
        return expert.av_sync(x, audio, fps, sample_rate, valid=valid)
    offset, conf = expert.offset_confidence(x, audio, fps, sample_rate)
    return {"status": "ok", "offset": float(offset), "confidence": float(conf)}


def summarize(results: list[dict]) -> dict:
    """Per-clip :func:`av_sync` results -> ``{"clips", "av_offset", "av_abs_offset", "in_sync", "av_conf",
    "failed"}``: means over the clips with a result (``in_sync``: share with ``|offset| <= 1`` frame) and the
    number without one (``status`` not ``ok``, e.g. no face found on rendered frames)."""
    ok = [r for r in results if r.get("status") == "ok"]
    off = np.array([r["offset"] for r in ok], np.float64)
    return {"clips": len(ok), "av_offset": float(off.mean()) if len(ok) else None,
            "av_abs_offset": float(np.abs(off).mean()) if len(ok) else None,
            "in_sync": float((np.abs(off) <= 1).mean()) if len(ok) else None,
            "av_conf": float(np.mean([r["confidence"] for r in ok])) if ok else None,
            "failed": len(results) - len(ok)}
