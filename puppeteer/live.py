"""Real-time driving: frames in -> landmarks -> retarget -> render -> paste back -> out, each stage on its own
thread.

:func:`run_live` returns a :class:`LiveRun`: iterate it for the output frames (:class:`LiveFrame`), and it also
writes them to a file (``out``) and shows them in a window (``show``). The source is a driver file played at its
own frame rate, a :class:`~puppeteer.drive.Camera`, or any iterable of RGB frames.

Between stages sit queues of ``queue_size`` frames. In real time (``realtime=True``, the default) a stage that
finds its output queue full drops the oldest frame there and counts it: a slow stage makes frames drop, never
latency or memory grow. ``realtime=False`` blocks instead (every input frame is rendered, as fast as the
slowest stage). The file gets one frame per input frame at the input's timestamps (a dropped frame repeats the
last one made), so its length and its audio (a driver file's own) stay in step with the input.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from reenact.errors import InputError
from reenact.options import OutputOptions

if TYPE_CHECKING:  # pragma: no cover
    from reenact.avatar import Avatar

_STOP = object()  # end of stream, passed down the queues
_POLL = 0.05  # seconds a blocked stage waits before looking at the stop flag (keeps Ctrl-C and close() prompt)


@dataclass
class LiveFrame:
    """One output frame. index: the input frame it was made from (increasing; gaps are dropped frames).
    image: RGB uint8 ``(H, W, 3)``. arrived: ``time.perf_counter()`` when its input frame came in. latency:
    seconds from then to this frame coming out."""

    index: int
    image: np.ndarray = field(repr=False)
    arrived: float
    latency: float


@dataclass
class LiveStats:
    """Counts and timings of a run so far. frames_in: input frames that arrived; frames_out: frames made;
    dropped: input frames dropped by a stage that could not keep up; written: frames in the file; latencies:
    seconds per frame made; peak_queued: most frames ever waiting between two stages (bounded by
    ``queue_size``); missing: input frames without a face (the last pose was held); busy: seconds each
    stage spent working (``landmarks``: tracking and retargeting, ``render``: rendering and pasting back) on the
    ``tracked`` and ``rendered`` frames."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    written: int = 0
    peak_queued: int = 0
    missing: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    tracked: int = 0
    rendered: int = 0
    busy: dict[str, float] = field(default_factory=lambda: {"landmarks": 0.0, "render": 0.0})
    started: float | None = None
    last_out: float | None = None

    @property
    def fps(self) -> float:
        """Frames made per second of wall time since the first input frame."""
        if self.started is None or self.last_out is None or self.last_out <= self.started:
            return 0.0
        return self.frames_out / (self.last_out - self.started)

    def latency(self, q: float = 50) -> float:
        """Percentile ``q`` of the latency in seconds (nan before the first frame)."""
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def summary(self) -> str:
        drop = 100.0 * self.dropped / max(self.frames_in, 1)
        return (f"{self.frames_out} of {self.frames_in} frames at {self.fps:.1f} fps, {self.dropped} dropped "
                f"({drop:.1f}%), latency median {1000 * self.latency(50):.0f} ms, p95 {1000 * self.latency(95):.0f} ms")


def has_display() -> bool:
    """Whether a window can be opened (on Linux: an X11 or Wayland display is set)."""
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class _Queue:
    """A bounded queue between two stages. ``put`` drops the oldest waiting item when full (``drop=True``,
    real time) or waits for room; ``on_drop`` counts the dropped items' input frames."""

    def __init__(self, size: int, drop: bool, stop: threading.Event, stats: LiveStats, lock: threading.Lock):
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self._drop, self._stop, self._stats, self._lock = drop, stop, stats, lock

    def put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0 if self._drop else _POLL)
                break
            except queue.Full:
                if self._drop:
                    try:
                        old = self._q.get_nowait()
                    except queue.Empty:
                        continue
                    if old is _STOP:  # never lose the end of the stream
                        self._q.put(old)
                        return
                    with self._lock:
                        self._stats.dropped += 1
        with self._lock:
            self._stats.peak_queued = max(self._stats.peak_queued, self._q.qsize())

    def get(self):
        while not self._stop.is_set():
            try:
                return self._q.get(timeout=_POLL)
            except queue.Empty:
                continue
        return _STOP

    def end(self) -> None:
        """Pass the end of the stream on, waiting for room (dropping is for frames only)."""
        while not self._stop.is_set():
            try:
                self._q.put(_STOP, timeout=_POLL)
                return
            except queue.Full:
                if self._drop:
                    try:
                        self._q.get_nowait()
                        with self._lock:
                            self._stats.dropped += 1
                    except queue.Empty:
                        pass


