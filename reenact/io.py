"""Media input/output: probe, stream and write videos, read audio, read and write images.

Conventions: frames and images are RGB uint8 ``(H, W, 3)``; audio is float32 mono ``(N,)`` in ``[-1, 1]``.
Videos are decoded with PyAV (imported lazily so ``import reenact.io`` stays cheap); where PyAV is not
installed, frames are read with OpenCV instead (no audio then, except PCM ``.wav`` files). Images use Pillow.

Every problem with an input file raises :class:`reenact.errors.MediaError` (an ``InputError`` and
``ValueError``) whose message starts with the file name. Every writer is atomic: it writes to a temporary
file beside the destination and renames it on success, so a failure never leaves a half-written file.

Synthetic output is stamped by the writers (``provenance=``, see :mod:`reenact.provenance`): a watermark in the
pixels, a provenance record in the container and, where ``c2pa-python`` is installed, a signed C2PA manifest,
all inside the same atomic write.
"""
from __future__ import annotations

import math
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from reenact.errors import InputError, MediaError
from reenact.filekind import still_image_kind as _still_image_kind
from reenact.options import OutputOptions

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as _PILImage

PathLike = str | os.PathLike

__all__ = [
    "VideoInfo", "probe", "read_frames", "read_video", "read_audio", "VideoWriter", "BackgroundWriter", "write_video",
    "read_image", "write_image", "as_rgb", "load_array", "atomic_path", "check_writable", "remove_stale_temp_files",
]

# A decode that stops below this fraction of the container's declared frame count (and misses at least
# _TRUNCATED_MIN_MISSING frames) is reported as truncated: declared counts are exact for mp4/mov, and a
# few frames of slack absorbs edit lists and counts rounded by other containers.
_TRUNCATED_FRACTION = 0.9
_TRUNCATED_MIN_MISSING = 3


# --------------------------------------------------------------------------------------------- helpers


