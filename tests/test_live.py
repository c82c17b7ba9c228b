"""Live driving (puppeteer.live, `reenact live`) on CPU with the briefly trained `tiny` model and real clips:
frames in order and in sync with the driver's audio, a slow stage dropping frames instead of piling them up,
stopping mid-stream leaving a playable, stamped file; and the flow tracker's speed and jitter."""
from __future__ import annotations

import _thread
import signal
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from puppeteer.drive import LiveDriver, track_driver
from puppeteer.live import run_live
from puppeteer.measure import jitter
from reenact import io
from reenact.provenance.verify import verify

FRAMES = 40  # 1.6 s at 25 fps


@pytest.fixture(scope="module")
def avatar(tiny_checkpoint, portrait):
    from reenact import Reenactor

    return Reenactor.load(tiny_checkpoint, device="cpu").personalize([portrait], steps=0, progress=False)


@pytest.fixture(scope="module")
def photo(portrait) -> np.ndarray:
    return io.read_image(portrait)


@pytest.fixture(scope="module")
def driver(tmp_path_factory, speech_clip) -> Path:
    """The first FRAMES frames of a real speaker (GRID) with the audio over them."""
    info = io.probe(speech_clip)
    frames = list(io.read_frames(speech_clip, max_frames=FRAMES))
    audio = io.read_audio(speech_clip, 16000)[:round(FRAMES * 16000 / info.fps)]
    return io.write_video(tmp_path_factory.mktemp("live") / "driver.mp4", frames, info.fps, audio=audio,
                          audio_rate=16000, provenance=None)


def _stamped_and_playable(path: Path, frames: int) -> None:
    info = io.probe(path)
    assert info.num_frames == frames
    assert len(list(io.read_frames(path))) == frames
    v = verify(path)
    assert v.metadata is not None and v.metadata["synthetic"] is True
    assert v.c2pa is not None and v.watermark.detected


def test_a_file_driver_comes_out_in_order_and_in_sync_with_its_audio(avatar, driver, photo, tmp_path):
    out = tmp_path / "live.mp4"
    live = run_live(avatar, driver, out=out, into=photo, progress=False)  # played at its own 25 fps
    frames = list(live)
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[0] == 0  # increasing, no repeats
    assert all(f.image.shape == photo.shape for f in frames)
    assert all(0 < f.latency < 5 for f in frames)
    st = live.stats
    assert st.frames_in == FRAMES and st.frames_out + st.dropped == FRAMES and st.written == FRAMES
    # one file frame per driver frame at the driver's timestamps, and the driver's audio from time 0
    info = io.probe(out)
    assert (info.num_frames, info.fps, info.has_audio) == (FRAMES, 25.0, True)
    a, b = io.read_audio(driver, 16000), io.read_audio(out, 16000)
    assert abs(len(b) - len(a)) <= 1024  # AAC frame padding
    n = min(len(a), len(b)) - 400
    lags = {lag: float(a[200:200 + n] @ b[200 + lag:200 + lag + n]) for lag in range(-160, 161, 8)}
    assert max(lags, key=lags.get) == 0  # within half a millisecond: no shift against the video
    _stamped_and_playable(out, FRAMES)


def test_without_realtime_every_frame_is_rendered_in_order(avatar, driver):
    live = run_live(avatar, driver, realtime=False, progress=False)
    assert [f.index for f in live] == list(range(FRAMES))
    assert live.stats.dropped == 0


def test_a_slow_stage_drops_frames_and_memory_stays_bounded(avatar, driver, monkeypatch):
    base = list(io.read_frames(driver))
    render = LiveDriver.render

    def slow_render(self, points):
        time.sleep(0.1)  # 10 frames/s against a 50 frames/s camera
        return render(self, points)

    monkeypatch.setattr(LiveDriver, "render", slow_render)

    def camera(n=100, fps=50.0):
        t0 = time.perf_counter()
        for i in range(n):
            time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
            yield base[i % len(base)].copy()  # a new buffer per frame, as a capture device hands out

    tracemalloc.start()
    try:
        live = run_live(avatar, camera(), fps=50.0, queue_size=2, progress=False)
        out = list(live)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    st = live.stats
    assert st.frames_in == 100 and st.frames_out == len(out)
    assert st.dropped >= 50 and st.frames_out + st.dropped == 100  # every frame made or dropped, none lost
    assert st.peak_queued <= 2
    assert peak < 25 * base[0].nbytes  # a handful of frames in flight, not the 100 that arrived
    assert st.latency(95) < 0.6  # the queue never grows, so neither does the latency


