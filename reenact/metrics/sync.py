"""Audio-visual sync (offset and confidence) -- a hook, unavailable until a lip-sync expert exists.

The papers measure lip sync with SyncNet (Chung & Zisserman 2016): the offset (in frames) where the audio and
mouth embeddings agree best, and the confidence (median distance minus the minimum distance over offsets).
reenact has no lip-sync expert network yet, and a metric must never be faked, so :func:`av_sync` reports
itself unavailable. The speech work will provide an expert; it then plugs in here through the
:class:`SyncExpert` protocol, and ``reenact eval`` reports the numbers without further changes.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

UNAVAILABLE = {"status": "unavailable", "reason": "no lip-sync expert network in reenact yet"}


class SyncExpert(Protocol):
    """What a lip-sync expert must offer: the offset (frames, audio relative to video) and confidence of a clip
    of RGB uint8 face crops (T, H, W, 3) at ``fps`` against mono float32 audio at ``sample_rate``."""

    def offset_confidence(self, frames: np.ndarray, audio: np.ndarray, fps: float,
                          sample_rate: int) -> tuple[float, float]: ...


def av_sync(frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = 16000,
            expert: SyncExpert | None = None) -> dict:
    """``{"status": "ok", "offset": frames, "confidence": c}`` from ``expert``, or ``UNAVAILABLE`` without
    one. Never raises for a missing expert: evaluation reports go on and say the metric is unavailable."""
    if expert is None:
        return dict(UNAVAILABLE)
    offset, conf = expert.offset_confidence(frames, audio, fps, sample_rate)
    return {"status": "ok", "offset": float(offset), "confidence": float(conf)}
