"""`reenact prepare SRC OUT`: a tree of talking-head videos -> a prepared training set.

Input trees: ``SRC/<identity>/<video>/<clip>.mp4`` (VoxCeleb) or ``SRC/<identity>/<clip>.mp4``. For each clip:
track 68 landmarks on every frame, compute a steady square crop (smoothed over the clip), store every
``frame_step``-th crop as H.264 (+ the clip's audio as AAC, resampled to 16 kHz) and the landmarks of every
frame in crop coordinates. Workers run in parallel; a rerun skips finished (and previously skipped) clips.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from reenact.crop import CropParams, box_from_points, crop_image, crop_matrix, smooth_boxes, transform_points
from reenact.data.format import FORMAT, VERSION, ClipRecord, pack_meta, read_index
from reenact.errors import InputError
from reenact.options import AT_LEAST_1, CRF, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, UNIT, option

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
SHARD_BYTES = 1 << 30  # start a new shard file after 1 GiB


@dataclass(frozen=True)
class PrepareOptions:
    """Options of `prepare` (each a CLI flag of `reenact prepare`)."""

    size: int = option(256, "crop side in pixels", type=AT_LEAST_1)
    frame_step: int = option(2, "store every n-th crop (landmarks are kept for every frame)", type=AT_LEAST_1)
    crf: int = option(20, "H.264 quality of the stored crops (lower is better and bigger)", type=CRF)
    crop_scale: float = option(1.8, "crop side / landmark extent", type=POSITIVE_FLOAT)
    keyframe_interval: int = option(10, "detect faces every n frames (landmark fitting on all)", type=AT_LEAST_1)
    min_frames: int = option(16, "skip clips with fewer frames with a face", type=AT_LEAST_1)
    min_face_fraction: float = option(0.5, "skip clips with a face in a smaller fraction of their frames",
                                      type=UNIT)
    keep_audio: bool = option(True, "do not keep the audio track", flag="--no-audio")
    max_seconds: float = option(0.0, "only the first seconds of each clip (0: all)", type=NON_NEGATIVE_FLOAT,
                                show_default=False)
    backend: str = option("dlib", "landmark backend")
    regions: str = option("mouth", "region crops cut from the frames at their own resolution, comma list "
                                   "(reenact.data.regions; '' none)")


@dataclass(frozen=True)
class PrepareReport:
    done: int
    skipped: dict[str, str]  # key -> reason
    already: int
    seconds: float
    region_errors: dict[str, str] = field(default_factory=dict)  # "<region>:<key>" -> reason (retried next run)


def find_clips(src: str | Path) -> list[tuple[str, str, str, Path]]:
    """(key, identity, video, path) for every video under src, sorted by key."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(src, "not a folder of videos")
    out = []
    for path in sorted(src.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXTS or not path.is_file():
            continue
        rel = path.relative_to(src).with_suffix("")
        parts = rel.parts
        if len(parts) < 2:
            continue  # a clip must sit in an identity folder
        identity = parts[0]
        video = "/".join(parts[:2]) if len(parts) >= 3 else rel.as_posix()
        out.append((rel.as_posix(), identity, video, path))
    return out


_WORKER = {}  # per-process detector, created once per worker process by _init_worker


def _init_worker(backend: str):
    import cv2

    cv2.setNumThreads(1)  # workers already use every core
    from reenact.landmarks import create_detector

    _WORKER["detector"] = create_detector(backend)


def prepare_clip(path: Path, opts: PrepareOptions, detector=None) -> tuple[bytes, bytes, dict]:
    """Process one clip; returns (mp4 bytes, npz bytes, info). Raises InputError subclasses for bad clips."""
    from reenact import io
    from reenact.landmarks.track import track_frames

    detector = detector or _WORKER["detector"]
    info = io.probe(path)
    max_frames = int(opts.max_seconds * info.fps) if opts.max_seconds > 0 else None
    track = track_frames(io.read_frames(path, max_frames=max_frames), detector, fps=info.fps,
                         keyframe_interval=opts.keyframe_interval, source=str(path), fill=False, smooth=False)
    n = len(track)
    n_valid = int(track.valid.sum())
    if n_valid < opts.min_frames:
        raise InputError(path, f"too short: a face in {n_valid} frames (< {opts.min_frames})")
    if n_valid < opts.min_face_fraction * n:
        raise InputError(path, f"a face in only {n_valid}/{n} frames")
    track = track.fill_missing().smooth()
    params = CropParams(size=opts.size, scale=opts.crop_scale)
    boxes = smooth_boxes(box_from_points(track.points, params), info.fps)
    mats = np.stack([crop_matrix(b, opts.size) for b in boxes])
    pts_crop = np.stack([transform_points(p, m) for p, m in zip(track.points, mats)])
    audio = None
    if opts.keep_audio and info.has_audio:
        audio = io.read_audio(path, 16000)
        if max_frames:
            audio = audio[: int(max_frames / info.fps * 16000)]
    frame_ids = np.arange(0, n, opts.frame_step)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crops.mp4"
        # 32 kb/s AAC is ample for 16 kHz mono speech and keeps the set small enough to ship to a GPU machine.
        with io.VideoWriter(out, info.fps / opts.frame_step, crf=opts.crf, audio=audio, audio_rate=16000,
                            audio_bitrate=32_000) as w:
            for t, frame in enumerate(io.read_frames(path, max_frames=n)):
                if t % opts.frame_step == 0:
                    w.write(crop_image(frame, mats[t], opts.size))
        video_bytes = out.read_bytes()
    meta = pack_meta(points=pts_crop.astype(np.float32), matrices=mats.astype(np.float32),
                     valid=track.valid, filled=track.filled, scores=track.scores, frame_ids=frame_ids,
                     source_size=np.asarray(track.size), fps=np.float64(info.fps))
    return video_bytes, meta, {"num_frames": n, "num_stored": len(frame_ids), "fps": info.fps,
                               "has_audio": audio is not None}


def _run_one(args):
    key, path, opts = args
    try:
        return key, prepare_clip(path, opts), None
    except InputError as e:
        return key, None, str(e)
    except Exception as e:  # noqa: BLE001 - one broken clip must not stop a million-clip run
        return key, None, f"{path}: {type(e).__name__}: {e}"


class _ShardWriter:
    """Appends records to ``shards/<run>-NNN.bin`` and their index lines to the matching ``.jsonl``."""

    def __init__(self, root: Path):
        self.dir = root / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.n = -1
        self._open_next()

    def _open_next(self):
        self.n += 1
        self.name = f"{self.run}-{self.n:03d}.bin"
        self.bin = open(self.dir / self.name, "ab")
        self.idx = open(self.dir / self.name.replace(".bin", ".jsonl"), "a")

    def append(self, key, identity, video, source, video_bytes, meta_bytes, info) -> ClipRecord:
        if self.bin.tell() > SHARD_BYTES:
            self.close()
            self._open_next()
        off = self.bin.tell()
        self.bin.write(video_bytes)
        self.bin.write(meta_bytes)
        self.bin.flush()
        os.fsync(self.bin.fileno())  # bytes first, then the index line that makes them visible
        rec = ClipRecord(key=key, identity=identity, video=video, shard=self.name, video_off=off,
                         video_len=len(video_bytes), meta_off=off + len(video_bytes), meta_len=len(meta_bytes),
                         source=str(source), **info)
        self.idx.write(rec.to_json() + "\n")
        self.idx.flush()
        return rec

    def close(self):
        self.bin.close()
        self.idx.close()


def prepare_dataset(src: str | Path, out: str | Path, opts: PrepareOptions = PrepareOptions(),
                    workers: int | None = None, limit: int | None = None, identities: list[str] | None = None,
                    retry_skipped: bool = False, progress: bool = True) -> PrepareReport:
    """Prepare every clip under ``src`` into ``out`` (see the module docstring). Resumable."""
    from tqdm.auto import tqdm

    t0 = time.time()
    out = Path(out)
    # everything that can be refused is checked before the output folder and dataset.json are made
    clips = find_clips(src)
    from reenact.regions import REGIONS

    unknown = [r.strip() for r in opts.regions.split(",") if r.strip() and r.strip() not in REGIONS]
    if unknown:
        raise InputError("--regions", f"unknown region {unknown[0]!r} (known: {', '.join(REGIONS)})")
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; the output must be a folder")
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "dataset.json"
    settings = {"format": FORMAT, "version": VERSION, "landmarks": "ibug68", **asdict(opts)}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        for k in ("size", "frame_step", "crop_scale"):
            if old.get(k) != settings[k]:
                raise InputError(out, f"already prepared with {k}={old.get(k)}, asked for {settings[k]}",
                                 "use another output folder")
    else:
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings, indent=2))
        os.replace(tmp, meta_path)
    if identities:
        clips = [c for c in clips if c[1] in set(identities)]
    if limit:
        clips = clips[:limit]
    done = {r.key for r in read_index(out)}
    report_path = out / "report.jsonl"
    skipped_before = {}
    if report_path.exists() and not retry_skipped:
        for line in report_path.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                skipped_before[item["key"]] = item["reason"]
    todo = [c for c in clips if c[0] not in done and c[0] not in skipped_before]
    already = len(clips) - len(todo)
    lookup = {c[0]: c for c in todo}
    skipped: dict[str, str] = {}
    n_done = 0
    workers = workers or max(1, (os.cpu_count() or 1))
    if not todo:
        return PrepareReport(0, {}, already, time.time() - t0, _regions(out, opts, workers, progress))
    writer = _ShardWriter(out)
    bar = tqdm(total=len(todo), desc="prepare", unit="clip", disable=not progress)
    try:
        # spawn, not fork: forking a process that already runs decoder/BLAS threads can deadlock the child.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(opts.backend,)) as pool, \
                open(report_path, "a") as report:
            futures = [pool.submit(_run_one, (c[0], c[3], opts)) for c in todo]
            for fut in as_completed(futures):
                key, result, err = fut.result()
                _, identity, video, path = lookup[key]
                if err is None:
                    writer.append(key, identity, video, path, *result)
                    n_done += 1
                else:
                    skipped[key] = err
                    report.write(json.dumps({"key": key, "reason": err}) + "\n")
                    report.flush()
                bar.update(1)
                bar.set_postfix(done=n_done, skipped=len(skipped))
    finally:
        bar.close()
        writer.close()
    return PrepareReport(n_done, skipped, already, time.time() - t0, _regions(out, opts, workers, progress))


def _regions(out: Path, opts: PrepareOptions, workers: int, progress: bool) -> dict[str, str]:
    """The region pass (after the clips, so an existing prepared set gains regions on a rerun)."""
    from reenact.data.regions import prepare_regions

    names = tuple(r.strip() for r in opts.regions.split(",") if r.strip())
    if not names:
        return {}
    errors = prepare_regions(out, names, workers=workers, progress=progress)
    return {f"{region}:{key}": why for region, errs in errors.items() for key, why in errs.items()}