def test_closing_the_iterator_mid_stream_leaves_a_playable_stamped_file(avatar, driver, photo, tmp_path):
    out = tmp_path / "closed.mp4"
    live = run_live(avatar, driver, out=out, into=photo, progress=False)
    it = iter(live)
    got = [next(it) for _ in range(10)]
    live.close()
    assert live.stats.written >= 10 and got[-1].index >= 9
    _stamped_and_playable(out, live.stats.written)
    info = io.probe(out)
    assert info.has_audio and io.read_audio(out, 16000).size <= (live.stats.written / 25 + 0.1) * 16000


def test_ctrl_c_mid_stream_leaves_a_playable_stamped_file(avatar, driver, photo, tmp_path):
    out = tmp_path / "interrupted.mp4"
    live = run_live(avatar, driver, out=out, into=photo, progress=False)
    def ctrl_c_once_frames_flow():  # Ctrl-C, delivered to the main thread, once 5 frames are out: a fixed
        t0 = time.perf_counter()    # delay lands before the first frame on a slow, busy machine
        while live.stats.frames_out < 5 and time.perf_counter() - t0 < 30:
            time.sleep(0.01)
        _thread.interrupt_main()

    # Python's own Ctrl-C handler, whatever an earlier test of the CLI left installed (interrupt_main does
    # nothing when SIGINT is not handled by Python's default handler)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=ctrl_c_once_frames_flow, daemon=True).start()
        stats = live.run()
    finally:
        signal.signal(signal.SIGINT, old)
    assert 0 < stats.written < FRAMES
    _stamped_and_playable(out, stats.written)


def test_cli_live_writes_the_file_and_explains_a_missing_display(tiny_checkpoint, avatar, driver, tmp_path,
                                                                  capsys, monkeypatch):
    from reenact.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    av = tmp_path / "me.safetensors"
    avatar.save(av)
    out = tmp_path / "cli.mp4"
    assert main(["live", str(av), "--driver", str(driver), "--out", str(out), "--show", "--device", "cpu",
                 "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "no display here" in cap.err and f"of {FRAMES} frames" in cap.out and "dropped" in cap.out
    assert io.probe(out).num_frames == FRAMES
    assert main(["live", str(av), "--driver", str(driver), "--show", "--device", "cpu"]) == 2
    assert "no --out file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- tracking

def test_flow_tracking_is_cheaper_than_checked_fits_and_as_steady(clip_512):
    from reenact.landmarks import create_detector
    from reenact.landmarks.live import LiveTracker

    det = create_detector("dlib")
    frames = list(io.read_frames(clip_512, max_frames=60))
    offline = track_driver(clip_512, det, max_frames=60, progress=False)  # keyframes + interpolated boxes
    runs = {}
    for flow in (True, False):
        tracker = LiveTracker(det, smooth=False, flow=flow)
        tracker(frames[0])  # the first, whole-frame detection is the same for both
        t = time.perf_counter()
        pts = [tracker(f) for f in frames[1:]]
        runs[flow] = ((time.perf_counter() - t) / len(pts), pts, tracker)
    sec, pts, tracker = runs[True]
    assert all(p is not None for p in pts) and tracker.detections == 1  # keyframes found in the crop
    assert sec < 0.7 * runs[False][0], (sec, runs[False][0])
    j = jitter(np.stack(pts))
    assert j <= 1.2 * jitter(offline.points[1:]), (j, jitter(offline.points[1:]))
    assert np.abs(np.stack(pts) - offline.points[1:]).mean() < 2.0  # pixels at 512 px
    smooth = LiveTracker(det, smooth=True)
    assert jitter(np.stack([smooth(f) for f in frames])) < 0.5 * jitter(offline.points)


def test_record_live_encodes_on_a_thread_and_keeps_the_file_on_ctrl_c(avatar, driver, photo, tmp_path):
    from puppeteer.drive import record_live

    def frames():
        for i, f in enumerate(io.read_frames(driver)):
            if i == 12:
                raise KeyboardInterrupt
            yield f

    out = tmp_path / "rec.mp4"
    live = record_live(avatar, frames(), out, 25.0, progress=False, into=photo)
    assert live.count == 12
    _stamped_and_playable(out, 12)
