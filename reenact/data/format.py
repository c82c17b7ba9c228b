"""The prepared-dataset format, shared by the writer (`prepare`) and the readers.

A prepared folder holds::

    dataset.json              format name/version, crop size, frame step, landmark convention
    shards/<run>.bin          append-only records: per clip an H.264 mp4 of the crops (+ AAC audio) and an npz
    shards/<run>.jsonl        one line per finished clip, written after its bytes: key, identity, offsets, ...
    report.jsonl              clips that were skipped and why

Few files, sequential writes, random access to any clip by (file, offset, length): this scales to VoxCeleb2
(a million clips) and is friendly to multi-worker data loaders, which open shards read-only. A crash while
writing leaves at most a tail of bytes without an index line, which readers ignore and a rerun skips past.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT = "reenact-prepared"
VERSION = 1


@dataclass(frozen=True)
class Record:
    """Where one clip's bytes are: ``key`` (``identity/clip``), ``identity``, ``video``, ``shard`` (file name in
    the record's folder), the mp4 bytes ``video_off``/``video_len`` and the npz bytes ``meta_off``/``meta_len``."""

    key: str
    identity: str
    video: str
    shard: str
    video_off: int
    video_len: int
    meta_off: int
    meta_len: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ClipRecord(Record):
    """Index entry of one prepared clip.

    key: ``identity/clip`` path without suffix; identity: person; video: source video id (clips of one video
    share it); shard: file name under ``shards/``; video_off/video_len: the crops' mp4 bytes; meta_off/meta_len:
    the npz bytes; num_frames: frames of the source clip (all landmarks are kept at this rate); num_stored:
    crops stored (every ``frame_step``-th frame); fps: source frame rate; has_audio: the mp4 carries the audio.
    """

    num_frames: int
    num_stored: int
    fps: float
    has_audio: bool
    source: str


def read_index(root: str | Path) -> list[ClipRecord]:
    """All finished clips of a prepared folder, sorted by key (a stable order: the clip's global index)."""
    root = Path(root)
    records: dict[str, ClipRecord] = {}
    for idx in sorted((root / "shards").glob("*.jsonl")):
        with open(idx) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = ClipRecord(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue  # a line cut by a crash
                records[rec.key] = rec
    return [records[k] for k in sorted(records)]


def read_bytes(root: Path, shard: str, off: int, length: int) -> bytes:
    return read_range(Path(root) / "shards" / shard, off, length)


def read_range(path: Path, off: int, length: int) -> bytes:
    """``length`` bytes of a shard file from ``off``; OSError naming the file if it is shorter."""
    with open(path, "rb") as fh:
        fh.seek(off)
        data = fh.read(length)
    if len(data) != length:
        raise OSError(f"{path}: truncated record at {off} (+{length})")
    return data


def pack_meta(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_meta(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