# Temporary files of atomic writes are named ``.<stem>.<pid>-<12 hex>.tmp<suffix>`` (a C2PA signing step adds
# ``.<that stem>.c2pa<suffix>``): the writer's process id lets a later write of the same file tell a stranded
# temp file (its process died: kill -9, power loss) from one another process is still writing.
_TEMP_RE = r"\.?\.{stem}\.(\d+)-[0-9a-f]{{12}}\.tmp(?:\.c2pa)?{suffix}"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_files(path: PathLike) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``path`` left beside it (their process is gone);
    returns them. Files of writers still running, and ``path`` itself, are left alone."""
    import re  # noqa: PLC0415

    path = Path(path)
    pattern = re.compile(_TEMP_RE.format(stem=re.escape(path.stem), suffix=re.escape(path.suffix)))
    removed = []
    try:
        candidates = list(path.parent.glob(f"*.tmp*{path.suffix}"))
    except OSError:
        return removed
    for p in candidates:
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not _process_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def check_writable(path: PathLike) -> Path:
    """Check, before any work, that a file can be written at ``path``: not a folder, and its folder (or the
    nearest existing one above it, where the missing ones will be made) is a folder this process can write in.
    Raises InputError naming the path and the problem; also removes stale temporary files of ``path``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; give the name of a file to write (in it, or elsewhere)")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(folder, "is not a folder, so nothing can be written under it")
    remove_stale_temp_files(path)
    # Write a probe rather than trust os.access: root passes access() on read-only folders, network
    # file systems answer it wrongly, and a read-only mount only shows when writing.
    probe = _temp_path(folder / path.name)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise InputError(folder, f"cannot write in this folder ({e.strerror or e})") from None
    os.close(fd)
    probe.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, delete it on error.

    The temporary name keeps the suffix of ``path`` (writers that pick a format by extension still work)
    and is hidden (leading dot). Missing parent folders are created. Writing to the temporary path is the
    caller's job; if the body raises (also KeyboardInterrupt, and SIGTERM where the CLI turns it into one),
    nothing is left behind and an existing ``path`` is untouched. Temporary files stranded by a killed
    process are removed by the next write of the same ``path``. Raises InputError when ``path`` is a folder
    or its folder cannot be written.
    """
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name rather than mkstemp: mkstemp creates the file 0600, which the rename would keep.
    tmp = _temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def _import_av():
    try:
        import av  # noqa: PLC0415  (lazy on purpose: importing av loads FFmpeg)
    except ImportError:
        return None
    return av


def _check_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "no such file")
    if path.is_dir():
        raise MediaError(path, "is a directory, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return path


def _mp4_box_problem(path: Path) -> str | None:
    """For an ISO-BMFF file (mp4/mov/m4a), say what is structurally wrong with its top-level boxes."""
    try:
        size_total = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 8 or head[4:8] != b"ftyp":
                return None  # not ISO-BMFF: nothing to say
            pos, seen = 0, set()
            while pos + 8 <= size_total:
                fh.seek(pos)
                hdr = fh.read(16)
                size, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8]
                if size == 1:
                    size = int.from_bytes(hdr[8:16], "big")
                elif size == 0:
                    size = size_total - pos
                if size < 8:
                    return "corrupt mp4 box structure"
                seen.add(kind)
                if pos + size > size_total:
                    what = kind.decode("latin1")
                    if b"moov" not in seen:
                        return f"truncated mp4: '{what}' box cut short and moov atom (the index) missing"
                    return f"truncated mp4: '{what}' box cut short"
                pos += size
            if b"moov" not in seen:
                return "incomplete mp4: moov atom (the index) missing, the file was probably cut or not finalised"
    except OSError:
        return None
    return None


def _open_av(av, path: Path):
    """Open ``path`` with PyAV, turning FFmpeg errors into MediaError."""
    try:
        return av.open(str(path), "r")
    except FileNotFoundError as e:  # av.error.FileNotFoundError subclasses it
        raise MediaError(path, "no such file") from e
    except PermissionError as e:
        raise MediaError(path, "permission denied") from e
    except (av.error.FFmpegError, OSError, ValueError) as e:
        problem = _mp4_box_problem(path)
        if problem is None:
            problem = f"not a readable media file (unrecognised format or corrupt data: {e})"
        raise MediaError(path, problem) from e


def _video_stream(container, path: Path):
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        raise MediaError(path, f"is a still image ({container.format.name}), not a video",
                         "use read_image for images")
    if not container.streams.video:
        if container.streams.audio:
            raise MediaError(path, "audio-only file, no video stream")
        raise MediaError(path, "no video stream")
    return container.streams.video[0]


def _rotation_k(rotation_ccw: float) -> int:
    """Number of counter-clockwise quarter turns (np.rot90's k) for a display rotation in degrees."""
    return int(round(rotation_ccw / 90.0)) % 4


def _stream_rotation_tag(stream) -> int | None:
    """Legacy ``rotate`` metadata tag (clockwise degrees) as counter-clockwise quarter turns."""
    tag = stream.metadata.get("rotate")
    if tag is None:
        return None
    try:
        return _rotation_k(-float(tag))
    except ValueError:
        return None


def _frame_k(frame, stream) -> int:
    # FFmpeg attaches the container display matrix to decoded frames; frame.rotation is its
    # counter-clockwise angle. Older muxers only wrote a clockwise "rotate" tag.
    k = _rotation_k(frame.rotation or 0)
    if k == 0:
        k = _stream_rotation_tag(stream) or 0
    return k


def _frame_rate(stream, path: Path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate:
        return Fraction(rate)
    if stream.frames and stream.duration and stream.time_base:
        return Fraction(stream.frames) / (stream.duration * stream.time_base)
    raise MediaError(path, "unknown frame rate")


def _too_short(decoded: int, declared: int) -> bool:
    return declared > 0 and decoded < _TRUNCATED_FRACTION * declared and declared - decoded >= _TRUNCATED_MIN_MISSING


def _check_read_args(start: int, step: int, max_frames: int | None) -> None:
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")


# ------------------------------------------------------------------------------------------ video in


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file.

    ``width``/``height`` are the display size, i.e. after ``rotation`` (counter-clockwise degrees, one of
    0/90/180/270, that :func:`read_frames` applies to the coded frames). ``num_frames`` is exact when the
    container stores it (mp4/mov do), else ``round(duration * fps)``. ``audio_rate`` is None without audio.
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    rotation: int
    has_audio: bool
    audio_rate: int | None


def probe(path: PathLike) -> VideoInfo:
    """Describe a video file without reading it all (decodes one frame to learn the rotation).

    Raises MediaError naming the file when it is missing, not a video, audio-only or has no decodable frame.
    Only the index and the first frame are read, so a file whose data is cut after a valid index probes
    fine; :func:`read_frames` raises "truncated" at the cut.
    """
    path = _check_file(path)
    av = _import_av()
    if av is None:
        return _probe_cv2(path)
    kind = _still_image_kind(path)
    if kind:
        raise MediaError(path, f"is a still image ({kind}), not a video", "use read_image for images")
    container = _open_av(av, path)
    try:
        stream = _video_stream(container, path)
        fps = _frame_rate(stream, path)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        num_frames = int(stream.frames) if stream.frames else int(round(duration * float(fps)))
        if not duration and num_frames:
            duration = num_frames / float(fps)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise MediaError(path, f"corrupt video: cannot decode the first frame ({e})") from e
        if first is None:
            raise MediaError(path, "no decodable video frames")
        k = _frame_k(first, stream)
        w, h = first.width, first.height
        if k % 2:
            w, h = h, w
        audio = container.streams.audio
        return VideoInfo(path=path, width=w, height=h, fps=float(fps), num_frames=num_frames,
                         duration=duration, rotation=90 * k, has_audio=bool(audio),
                         audio_rate=int(audio[0].rate) if audio and audio[0].rate else None)
    finally:
        container.close()


def read_frames(path: PathLike, start: int = 0, step: int = 1,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream the frames of a video as RGB uint8 ``(H, W, 3)`` arrays, rotated for display.

    Yields frames ``start, start + step, ...`` (0-based decode order), at most ``max_frames`` of them. Frames
    are decoded one at a time (multithreaded), never the whole file; skipped frames are decoded but not
    converted. The file is opened and checked at call time, so a bad file raises MediaError here rather than
    at the first ``next``; a file cut mid-stream raises MediaError("truncated ...") once the decodable frames
    are exhausted (the frames before the cut are yielded first). Without PyAV, OpenCV reads the frames.
    """
    _check_read_args(start, step, max_frames)
    path = _check_file(path)
    kind = _still_image_kind(path)
    if kind:
        raise MediaError(path, f"is a still image ({kind}), not a video", "use read_image for images")
    av = _import_av()
    if av is None:
        return _read_frames_cv2(path, start, step, max_frames)
    container = _open_av(av, path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
    except BaseException:
        container.close()
        raise
    return _iter_av(av, container, stream, path, start, step, max_frames)


def _iter_av(av, container, stream, path: Path, start: int, step: int,
             max_frames: int | None) -> Iterator[np.ndarray]:
    declared = int(stream.frames or 0)
    decoded = 0
    k = None
    try:
        if max_frames == 0:
            return
        out = 0
        try:
            for frame in container.decode(stream):
                idx = decoded
                decoded += 1
                if k is None:
                    k = _frame_k(frame, stream)
                if idx < start or (idx - start) % step:
                    continue
                img = frame.to_ndarray(format="rgb24")
                if k:
                    img = np.ascontiguousarray(np.rot90(img, k))
                yield img
                out += 1
                if max_frames is not None and out >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise MediaError(path, f"truncated or corrupt video: decoding failed after {decoded} of "
                                   f"{declared or '?'} frames ({e})") from e
        _check_decoded(path, decoded, declared, "no decodable video frames")
    finally:
        container.close()


def _check_decoded(path: Path, decoded: int, declared: int, empty: str) -> None:
    """Raise when nothing, or far fewer frames than the container declares, could be decoded."""
    if decoded == 0:
        raise MediaError(path, empty)
    if _too_short(decoded, declared):
        raise MediaError(path, f"truncated video: decoded {decoded} frames, the container declares {declared}")


def _cv2_open(path: Path):
    import cv2  # noqa: PLC0415

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise MediaError(path, "not a readable video (OpenCV cannot open it)")
    return cv2, cap


def _probe_cv2(path: Path) -> VideoInfo:
    kind = _still_image_kind(path)
    if kind:
        raise MediaError(path, f"is a still image ({kind}), not a video", "use read_image for images")
    cv2, cap = _cv2_open(path)
    try:
        ok, first = cap.read()
        if not ok or first is None:
            raise MediaError(path, "no decodable video frames (audio-only or not a video)")
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        rot = float(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0.0)  # clockwise, like the rotate tag
        h, w = first.shape[:2]  # OpenCV auto-rotates, so this is already the display size
        return VideoInfo(path=path, width=w, height=h, fps=fps, num_frames=n,
                         duration=n / fps if fps else 0.0, rotation=90 * _rotation_k(-rot),
                         has_audio=False, audio_rate=None)
    finally:
        cap.release()


def _read_frames_cv2(path: Path, start: int, step: int, max_frames: int | None) -> Iterator[np.ndarray]:
    cv2, cap = _cv2_open(path)
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return _iter_cv2(cv2, cap, path, start, step, max_frames, declared)


def _iter_cv2(cv2, cap, path: Path, start: int, step: int, max_frames: int | None,
              declared: int) -> Iterator[np.ndarray]:
    decoded = out = 0
    try:
        if max_frames == 0:
            return
        while True:
            idx = decoded
            wanted = idx >= start and (idx - start) % step == 0
            # grab() decodes without the BGR conversion, so skipped frames cost less
            if not cap.grab():
                break
            decoded += 1
            if not wanted:
                continue
            ok, bgr = cap.retrieve()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            out += 1
            if max_frames is not None and out >= max_frames:
                return
        _check_decoded(path, decoded, declared, "no decodable video frames (audio-only or not a video)")
    finally:
        cap.release()


def read_video(path: PathLike, step: int = 1, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Read a whole video: ``(frames (T, H, W, 3) uint8 RGB, fps)``.

    ``fps`` is the file's frame rate (not divided by ``step``). Loads everything into memory: prefer
    :func:`read_frames` for long videos.
    """
    info = probe(path)
    frames = list(read_frames(path, step=step, max_frames=max_frames))
    if not frames:
        return np.empty((0, info.height, info.width, 3), np.uint8), info.fps
    return np.stack(frames), info.fps


# ------------------------------------------------------------------------------------------ audio in


def read_audio(path: PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read the first audio stream of any container (mp4, m4a, wav, mp3, ...) as float32 mono ``(N,)``.

    Channels are averaged ((L + R) / 2) and the signal resampled to ``sample_rate`` with FFmpeg's
    resampler. When the file also has video, sample 0 is at the first video frame's presentation time (audio
    starting later is padded with silence, earlier is trimmed), so ``audio[i]`` lines up with frame
    ``i * fps / sample_rate``. Encoder padding past the container's declared duration is dropped.
    Raises MediaError "no audio stream" when there is none.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    path = _check_file(path)
    av = _import_av()
    if av is None:
        return _read_wav_stdlib(path, sample_rate)
    kind = _still_image_kind(path)
    if kind:
        raise MediaError(path, f"is a still image ({kind}), no audio stream")
    container = _open_av(av, path)
    try:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        # channels are averaged here rather than by FFmpeg's downmix, which scales stereo by 1/sqrt(2) each
        # and can leave [-1, 1]
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_time = None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except av.error.FFmpegError as e:
            raise MediaError(path, f"truncated or corrupt audio ({e})") from e
        audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
        if stream.duration and stream.time_base and stream.rate:
            # AAC decoders emit the encoder's trailing padding past the declared duration; drop it, but only
            # a codec frame or two, since estimated durations (VBR mp3) may be short of the real audio
            declared = int(round(float(stream.duration * stream.time_base) * sample_rate))
            slack = int(math.ceil(2048 * sample_rate / stream.rate)) + 1
            if declared < len(audio) <= declared + slack:
                audio = audio[:declared]
        if container.streams.video and first_time is not None:
            v = container.streams.video[0]
            v_start = float(v.start_time * v.time_base) if v.start_time is not None and v.time_base else 0.0
            shift = int(round((first_time - v_start) * sample_rate))
            if shift > 0:
                audio = np.concatenate([np.zeros(shift, np.float32), audio])
            elif shift < 0:
                audio = audio[-shift:]
        return np.ascontiguousarray(audio)
    finally:
        container.close()


def _read_wav_stdlib(path: Path, sample_rate: int) -> np.ndarray:
    """PCM/float .wav without PyAV (our GPU machine has no av): RIFF parsing + polyphase resampling.

    Parsed by hand rather than with the ``wave`` module, which rejects WAVE_FORMAT_EXTENSIBLE before 3.12.
    """
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(path, "cannot read audio without PyAV (pip install av); only .wav is supported then")
    fmt = body = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        chunk = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = chunk
        elif cid == b"data":
            body = chunk  # a cut file keeps what is there
        pos += 8 + size + (size & 1)
    if fmt is None or body is None or len(fmt) < 16:
        raise MediaError(path, "corrupt wav: fmt or data chunk missing")
    tag, ch, rate = (int.from_bytes(fmt[a:b], "little") for a, b in ((0, 2), (2, 4), (4, 8)))
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag opens the sub-format GUID
        tag = int.from_bytes(fmt[24:26], "little")
    width = bits // 8
    if ch < 1 or rate < 1 or width < 1:
        raise MediaError(path, "corrupt wav header")
    body = body[: len(body) // (width * ch) * width * ch]
    if tag == 3 and width in (4, 8):
        x = np.frombuffer(body, "<f4" if width == 4 else "<f8").astype(np.float32)
    elif tag == 1 and width == 1:
        x = (np.frombuffer(body, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and width in (2, 4):
        dt = np.dtype("<i2" if width == 2 else "<i4")
        x = (np.frombuffer(body, dt) / float(2 ** (bits - 1) if width == 2 else 2 ** 31)).astype(np.float32)
    elif tag == 1 and width == 3:
        b = np.frombuffer(body, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    else:
        raise MediaError(path, f"unsupported wav encoding (format tag {tag}, {bits} bits) without PyAV")
    x = x.reshape(-1, ch).mean(axis=1)
    if rate != sample_rate:
        from scipy.signal import resample_poly  # noqa: PLC0415

        g = math.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g)
    return np.ascontiguousarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------------------- video out


def _as_fraction(fps: float | Fraction) -> Fraction:
    # limit_denominator(1001) maps 29.97 -> 2997/100 and 30000/1001 (as a float) back to 30000/1001
    rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return rate


def _mono_audio(audio, what: str = "audio") -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2:  # (N, C) channels-last: average to mono
        a = a.mean(axis=1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be mono (N,) or (N, C) samples, got shape {np.asarray(audio).shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} must be float samples in [-1, 1], got dtype {a.dtype}")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0), dtype=np.float32)


class VideoWriter:
    """Write RGB uint8 frames to an H.264 (libx264, yuv420p) mp4, optionally with AAC audio.

    Use as a context manager::

        with VideoWriter("out.mp4", 25, audio=samples, audio_rate=16000) as w:
            for frame in frames:
                w.write(frame)

    * The frame size is fixed by the first frame. yuv420p needs even sizes, so an odd height/width is
      padded by repeating the last row/column: the file is then one pixel larger than the frames.
    * ``fps`` may be fractional (29.97, ``Fraction(30000, 1001)``): timestamps use an exact rational base.
    * ``audio`` (float mono samples at ``audio_rate``) is muxed interleaved with the frames; both streams start
      at time 0. All of it is written, also past the last frame: trim it to the video's length if needed.
    * Atomic: frames go to a hidden temp file in the destination folder, renamed on a successful
      :meth:`close`; an exception inside the ``with`` block (or in ``close``) deletes it and leaves nothing.
      Closing without any frame raises ValueError and writes nothing.
    * The moov index is moved to the front (``+faststart``), so a cut file is recognisably truncated and web
      players can start before the download ends.
    * ``provenance``: a ``Provenance`` stamps the file (watermark, container record, C2PA) with it (the
      rendering pipelines pass ``Provenance.of(avatar)``); ``"auto"`` (default) stamps it inside
      ``reenact.provenance.using()`` only; ``None`` never does (real footage). See :mod:`reenact.provenance`.
    """

    def __init__(self, path: PathLike, fps: float | Fraction, *, crf: int = OutputOptions.crf, audio=None,
                 audio_rate: int = 16000, preset: str = "medium", audio_bitrate: int = 96_000,
                 provenance="auto"):
        self.path = Path(path)
        self.audio_bitrate = int(audio_bitrate)
        self.rate = _as_fraction(fps)
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {crf}")
        if audio is not None and audio_rate <= 0:
            raise ValueError(f"audio_rate must be > 0, got {audio_rate}")
        self.crf = int(crf)
        self.preset = preset
        self.audio = None if audio is None else _mono_audio(audio)
        self.audio_rate = int(audio_rate)
        self.frames_written = 0
        self._av = None
        self._atomic = None
        self._container = None
        self._vstream = None
        self._astream = None
        self._audio_pos = 0
        self._size: tuple[int, int] | None = None  # (H, W) of input frames
        self._closed = False
        self._provenance = provenance
        self._stamp = None
        self._tmp: Path | None = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc_type, exc, tb)
        return False

    # -- opening -------------------------------------------------------------------------------------

    def _open(self, h: int, w: int) -> None:
        av = _import_av()
        if av is None:
            raise ImportError("writing video needs PyAV: pip install av")
        self._av = av
        from reenact.provenance import stamp_for  # noqa: PLC0415

        self._stamp = stamp_for(self._provenance, h, w, "video")
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._tmp = tmp
        try:
            movflags = "+faststart" + ("+use_metadata_tags" if self._stamp is not None else "")
            self._container = av.open(str(tmp), "w", format="mp4", options={"movflags": movflags})
            if self._stamp is not None:
                self._container.metadata.update(self._stamp.container_metadata())
            vs = self._container.add_stream("libx264", rate=self.rate)
            vs.width, vs.height = w + w % 2, h + h % 2
            vs.pix_fmt = "yuv420p"
            vs.codec_context.time_base = 1 / self.rate
            vs.options = {"crf": str(self.crf), "preset": self.preset}
            self._vstream = vs
            if self.audio is not None:
                a = self._container.add_stream("aac", rate=self.audio_rate)
                a.layout = "mono"
                a.bit_rate = self.audio_bitrate
                a.codec_context.time_base = Fraction(1, self.audio_rate)
                self._astream = a
        except BaseException as e:
            self._fail(e, "cannot open video for writing")
        self._size = (h, w)

    # -- writing -------------------------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 ``(H, W, 3)`` frame (same size as the first one)."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        a = np.asarray(frame)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{self.path}: frames must be RGB (H, W, 3), got shape {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"{self.path}: frames must be uint8, got {a.dtype}")
        h, w = a.shape[:2]
        if self._size is None:
            self._open(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"{self.path}: frame {self.frames_written} is {w}x{h}, "
                             f"the first frame was {self._size[1]}x{self._size[0]}")
        if self._stamp is not None:
            a = self._stamp.mark(a)
        if h % 2 or w % 2:
            a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        av = self._av
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.rate
        self._mux(self._vstream.encode(vf))
        self.frames_written += 1
        if self._astream is not None:
            # keep audio abreast of video so the muxer interleaves instead of buffering one stream
            until = math.ceil(self.frames_written * self.audio_rate / self.rate)
            self._write_audio(until)

    def _write_audio(self, until: int) -> None:
        av, audio = self._av, self.audio
        until = min(until, len(audio))
        block = 1024  # AAC frame size: avoids re-buffering inside the encoder wrapper
        while self._audio_pos < until:
            n = min(block, until - self._audio_pos)
            af = av.AudioFrame.from_ndarray(audio[None, self._audio_pos:self._audio_pos + n],
                                            format="fltp", layout="mono")
            af.sample_rate = self.audio_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.audio_rate)
            self._mux(self._astream.encode(af))
            self._audio_pos += n

    def _mux(self, packets) -> None:
        for p in packets:
            self._container.mux(p)

    # -- closing -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the encoders, finish the file (and its C2PA manifest) and move it into place."""
        if self._closed:
            return
        if self._container is None:
            self._closed = True
            raise ValueError(f"{self.path}: no frames were written, nothing saved")
        try:
            if self._astream is not None:
                self._write_audio(len(self.audio))
                self._mux(self._astream.encode(None))
            self._mux(self._vstream.encode(None))
            self._container.close()
            self._container = None
            if self._stamp is not None:
                self._stamp.finish(self._tmp, self.path.name)
        except BaseException as e:
            self._fail(e, "cannot finish writing video")
        self._closed = True
        self._atomic.__exit__(None, None, None)

    def _fail(self, e: BaseException, what: str):
        """Remove the partial output and re-raise ``e`` (FFmpeg errors as MediaError naming the file)."""
        self._abort(type(e), e, e.__traceback__)
        if self._av is not None and isinstance(e, self._av.error.FFmpegError):
            raise MediaError(self.path, f"{what} ({e})") from e
        raise e

    def _abort(self, exc_type, exc, tb) -> None:
        """Drop everything written so far (the temp file); the caller re-raises."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001  (already failing: the original error matters)
                pass
            self._container = None
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            try:
                atomic.__exit__(exc_type, exc, tb)  # deletes the temp file and re-raises exc
            except BaseException:  # noqa: BLE001
                pass


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: float | Fraction, audio=None,
                audio_rate: int = 16000, crf: int = OutputOptions.crf, provenance="auto") -> Path:
    """Write frames (an iterable of RGB uint8 ``(H, W, 3)``, or a ``(T, H, W, 3)`` array) to an H.264 mp4.

    See :class:`VideoWriter` for sizes, audio, atomicity and ``provenance``. Returns ``path``.
    """
    with VideoWriter(path, fps, crf=crf, audio=audio, audio_rate=audio_rate, provenance=provenance) as w:
        for f in frames:
            w.write(f)
    return Path(path)


class BackgroundWriter:
    """A :class:`VideoWriter` fed from another thread: ``write`` queues the frame and returns, a writer thread
    watermarks and encodes it, so encoding overlaps with whatever makes the frames.

    The queue holds at most ``maxsize`` frames: a producer faster than the encoder waits in ``write`` instead of
    filling memory. An error on the writer thread is raised by the next ``write`` or by ``close``. The atomic
    rules are the writer's: ``close`` finishes and moves the file into place, leaving the ``with`` block by an
    exception (``abort``) leaves nothing. ``seconds``: time the thread spent writing.
    """

    def __init__(self, writer: VideoWriter, maxsize: int = 8):
        import queue
        import threading

        self.writer = writer
        self.seconds = 0.0
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, int(maxsize)))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="video-writer", daemon=True)
        self._thread.start()

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)
        return False

    def _run(self) -> None:
        import time

        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self._error is not None:
                continue  # drain, so a producer blocked in write() wakes up and sees the error
            t = time.perf_counter()
            try:
                self.writer.write(frame)
            except BaseException as e:  # noqa: BLE001  (re-raised on the producer's thread)
                self._error = e
            self.seconds += time.perf_counter() - t

    def _raise(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            self._stop()
            self.writer._abort(type(e), e, e.__traceback__)
            raise e

    def write(self, frame: np.ndarray) -> None:
        """Queue one RGB uint8 ``(H, W, 3)`` frame (waits while the queue is full)."""
        self._raise()
        if not self._thread.is_alive():
            raise ValueError(f"{self.writer.path}: writer is closed")
        self._queue.put(frame)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def close(self) -> None:
        """Write what is queued, then finish the file (see :meth:`VideoWriter.close`)."""
        self._stop()
        self._raise()
        self.writer.close()

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Stop the thread and drop the file (the temp file is deleted; nothing appears at the path)."""
        self._error = self._error or KeyboardInterrupt()  # the thread skips what is still queued
        self._stop()
        self._error = None
        self.writer._abort(exc_type, exc, tb)


# ------------------------------------------------------------------------------------------- arrays

def load_array(path: PathLike, what: str = "array"):
    """``numpy.load`` of a ``.npy`` (an array) or ``.npz`` (an ``NpzFile``) that never unpickles. Raises
    InputError naming the file when it is missing or not a numpy file (numpy's own message then suggests
    ``allow_pickle=True``, which would run code from the file: never that)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file not found")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # numpy falls back to unpickling whatever is not .npy/.npz
            raise InputError(path, f"not a .npy or .npz {what} file (they are written by numpy.save / "
                                   "numpy.savez)") from None
        raise InputError(path, f"not a readable .npy/.npz {what} file ({e})") from None
    except (OSError, EOFError) as e:
        raise InputError(path, f"not a readable .npy/.npz {what} file ({e})") from None


# ------------------------------------------------------------------------------------------- images


def _sixteen_to_eight(a: np.ndarray) -> np.ndarray:
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(im: "_PILImage.Image") -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im)
        # mode I also holds 8-bit data from some decoders: only rescale when values exceed 8 bits
        g = _sixteen_to_eight(a) if mode != "I" or a.max(initial=0) > 255 else np.clip(a, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32))
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if "A" in mode or "a" in mode or "transparency" in im.info:
        return _on_white(np.asarray(im.convert("RGBA")))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 4)`` RGBA composited on white -> RGB uint8 (how transparent pictures are read)."""
    rgba = rgba.astype(np.float32)
    alpha = rgba[..., 3:4] / 255.0
    out = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def as_rgb(image, source: str = "<image>") -> np.ndarray:
    """An image array as RGB uint8 ``(H, W, 3)``, contiguous, converted as :func:`read_image` converts the same
    picture read from a file: grayscale ``(H, W)`` / ``(H, W, 1)`` replicated, gray + alpha ``(H, W, 2)`` and
    RGBA ``(H, W, 4)`` composited on white, 16-bit data scaled to 8 bits. Raises InputError naming ``source``
    for an empty array, another layout, or another dtype (floats are ambiguous: 0..1 or 0..255)."""
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = _sixteen_to_eight(a)
    if a.dtype != np.uint8:
        raise InputError(source, f"expected a uint8 image array, got {a.dtype} {a.shape}",
                         "e.g. (image * 255).round().astype(np.uint8) for floats in [0, 1]")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(source, f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(source, f"empty image ({a.shape[1]}x{a.shape[0]} pixels)")
    if a.shape[2] == 2:
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2)
    if a.shape[2] == 4:
        return _on_white(a)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def read_image(path: PathLike, max_pixels: int = 50_000_000) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``, upright.

    * EXIF orientation is applied (a phone portrait comes out portrait).
    * Grayscale (1, L, I;16, I, F) is replicated to 3 channels; 16-bit data (grayscale PNG/TIFF) is scaled
      to 8 bits (65535 -> 255); 16-bit RGB(A) PNGs are reduced to 8 bits by Pillow.
    * Transparency (RGBA, LA, PA, palette or grayscale with a transparent colour) is composited on WHITE.
    * CMYK, YCbCr, LAB, HSV are converted to RGB. Multi-frame files (GIF, TIFF) give their first frame.
    * Images with more than ``max_pixels`` pixels raise InputError before any pixel is decoded (Pillow's
      own decompression-bomb limit, about 179 MP, also applies whatever ``max_pixels`` says).

    Raises MediaError naming the file when it is missing, not an image, corrupt or truncated.
    """
    path = _check_file(path)
    from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: PLC0415

    try:
        im = Image.open(path)  # lazy: reads the header only
    except Image.DecompressionBombError as e:
        raise InputError(path, f"image too large ({e}); limit {max_pixels} pixels") from e
    except UnidentifiedImageError as e:
        raise MediaError(path, "not a readable image (unrecognised format)") from e
    except OSError as e:
        raise MediaError(path, f"cannot read image ({e})") from e
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise InputError(path, f"image too large: {w}x{h} = {w * h} pixels, limit {max_pixels}",
                             "downscale it first, or raise max_pixels")
        try:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            rgb = _to_rgb(im)
        except (OSError, SyntaxError, ValueError, EOFError) as e:  # Pillow reports corrupt data as these
            raise MediaError(path, f"corrupt or truncated image ({e})") from e
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise MediaError(path, f"unsupported image layout (mode {im.mode}, shape {rgb.shape})")
    return np.ascontiguousarray(rgb)


_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP",
                  ".tif": "TIFF", ".tiff": "TIFF"}


def write_image(path: PathLike, image: np.ndarray, quality: int = 95, provenance="auto") -> Path:
    """Atomically write an RGB uint8 ``(H, W, 3)`` (or grayscale ``(H, W)``) image; format by extension
    (.png, .jpg/.jpeg, .bmp, .webp, .tif/.tiff). ``quality`` applies to JPEG/WebP. Returns ``path``.

    ``provenance``: a ``reenact.provenance.Provenance`` stamps the image (watermark, metadata, C2PA); ``"auto"``
    (default) stamps it inside ``reenact.provenance.using()`` only; ``None`` never."""
    path = Path(path)
    fmt = _IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r}, use one of {sorted(_IMAGE_FORMATS)}")
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"{path}: image must be uint8 (H, W, 3) or (H, W), got {a.dtype} {a.shape}")
    from PIL import Image  # noqa: PLC0415

    from reenact.provenance import stamp_for  # noqa: PLC0415

    stamp = stamp_for(provenance, a.shape[0], a.shape[1], "image")
    if stamp is not None:
        a = stamp.mark(a)
    im = Image.fromarray(np.ascontiguousarray(a))
    opts = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    if stamp is not None:
        opts.update(stamp.image_options(fmt))
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **opts)
        if stamp is not None:
            stamp.finish(tmp, path.name)
    return path
