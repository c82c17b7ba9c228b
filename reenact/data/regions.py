"""Region crops of a prepared set: the mouth (and other regions) cut from the source video's own frames.

Written beside the 256 px face crops, in the same append-only layout, one folder per region::

    regions/<region>/<run>-NNN.bin     per clip an H.264 mp4 of the region crops + an npz (matrices, frame_ids)
    regions/<region>/<run>-NNN.jsonl   one index line per finished clip, written after its bytes

The crops are the frames stored for the face crops (``frame_ids``), each cut with its own similarity
(:func:`reenact.regions.region_matrix` of that frame's landmarks: no temporal smoothing, so the matrix is
exact for the frame). A rerun adds only the clips that have no record yet, so an existing prepared set gains
regions without being prepared again.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from reenact.crop import invert, transform_points
from reenact.data.format import Record, pack_meta, read_bytes, read_range, unpack_meta
from reenact.regions import crop_region, get_region, region_matrix

#: H.264 quality of region crops: they are what the region generators learn detail from (teeth), so a little
#: better than the face crops' 20.
REGION_CRF = 17


@dataclass(frozen=True)
class RegionRecord(Record):
    """Index entry of one clip's region crops (the byte ranges as :class:`reenact.data.format.Record`, ``key``,
    ``identity``, ``video`` as in the clip index): ``num_stored`` crops of ``size`` pixels."""

    num_stored: int
    size: int


def region_dir(root: str | Path, region: str) -> Path:
    return Path(root) / "regions" / region


def read_region_index(root: str | Path, region: str) -> dict[str, RegionRecord]:
    """key -> record of every finished clip of one region (lines cut by a crash are ignored)."""
    out: dict[str, RegionRecord] = {}
    for idx in sorted(region_dir(root, region).glob("*.jsonl")):
        for line in idx.read_text().splitlines():
            try:
                rec = RegionRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            out[rec.key] = rec
    return out


def frame_points(meta: dict[str, np.ndarray]) -> np.ndarray:
    """``(T, 68, 2)`` landmarks of every source frame in the source frame's pixels (from crop pixels)."""
    return np.stack([transform_points(p, invert(m)) for p, m in zip(meta["points"], meta["matrices"])])


def region_clip(source: str | Path, meta: dict[str, np.ndarray], fps: float, region: str) -> tuple[bytes, bytes, int]:
    """(mp4 bytes, npz bytes, count) of one clip's region crops, from its source video and prepared meta."""
    from reenact import io

    spec = get_region(region)
    ids = np.asarray(meta["frame_ids"], np.int64)
    pts = frame_points(meta)
    mats = region_matrix(pts[ids], spec)
    wanted = {int(t): k for k, t in enumerate(ids)}
    crops = np.zeros((len(ids), spec.size, spec.size, 3), np.uint8)
    got = 0
    for t, frame in enumerate(io.read_frames(source, max_frames=int(ids.max()) + 1)):
        k = wanted.get(t)
        if k is not None:
            crops[k] = crop_region(frame, mats[k], spec.size)
            got += 1
    if got != len(ids):
        raise OSError(f"{source}: decoded {got} of the {len(ids)} stored frames")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "region.mp4"
        stored_fps = fps * len(ids) / max(1, int(ids.max()) + 1)
        with io.VideoWriter(out, max(1.0, round(stored_fps, 3)), crf=REGION_CRF, provenance=None) as w:
            for c in crops:
                w.write(c)
        video = out.read_bytes()
    # points in crop pixels as float16 (1/16 px or better at 128 px): the region set is then self-contained
    # for training (identity, matrices, landmarks, crops) at a size that travels to a GPU machine in one go
    crop_pts = np.stack([transform_points(p, m) for p, m in zip(pts[ids], mats)]).astype(np.float16)
    return video, pack_meta(matrices=mats.astype(np.float32), frame_ids=ids, points=crop_pts), len(ids)


