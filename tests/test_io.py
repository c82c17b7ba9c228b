"""reenact.io on real clips from ../shared/data: probing, streaming, round trips, A/V sync, bad inputs, images."""
from __future__ import annotations

import csv
import inspect
import os
import struct
import subprocess
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reenact import io
from reenact.errors import InputError, MediaError

av = pytest.importorskip("av")


# ------------------------------------------------------------------------------------------ helpers


def _manifest_row(data_dir: Path, clip: Path) -> dict:
    with open(data_dir / "MANIFEST.tsv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}
    return rows[clip.relative_to(data_dir).as_posix()]


def _lag(x: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Lag (samples) maximising the cross-correlation of x and y (positive: y is late), and its normalised peak."""
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    size = 1 << (2 * n - 1).bit_length()
    c = np.fft.irfft(np.conj(np.fft.rfft(x, size)) * np.fft.rfft(y, size), size)
    k = int(np.argmax(c))
    lag = k if k < size // 2 else k - size
    return lag, float(c[k] / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))


def _write_m4a(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    c = av.open(str(path), "w")
    s = c.add_stream("aac", rate=rate)
    s.layout = "mono"
    for i in range(0, len(samples), 1024):
        fr = av.AudioFrame.from_ndarray(samples[None, i:i + 1024].astype(np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = rate, i
        for p in s.encode(fr):
            c.mux(p)
    for p in s.encode(None):
        c.mux(p)
    c.close()


def _png(w: int, h: int, depth: int, color: int, rows: np.ndarray | None = None) -> bytes:
    """A PNG with a given IHDR; rows (uint8/uint16) may be omitted to declare a size without pixel data."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"\x00" * 8 if rows is None else b"".join(b"\x00" + r.astype(">u2" if depth == 16 else "u1").tobytes()
                                                     for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def clip_frames(talking_clip):
    frames, fps = io.read_video(talking_clip)
    return frames, fps


@pytest.fixture(scope="module")
def small_portrait(portrait) -> np.ndarray:
    """A non-square RGB crop (H=48, W=64) of a real portrait: orientation mistakes change its shape."""
    img = io.read_image(portrait)
    return np.asarray(Image.fromarray(img).resize((64, 48), Image.BILINEAR))


# ------------------------------------------------------------------------------------------- reading


def test_import_is_cheap():
    import subprocess

    code = "import sys, reenact.io; print('av' in sys.modules, 'PIL' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def test_probe_and_read_real_clip(talking_clip, data_dir, clip_frames):
    row = _manifest_row(data_dir, talking_clip)
    info = io.probe(talking_clip)
    assert (info.width, info.height) == (int(row["width"]), int(row["height"]))
    assert info.fps == pytest.approx(float(row["fps"]))
    assert info.duration == pytest.approx(float(row["seconds"]), abs=0.05)
    assert info.rotation == 0 and info.has_audio and info.audio_rate == 16000
    frames, fps = clip_frames
    assert fps == info.fps
    assert frames.shape == (info.num_frames, info.height, info.width, 3) and frames.dtype == np.uint8
    assert info.num_frames == pytest.approx(info.duration * info.fps, abs=1)
    assert frames.std() > 10 and np.abs(np.diff(frames[:10].astype(np.int16), axis=0)).mean() > 0.1  # real, moving


def test_step_max_frames_and_lazy_streaming(talking_clip, clip_frames):
    frames, _ = clip_frames
    sub = list(io.read_frames(talking_clip, start=3, step=4, max_frames=5))
    assert len(sub) == 5
    for got, want in zip(sub, frames[3:23:4]):
        np.testing.assert_array_equal(got, want)
    assert len(list(io.read_frames(talking_clip, step=10))) == len(frames[::10])
    assert io.read_video(talking_clip, step=3, max_frames=4)[0].shape[0] == 4
    assert list(io.read_frames(talking_clip, max_frames=0)) == []
    it = io.read_frames(talking_clip)
    assert inspect.isgenerator(it)
    np.testing.assert_array_equal(next(it), frames[0])
    assert inspect.getgeneratorstate(it) == inspect.GEN_SUSPENDED  # one frame produced, the rest not yet
    it.close()
    with pytest.raises(ValueError):
        io.read_frames(talking_clip, step=0)


def test_rotation_metadata_is_honoured(tmp_path):
    path = tmp_path / "rot.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
    s.set_display_rotation(90)  # display = coded frame turned 90 degrees counter-clockwise
    coded = np.zeros((32, 64, 3), np.uint8)
    coded[:8, :8] = 255  # marker in the coded top-left corner
    for _ in range(3):
        for p in s.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    info = io.probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    frames = list(io.read_frames(path))
    assert len(frames) == 3 and frames[0].shape == (64, 32, 3)
    assert frames[0][-4, 4].min() > 200 and frames[0][4, 4].max() < 50  # top-left went to bottom-left


def test_read_audio_wav_and_aac(data_dir, talking_clip):
    wav = sorted((data_dir / "audio").glob("*.wav"))[0]
    import wave

    with wave.open(str(wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    a = io.read_audio(wav)
    assert a.dtype == np.float32 and a.ndim == 1 and len(a) == pytest.approx(seconds * 16000, abs=1)
    assert 0.01 < np.abs(a).max() <= 1.0
    a8 = io.read_audio(wav, sample_rate=8000)
    assert len(a8) == pytest.approx(seconds * 8000, abs=2)
    lag, peak = _lag(a[::2], a8)
    assert abs(lag) <= 2 and peak > 0.9  # same signal at half the rate

    def channels(p: Path) -> int:
        try:
            with wave.open(str(p)) as w:
                return w.getnchannels() if w.getsampwidth() == 2 else 0
        except wave.Error:  # WAVE_FORMAT_EXTENSIBLE before Python 3.12
            return 0

    stereo = [p for p in sorted((data_dir / "audio").glob("*.wav")) if channels(p) == 2]
    if stereo:
        s = io.read_audio(stereo[0])
        with wave.open(str(stereo[0])) as w:
            raw = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768.0
        np.testing.assert_allclose(s, raw.mean(axis=1), atol=1e-6)  # channel mean, not FFmpeg's 1/sqrt(2) mix

    c = io.read_audio(talking_clip)
    assert c.dtype == np.float32 and c.ndim == 1
    assert len(c) / 16000 == pytest.approx(io.probe(talking_clip).duration, abs=0.2)
    assert np.sqrt(np.mean(c ** 2)) > 0.005  # speech, not silence


# ------------------------------------------------------------------------------------------- writing


def test_write_read_roundtrip_with_audio_in_sync(tmp_path, talking_clip, clip_frames):
    frames, fps = clip_frames
    frames = frames[:50]
    audio = io.read_audio(talking_clip)[: int(len(frames) / fps * 16000)]
    out = tmp_path / "sub" / "rt.mp4"
    io.write_video(out, frames, fps, audio=audio, audio_rate=16000)
    assert [p.name for p in out.parent.iterdir()] == ["rt.mp4"]  # no temp file left
    info = io.probe(out)
    assert (info.num_frames, info.fps, info.width, info.height) == (50, fps, frames.shape[2], frames.shape[1])
    assert info.has_audio and info.audio_rate == 16000
    back = io.read_audio(out)
    assert abs(len(back) / 16000 - info.duration) < 1 / fps
    lag, peak = _lag(audio, back)
    assert abs(lag) <= 16000 / fps and peak > 0.9
    got, got_fps = io.read_video(out)
    assert got.shape == frames.shape and got_fps == fps
    assert np.abs(got.astype(np.int16) - frames).mean() < 3.0  # crf 18


def test_av_sync_flash_and_click(tmp_path):
    """A white frame and a click written at the same instant are read back at the same instant."""
    fps, sr, n, k = 25, 16000, 40, 23
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    frames[k] = 255
    audio = np.zeros(n * sr // fps, np.float32)
    t = k * sr // fps
    audio[t:t + 80] = np.hanning(80) * 0.9
    out = tmp_path / "sync.mp4"
    io.write_video(out, frames, fps, audio=audio, audio_rate=sr)
    got, _ = io.read_video(out)
    back = io.read_audio(out, sr)
    flash = int(np.argmax(got.reshape(n, -1).mean(axis=1)))
    click = int(np.argmax(np.abs(back))) - 40
    assert flash == k
    assert abs(click / sr - flash / fps) < 1 / fps


def test_odd_size_and_fractional_fps(tmp_path, small_portrait):
    frames = np.stack([np.roll(small_portrait, i, axis=1)[:33, :47] for i in range(12)])  # real, moving
    out = tmp_path / "odd.mp4"
    with io.VideoWriter(out, 29.97, crf=10, preset="ultrafast") as w:
        for f in frames:
            w.write(f)
    info = io.probe(out)
    assert (info.width, info.height) == (48, 34)  # padded up to even
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert info.duration == pytest.approx(12 / 29.97, abs=1e-3)
    got, _ = io.read_video(out)
    assert len(got) == 12
    assert np.abs(got[:, :33, :47].astype(np.int16) - frames).mean() < 3
    np.testing.assert_allclose(got[:, 33].astype(float), got[:, 32].astype(float), atol=12)  # edge replicated
    io.write_video(tmp_path / "ntsc.mp4", frames[:3, :32, :46], Fraction(30000, 1001))
    assert io.probe(tmp_path / "ntsc.mp4").fps == pytest.approx(30000 / 1001, abs=1e-4)


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with io.VideoWriter(out, 25, audio=np.zeros(16000, np.float32)) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        with io.VideoWriter(out, 25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            w.write(np.zeros((18, 16, 3), np.uint8))  # size change
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames"):
        with io.VideoWriter(out, 25):
            pass
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failed overwrite untouched
    io.write_image(tmp_path / "keep.png", np.full((4, 4, 3), 7, np.uint8))
    before = (tmp_path / "keep.png").read_bytes()
    with pytest.raises(KeyError):
        with io.atomic_path(tmp_path / "keep.png") as tmp:
            tmp.write_bytes(b"half")
            raise KeyError("x")
    assert (tmp_path / "keep.png").read_bytes() == before and len(list(tmp_path.iterdir())) == 1



def test_atomic_write_onto_a_folder_names_the_folder(tmp_path):
    """Not the hidden temp file that os.replace would name."""
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(InputError, match=rf"^{tmp_path}/out\.mp4: is a folder"):
        with io.atomic_path(tmp_path / "out.mp4") as tmp:
            tmp.write_bytes(b"x")
    with pytest.raises(InputError, match=r"out\.mp4: is a folder"):
        io.write_video(tmp_path / "out.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_stale_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / f".out.{dead}-0123456789ab.tmp.mp4", tmp_path / f"..out.{dead}-0123456789ab.tmp.c2pa.mp4"]
    live = tmp_path / f".out.{os.getppid()}-0123456789ab.tmp.mp4"  # a running writer (our parent)
    others = [tmp_path / f".other.{dead}-0123456789ab.tmp.mp4", tmp_path / f".out.{dead}-0123456789ab.tmp.mkv",
              tmp_path / "out.tmp.mp4"]
    for p in stale + [live] + others:
        p.write_bytes(b"x")
    io.write_video(tmp_path / "out.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25, provenance=None)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"out.mp4", live.name, *(p.name for p in others)}


def test_image_arrays_are_read_like_the_same_pictures_in_files(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    for arr, mode in ((gray, "L"), (rgba, "RGBA"), (gray[..., None].repeat(2, 2), "LA")):
        Image.fromarray(arr, mode).save(tmp_path / f"{mode}.png")
        assert np.array_equal(io.as_rgb(arr), io.read_image(tmp_path / f"{mode}.png")), mode
    with pytest.raises(InputError, match=r"^<photo>: empty image \(0x0 pixels\)"):
        io.as_rgb(np.zeros((0, 0, 3), np.uint8), "<photo>")
    with pytest.raises(InputError, match="expected a uint8 image array, got float32"):
        io.as_rgb(np.zeros((4, 4, 3), np.float32))


def test_a_text_file_as_landmarks_is_refused_without_suggesting_pickles(tmp_path):
    notes = tmp_path / "points.npy"
    notes.write_text("1 2\n3 4\n")
    with pytest.raises(InputError) as e:
        io.load_array(notes, "landmarks")
    assert str(e.value).startswith(f"{notes}: not a .npy or .npz landmarks file") and "pickle" not in str(e.value)


# ---------------------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory, talking_clip, portrait, data_dir) -> dict[str, tuple[Path, str]]:
    d = tmp_path_factory.mktemp("bad")
    text = d / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    raw = talking_clip.read_bytes()
    half = d / "half.mp4"
    half.write_bytes(raw[: len(raw) // 2])  # moov is at the end of these clips: index lost
    fast = d / "fast.mp4"
    io.write_video(fast, np.random.default_rng(1).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), 25)
    cut = d / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])  # faststart: index intact, data cut
    m4a = d / "speech.m4a"
    _write_m4a(m4a, io.read_audio(talking_clip)[:16000])
    wav = sorted((data_dir / "audio").glob("*.wav"))[0]
    return {"missing": (d / "nope.mp4", "no such file"), "text": (text, "not a readable media"),
            "jpeg": (portrait, "still image"), "wav": (wav, "audio-only"), "m4a": (m4a, "audio-only"),
            "half": (half, "moov"), "cut": (cut, "truncated")}


@pytest.mark.parametrize("kind", ["missing", "text", "jpeg", "wav", "m4a", "half", "cut"])
def test_bad_video_inputs(bad_videos, kind):
    path, words = bad_videos[kind]
    with pytest.raises(MediaError, match=words) as e:
        list(io.read_frames(path))
    assert path.name in str(e.value) and isinstance(e.value, ValueError)
    if kind != "cut":  # a cut file still has a valid index and first frame: probe cannot tell
        with pytest.raises(MediaError, match=words):
            io.probe(path)


def test_read_audio_errors(bad_videos, tmp_path):
    silent = tmp_path / "silent.mp4"
    io.write_video(silent, np.zeros((3, 16, 16, 3), np.uint8), 25)
    for path, words in [(silent, "no audio stream"), bad_videos["missing"], bad_videos["text"]]:
        with pytest.raises(MediaError, match=words) as e:
            io.read_audio(path)
        assert path.name in str(e.value)
    assert len(io.read_audio(bad_videos["m4a"][0])) == 16000


def test_opencv_fallback_without_pyav(monkeypatch, talking_clip, clip_frames, bad_videos, data_dir):
    """Our GPU machine has OpenCV but no PyAV: frames (and wav audio) must still read, errors still name files."""
    frames, fps = clip_frames
    ref_audio = io.read_audio(sorted((data_dir / "audio").glob("*.wav"))[0])
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    info = io.probe(talking_clip)
    assert (info.num_frames, info.fps, info.width, info.height) == (len(frames), fps, frames.shape[2], frames.shape[1])
    got = list(io.read_frames(talking_clip, start=2, step=3, max_frames=6))
    assert len(got) == 6 and got[0].dtype == np.uint8
    assert np.abs(np.stack(got).astype(np.int16) - frames[2:20:3]).mean() < 2.0  # same decode, maybe other yuv->rgb
    for kind in ("missing", "text", "jpeg", "wav", "half"):
        path, _ = bad_videos[kind]
        with pytest.raises(MediaError) as e:
            list(io.read_frames(path))
        assert path.name in str(e.value)
    a = io.read_audio(sorted((data_dir / "audio").glob("*.wav"))[0])
    np.testing.assert_allclose(a, ref_audio, atol=1e-6)


# -------------------------------------------------------------------------------------------- images


def test_read_image_real_portrait(portrait):
    img = io.read_image(portrait)
    with Image.open(portrait) as im:
        w, h = im.size
    assert img.shape == (h, w, 3) and img.dtype == np.uint8 and img.std() > 10


def test_read_image_modes(tmp_path, small_portrait):
    rgb = small_portrait
    base = Image.fromarray(rgb)

    def check(name: str, im: Image.Image, **kw) -> np.ndarray:
        p = tmp_path / name
        im.save(p, **kw)
        out = io.read_image(p)
        assert out.shape == (48, 64, 3) and out.dtype == np.uint8, name
        return out

    gray = np.asarray(base.convert("L"))
    g = check("gray.png", base.convert("L"))
    np.testing.assert_array_equal(g, np.repeat(gray[..., None], 3, 2))

    rgba = np.dstack([rgb, np.full((48, 64), 255, np.uint8)])
    rgba[:, :20, 3] = 0      # transparent -> white
    rgba[:, 20:30, 3] = 128  # half -> halfway to white
    r = check("rgba.png", Image.fromarray(rgba))
    assert (r[:, :20] == 255).all()
    np.testing.assert_array_equal(r[:, 30:], rgb[:, 30:])
    half = np.rint(rgb[:, 20:30] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(r[:, 20:30] - half).max() <= 1

    la = Image.fromarray(np.dstack([gray, rgba[..., 3]]), "LA")
    assert (check("la.png", la)[:, :20] == 255).all()

    pal = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    p = check("pal.png", pal)
    np.testing.assert_array_equal(p, np.asarray(pal.convert("RGB")))
    pal_t = pal.copy()
    idx = int(np.asarray(pal_t)[0, 0])
    assert (check("pal_t.png", pal_t, transparency=idx)[np.asarray(pal_t) == idx] == 255).all()

    g16 = gray.astype(np.uint16) * 257 + 100  # genuinely 16-bit values
    for name in ("g16.png", "g16.tif"):
        out = check(name, Image.fromarray(g16))
        np.testing.assert_array_equal(out[..., 0], np.rint(g16 / 257).astype(np.uint8))
    (tmp_path / "rgb16.png").write_bytes(_png(64, 48, 16, 2, rgb.astype(np.uint16).reshape(48, 64 * 3) * 257))
    assert np.abs(io.read_image(tmp_path / "rgb16.png").astype(int) - rgb).max() <= 1

    c = check("cmyk.jpg", base.convert("CMYK"), quality=95)
    assert np.abs(c.astype(int) - rgb).mean() < 8


@pytest.mark.parametrize("orientation,turn", [(3, 2), (6, -1), (8, 1)])
def test_read_image_exif_orientation(tmp_path, small_portrait, orientation, turn):
    # the file stores the pixels turned the other way; the EXIF tag says how to turn them back upright
    upright = small_portrait
    stored = np.ascontiguousarray(np.rot90(upright, -turn))
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(p, exif=exif, quality=95)
    out = io.read_image(p)
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() < 4


def test_read_image_too_large_refused_quickly(tmp_path):
    for w, h in [(100_000, 100_000), (8000, 8000)]:  # beyond Pillow's bomb limit, and beyond ours only
        p = tmp_path / f"huge{w}.png"
        p.write_bytes(_png(w, h, 8, 2))  # declares the size, holds 8 bytes of pixels
        t = time.perf_counter()
        with pytest.raises(InputError, match="too large") as e:
            io.read_image(p)
        assert time.perf_counter() - t < 0.5
        assert p.name in str(e.value) and "50000000" in str(e.value)
    assert "8000x8000" in str(e.value)
    small = tmp_path / "small.png"
    small.write_bytes(_png(300, 200, 8, 2))
    with pytest.raises(InputError, match="300x200 = 60000 pixels, limit 1000"):
        io.read_image(small, max_pixels=1000)
    with pytest.raises(MediaError, match="corrupt or truncated"):  # under the limit: decoded, data missing
        io.read_image(small)


def test_bad_images(tmp_path, portrait):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(portrait.read_bytes()[:3000])
    text = tmp_path / "text.png"
    text.write_text("no pixels here")
    for path, words in [(tmp_path / "nope.jpg", "no such file"), (cut, "truncated"), (text, "not a readable image")]:
        with pytest.raises(MediaError, match=words) as e:
            io.read_image(path)
        assert path.name in str(e.value)


def test_write_image_roundtrip(tmp_path, small_portrait):
    io.write_image(tmp_path / "a.png", small_portrait)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), small_portrait)
    io.write_image(tmp_path / "b.jpg", small_portrait)
    assert np.abs(io.read_image(tmp_path / "b.jpg").astype(int) - small_portrait).mean() < 4
    with pytest.raises(ValueError):
        io.write_image(tmp_path / "c.xyz", small_portrait)
    with pytest.raises(ValueError):
        io.write_image(tmp_path / "d.png", small_portrait.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg"]