class LiveRun:
    """A running live session; made by :func:`run_live`. Iterate it for :class:`LiveFrame` s; ``stats`` counts
    as it goes; ``close()`` (also on leaving a ``with`` block, on Ctrl-C in the loop, or when the source ends)
    stops the threads and finishes the file, stamped and playable, with what was made so far."""

    def __init__(self, avatar: "Avatar", frames: Iterable[np.ndarray], fps: float, *, paced: bool,
                 into=None, shot: int = 0, out: str | os.PathLike | None = None, audio: np.ndarray | None = None,
                 audio_rate: int = 16000, crf: int = OutputOptions.crf, show: bool = False, overlay: bool = False,
                 realtime: bool = True, queue_size: int = 2, progress: bool = True, source: str = "<stream>",
                 **drive_options):
        from puppeteer.drive import drive
        from reenact import io, validate

        validate.at_least(queue_size, 1, "queue_size")
        self.fps, self.source, self.out = float(fps), source, None if out is None else Path(out)
        self.stats = LiveStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._driver = drive(avatar, (), into=into, shot=shot, fps=self.fps, source=source, **drive_options)
        self._cpu = avatar.base.device.type == "cpu"
        self._queues = [_Queue(queue_size, realtime, self._stop, self.stats, self._lock) for _ in range(3)]
        self._writer = None
        self._audio, self._audio_rate = audio, int(audio_rate)
        if self.out is not None:
            from reenact.provenance import Provenance

            io.check_writable(self.out)
            # x264's "veryfast": a file frame per input frame must encode in real time beside the renderer
            # (2-3x faster than "medium" at 720 px, the same crf)
            w = io.VideoWriter(self.out, self.fps, crf=crf, audio=audio, audio_rate=audio_rate, preset="veryfast",
                               provenance=Provenance.of(avatar))
            self._writer = io.BackgroundWriter(w, maxsize=queue_size + 2)
        self._last: np.ndarray | None = None
        self._show = show and self._open_window()
        self._overlay = overlay
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc="live", unit="frame", leave=False)
        self._shown_at = 0.0
        self._closed = False
        stages = [(self._read, (frames, paced)), (self._track, ()), (self._render, ())]
        self._threads = [threading.Thread(target=self._guard, args=(f, a), name=f"live-{f.__name__[1:]}",
                                          daemon=True) for f, a in stages]
        for t in self._threads:
            t.start()

    # -- stages (threads) ----------------------------------------------------------------------------

    def _guard(self, stage, args) -> None:
        try:
            stage(*args)
        except BaseException as e:  # noqa: BLE001  (re-raised on the consumer's thread)
            self._error = self._error or e
            self._stop.set()

    def _read(self, frames: Iterable[np.ndarray], paced: bool) -> None:
        """Decode (or capture); a file is played at its own frame rate, so frames arrive as from a camera."""
        q = self._queues[0]
        it = iter(frames)
        t0 = None
        try:
            for i, frame in enumerate(it):
                if self._stop.is_set():
                    break
                now = time.perf_counter()
                if t0 is None:
                    t0 = now
                    with self._lock:
                        self.stats.started = now
                if paced:
                    due = t0 + i / self.fps
                    if due > now:
                        time.sleep(due - now)
                    now = time.perf_counter()
                with self._lock:
                    self.stats.frames_in += 1
                q.put((i, now, frame))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # release the decoder or the camera now, not when the iterator is collected
        q.end()

    def _track(self) -> None:
        src, dst = self._queues[0], self._queues[1]
        while (item := src.get()) is not _STOP:
            i, arrived, frame = item
            before = len(self._driver.missing)
            t = time.perf_counter()
            points = self._driver.pose(frame).copy()
            self.stats.busy["landmarks"] += time.perf_counter() - t
            self.stats.tracked += 1
            if len(self._driver.missing) > before:
                with self._lock:
                    self.stats.missing += 1
            dst.put((i, arrived, points))
        dst.end()

    def _render(self) -> None:
        import torch

        if self._cpu:
            # Denormals off for this thread's whole life, before its first parallel op: OpenMP's workers copy
            # the floating-point mode of the thread that starts them, so a flag set later (as the renderer does
            # around G) reaches this thread but not its workers, and the trained photo G's denormal
            # activations ran 25x slower on them (measured 800 against 33 ms a 720 px frame on 2 cores).
            torch.set_flush_denormal(True)
        src, dst = self._queues[1], self._queues[2]
        while (item := src.get()) is not _STOP:
            i, arrived, points = item
            t = time.perf_counter()
            frame = self._driver.render(points)
            self.stats.busy["render"] += time.perf_counter() - t
            self.stats.rendered += 1
            dst.put((i, arrived, frame))
        dst.end()

    # -- the consumer (the caller's thread) ----------------------------------------------------------

    def __iter__(self) -> Iterator[LiveFrame]:
        return self

    def __next__(self) -> LiveFrame:
        if self._closed:
            raise StopIteration
        try:
            item = self._queues[2].get()
            if item is _STOP:
                err = self._error
                if err is None and self._writer is not None and self._last is not None:
                    while self.stats.written < self.stats.frames_in:  # input frames dropped at the very end
                        self._writer.write(self._last)
                        self.stats.written += 1
                self.close()
                if err is not None:
                    raise err
                raise StopIteration
            i, arrived, image = item
            now = time.perf_counter()
            frame = LiveFrame(i, image, arrived, now - arrived)
            with self._lock:
                self.stats.frames_out += 1
                self.stats.latencies.append(frame.latency)
                self.stats.last_out = now
            self._emit(frame)
            return frame
        except KeyboardInterrupt:
            self.close()  # keep what was recorded
            raise

    def _emit(self, frame: LiveFrame) -> None:
        if self._writer is not None:
            # one file frame per input frame: a dropped one repeats the last frame made, so the file keeps
            # the input's timing and its audio stays in sync
            while self.stats.written < frame.index:
                self._writer.write(self._last if self._last is not None else frame.image)
                self.stats.written += 1
            self._writer.write(frame.image)
            self.stats.written += 1
        self._last = frame.image
        if self._show:
            self._show_frame(frame)
        if self._bar is not None:
            self._bar.update(1)
            if frame.arrived - self._shown_at > 0.5:
                self._shown_at = frame.arrived
                self._bar.set_postfix(fps=f"{self.stats.fps:.1f}", latency=f"{1000 * frame.latency:.0f}ms",
                                      dropped=self.stats.dropped, refresh=False)

    def _open_window(self) -> bool:
        if not has_display():
            warnings.warn("no display here (DISPLAY / WAYLAND_DISPLAY not set): not showing a window", stacklevel=3)
            return False
        import cv2

        try:
            cv2.namedWindow(self.source, cv2.WINDOW_AUTOSIZE)
        except cv2.error as e:
            warnings.warn(f"OpenCV cannot open a window ({e.msg.strip() if hasattr(e, 'msg') else e}; "
                          "opencv-python-headless has no GUI): not showing one", stacklevel=3)
            return False
        return True

    def _show_frame(self, frame: LiveFrame) -> None:
        import cv2

        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        if self._overlay:
            text = f"{self.stats.fps:.1f} fps  {1000 * frame.latency:.0f} ms  {self.stats.dropped} dropped"
            cv2.putText(bgr, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 1, cv2.LINE_AA)
        cv2.imshow(self.source, bgr)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):  # Esc or q closes the window and stops
            raise KeyboardInterrupt

    # -- stopping ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every stage and finish the file with the frames made so far (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for t in self._threads:
            t.join()
        if self._bar is not None:
            self._bar.close()
        if self._show:
            import cv2

            cv2.destroyWindow(self.source)
        if self._writer is not None:
            if self.stats.written == 0:
                self._writer.abort()  # nothing made: no file
            else:
                if self._audio is not None:
                    # an early stop: the audio ends with the last frame written, not the driver
                    n = int(round(self.stats.written * self._audio_rate / self.fps))
                    self._writer.writer.audio = self._writer.writer.audio[:n]
                self._writer.close()

    def __enter__(self) -> "LiveRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None or issubclass(exc_type, (KeyboardInterrupt, GeneratorExit)):
            self.close()
        else:
            self._stop.set()
            for t in self._threads:
                t.join()
            if self._writer is not None:
                self._writer.abort(exc_type, exc, tb)
            self._closed = True
        return False

    def __del__(self):
        if not getattr(self, "_closed", True):
            self._stop.set()

    def run(self) -> LiveStats:
        """Consume the whole stream (for a file or a window); Ctrl-C stops it and keeps the file."""
        try:
            for _ in self:
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.close()
        return self.stats