def _run_one(args):
    root, key, shard, off, length, source, fps, region = args
    try:
        meta = unpack_meta(read_bytes(Path(root), shard, off, length))
        return key, region_clip(source, meta, fps, region), None
    except Exception as exc:  # noqa: BLE001 - one clip must not stop the pass; it is reported and retried
        return key, None, f"{source}: {type(exc).__name__}: {exc}"


def prepare_regions(root: str | Path, regions: tuple[str, ...] = ("mouth",), workers: int | None = None,
                    progress: bool = True) -> dict[str, dict[str, str]]:
    """Add region crops to every clip of a prepared folder that lacks them; returns region -> {key: error}."""
    from tqdm.auto import tqdm

    from reenact.data.format import read_index

    root = Path(root)
    records = read_index(root)
    errors: dict[str, dict[str, str]] = {}
    for region in regions:
        get_region(region)
        done = read_region_index(root, region)
        todo = [r for r in records if r.key not in done]
        by_key = {r.key: r for r in todo}
        errors[region] = {}
        if not todo:
            continue
        folder = region_dir(root, region)
        folder.mkdir(parents=True, exist_ok=True)
        name = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6] + "-000"
        ctx = multiprocessing.get_context("spawn")  # see prepare_dataset: no fork under decoder threads
        with open(folder / f"{name}.bin", "ab") as bin_f, open(folder / f"{name}.jsonl", "a") as idx_f, \
                ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=ctx) as pool:
            futs = [pool.submit(_run_one, (str(root), r.key, r.shard, r.meta_off, r.meta_len, r.source, r.fps,
                                           region)) for r in todo]
            for fut in tqdm(as_completed(futs), total=len(futs), desc=f"regions:{region}", disable=not progress):
                key, result, err = fut.result()
                if err is not None:
                    errors[region][key] = err
                    continue
                video, meta, n = result
                off = bin_f.tell()
                bin_f.write(video)
                bin_f.write(meta)
                bin_f.flush()
                os.fsync(bin_f.fileno())  # bytes first, then the index line that makes them visible
                rec = RegionRecord(key, by_key[key].identity, by_key[key].video, f"{name}.bin", off, len(video), off + len(video), len(meta), n,
                                   get_region(region).size)
                idx_f.write(rec.to_json() + "\n")
                idx_f.flush()
    return errors


class RegionData:
    """Read one region of a prepared set: per clip the crops ``(N, S, S, 3)`` uint8 and matrices ``(N, 2, 3)``
    (frame -> region crop) of the stored frames, in the clip index's order."""

    def __init__(self, root: str | Path, region: str, keys: list[str]):
        self.root, self.region = Path(root), region
        index = read_region_index(root, region)
        missing = [k for k in keys if k not in index]
        if missing:
            raise FileNotFoundError(f"{region_dir(root, region)}: no {region} crops for {len(missing)} clip(s) "
                                    f"(e.g. {missing[0]}); run `reenact prepare` again to add them")
        self.records = [index[k] for k in keys]
        self._meta = lru_cache(maxsize=4096)(self._load_meta)

    def _load_meta(self, i: int) -> dict[str, np.ndarray]:
        r = self.records[i]
        return unpack_meta(read_range(region_dir(self.root, self.region) / r.shard, r.meta_off, r.meta_len))

    def meta(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of clip i: ``matrices`` (N, 2, 3) frame -> crop, ``frame_ids`` (N,), ``points`` (N, 68, 2)
        float16 crop pixels."""
        return self._meta(i)

    def matrices(self, i: int) -> np.ndarray:
        return self.meta(i)["matrices"]

    def frames(self, i: int) -> np.ndarray:
        from reenact import io

        r = self.records[i]
        data = read_range(region_dir(self.root, self.region) / r.shard, r.video_off, r.video_len)
        with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
            tmp.write(data)
            tmp.flush()
            frames = np.stack(list(io.read_frames(tmp.name)))
        return frames[:r.num_stored]
