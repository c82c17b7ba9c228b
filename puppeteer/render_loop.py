"""The one loop every avatar video goes through: render landmark frames in batches -> paste back -> encode.

``puppeteer_video``, ``speak``, ``lipsync``, ``reenact render`` and the demo differ only in where the landmarks
come from and what each crop is pasted into; they all call :func:`render_video`. Frames are made one batch at a
time and encoded on a writer thread meanwhile (a bounded queue), so memory stays at about two batches whatever the
length, and the writer is atomic: an error, Ctrl-C or (through the CLI) SIGTERM leaves no partial file.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from reenact.options import OutputOptions

if TYPE_CHECKING:  # pragma: no cover
    from reenact.avatar import Avatar
    from puppeteer.drive import Compositor

Paste = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""``paste(i, crop, points) -> frame``: output frame ``i`` from its rendered crop ``(S, S, 3)`` and the crop's
``(68, 2)`` landmarks (crop pixels)."""

TIMING_KEYS = ("render", "paste_back", "encode")
QUEUE_BYTES = 16 << 20  # frames waiting for the writer thread, in bytes


def default_batch(avatar: "Avatar") -> int:
    """Frames rendered at once: enough to keep a GPU busy, few enough to stay small on a CPU."""
    return 64 if avatar.base.device.type == "cuda" else 16


def render_video(avatar: "Avatar", points: np.ndarray, output: str | os.PathLike, fps: float, *,
                 compositor: "Compositor | None" = None, paste: Paste | None = None, audio: np.ndarray | None = None, audio_rate: int = 16000,
                 crf: int = OutputOptions.crf, batch_size: int | None = None, progress: bool = True,
                 timings: dict[str, float] | None = None) -> Path:
    """Render ``points`` ``(T, 68, 2)`` (crop pixels) with ``avatar`` and write ``output`` (H.264 mp4).

    compositor: a :class:`~puppeteer.drive.Compositor`: frames of the avatar's photo (rendered at the photo's
        resolution by a photo avatar, pasted back for a crop avatar); None: the crops.
    paste: turns each rendered crop (or the compositor's frame) into the frame written (a lipsync frame, a frame
        kept for a poster, ...); None writes them as they are.
    audio, audio_rate: mono float samples muxed with the frames (trim them to the video first).
    timings: seconds are added to its ``render``, ``paste_back`` and ``encode`` entries (``encode``: the writer
        thread's, overlapped with rendering, and the final flush).
    The file is stamped as synthetic with ``Provenance.of(avatar)`` (see :mod:`reenact.provenance`).
    Returns ``output``.
    """
    from tqdm.auto import tqdm

    from reenact import io
    from reenact.provenance import Provenance

    timings = {} if timings is None else timings
    for k in TIMING_KEYS:
        timings.setdefault(k, 0.0)
    chunk = batch_size or default_batch(avatar)
    writer = io.VideoWriter(output, fps, crf=crf, audio=audio, audio_rate=audio_rate,
                            provenance=Provenance.of(avatar))
    bg = None
    try:
        with tqdm(total=len(points), desc="rendering", unit="frame", disable=not progress, leave=False) as bar:
            for i in range(0, len(points), chunk):
                part = points[i:i + chunk]
                t = time.perf_counter()
                if compositor is not None:
                    crops = compositor.render(avatar, part, batch_size=chunk, timings=timings)
                else:
                    crops = avatar.render_batch(part, batch_size=chunk)
                    timings["render"] += time.perf_counter() - t
                for j, (crop, p) in enumerate(zip(crops, part)):
                    t = time.perf_counter()
                    frame = crop if paste is None else paste(i + j, crop, p)
                    timings["paste_back"] += time.perf_counter() - t
                    if bg is None:
                        bg = io.BackgroundWriter(writer, maxsize=_queued_frames(frame, chunk))
                    bg.write(frame)
                bar.update(len(part))
        t = time.perf_counter()
        bg.close() if bg is not None else writer.close()
    except BaseException as e:
        if bg is not None:
            bg.abort(type(e), e, e.__traceback__)
        else:
            writer._abort(type(e), e, e.__traceback__)
        raise
    # encode: the writer thread's busy time (overlapped with rendering) plus the final flush and move into place
    timings["encode"] += (bg.seconds if bg is not None else 0.0) + time.perf_counter() - t
    return Path(output)


def _queued_frames(frame: np.ndarray, chunk: int) -> int:
    """Frames the writer thread may hold: about a batch (so encoding a batch overlaps with rendering the next),
    at most QUEUE_BYTES of them (large frames: memory stays near one batch whatever the frame size)."""
    return int(max(2, min(chunk + 1, QUEUE_BYTES // max(frame.nbytes, 1))))