def run_live(avatar: "Avatar", source, *, fps: float | None = None, out: str | os.PathLike | None = None,
             audio: bool = True, realtime: bool = True, max_frames: int | None = None, **options) -> LiveRun:
    """Drive ``avatar`` live from ``source`` and return the running :class:`LiveRun` (iterate it, or ``.run()``).

    source: a driver video path (played at its own frame rate, its audio copied into ``out``), a camera index
        or :class:`~puppeteer.drive.Camera`, or an iterable of RGB uint8 frames (then give ``fps``).
    fps: the input's frame rate (default: the file's or the camera's). out: an mp4 to write (stamped with
        ``Provenance.of(avatar)``; one frame per input frame, in sync with the audio). realtime: drop frames a
        stage cannot keep up with (a camera); False renders every frame. max_frames: stop after n input frames.
    options: ``into`` (the avatar's source image to paste into; default its crops), ``shot``, ``show``
        (a window, where a display exists), ``overlay`` (fps and latency drawn in the window), ``queue_size``
        (frames between two stages, default 2), ``crf``, ``progress`` (tqdm with fps, latency and drops in its
        postfix), and :func:`~puppeteer.drive.drive`'s options (``options``, ``smooth``, ``detector``,
        ``keyframe_interval``, ``reference_points``, ``multiple``).
    """
    import itertools

    from puppeteer.drive import Camera
    from reenact import io

    samples, rate, paced = None, 16000, False
    if isinstance(source, (str, os.PathLike)):
        info = io.probe(source)
        fps = fps or float(info.fps)
        name = str(source)
        if audio and info.has_audio and out is not None:
            rate = int(info.audio_rate or 16000)
            samples = io.read_audio(source, sample_rate=rate)
        frames, paced = io.read_frames(source), realtime  # a file plays at its own pace only in real time
    elif isinstance(source, (int, Camera)):
        cam = source if isinstance(source, Camera) else Camera(source)
        fps, name, frames = fps or cam.fps, f"camera {cam.index}", cam
    else:
        if fps is None:
            raise InputError("<frames>", "the frame rate of a frame iterator is not known", "pass fps=...")
        frames, name = source, options.pop("source", "<stream>")
    if max_frames is not None:
        frames = itertools.islice(frames, max_frames)
        if samples is not None:
            samples = samples[:int(round(max_frames * rate / fps))]
    return LiveRun(avatar, frames, fps, paced=paced, out=out, audio=samples, audio_rate=rate, realtime=realtime,
                   source=name, **options)
