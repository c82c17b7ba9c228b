"""Reading a prepared folder: clip index, landmarks, crops and audio, and a decoded-frame cache."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from reenact.data.format import FORMAT, ClipRecord, read_bytes, read_index, unpack_meta
from reenact.errors import InputError

# Identity names that are one person under two names (SFace cosine 0.677 between the two clips, well above its
# 0.363 same-person threshold): each maps to the name whose hash decides the split, so the person is held out
# or trained on as a whole.
IDENTITY_ALIASES = {"pc51": "pc44"}


def canonical_identity(name: str) -> str:
    """The name that stands for this person in splits (``IDENTITY_ALIASES``; a name without alias is itself)."""
    return IDENTITY_ALIASES.get(name, name)


def held_out(identities, val_fraction: float) -> set[str]:
    """The identities held out by the hash rule: the crc32 of the canonical name below ``val_fraction``."""
    return {ident for ident in identities
            if zlib.crc32(canonical_identity(ident).encode()) % 10_000 < val_fraction * 10_000}


class PreparedDataset:
    """A folder written by ``reenact prepare``. Clip ``i`` is ``records[i]`` (sorted by key, so the index is
    stable and serves as the clip's row in the discriminator's per-video table)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = self.root / "dataset.json"
        if not meta.exists():
            raise InputError(self.root, "not a prepared dataset (no dataset.json)", "run `reenact prepare` first")
        self.settings = json.loads(meta.read_text())
        if self.settings.get("format") != FORMAT:
            raise InputError(meta, f"unknown format {self.settings.get('format')!r}")
        self.records: list[ClipRecord] = read_index(self.root)
        if not self.records:
            raise InputError(self.root, "prepared dataset has no clips")
        self.size = int(self.settings["size"])
        self._meta = lru_cache(maxsize=4096)(self._load_meta)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def identities(self) -> list[str]:
        return sorted({r.identity for r in self.records})

    def meta(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of clip i: points (T,68,2) crop px, matrices (T,2,3) frame->crop, valid/filled (T,),
        scores (T,), frame_ids (N,) source frame of each stored crop, source_size (H,W), fps."""
        return self._meta(i)

    def _load_meta(self, i: int) -> dict[str, np.ndarray]:
        r = self.records[i]
        return unpack_meta(read_bytes(self.root, r.shard, r.meta_off, r.meta_len))

    def video_bytes(self, i: int) -> bytes:
        r = self.records[i]
        return read_bytes(self.root, r.shard, r.video_off, r.video_len)

    def _with_file(self, i: int, fn):
        # Decoders want a path (OpenCV cannot read from memory); a temp file costs little next to decoding.
        with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
            tmp.write(self.video_bytes(i))
            tmp.flush()
            return fn(tmp.name)

    def frames(self, i: int) -> np.ndarray:
        """All stored crops of clip i, (N, S, S, 3) uint8."""
        from reenact import io

        frames = self._with_file(i, lambda p: np.stack(list(io.read_frames(p))))
        n = self.records[i].num_stored
        if len(frames) < n:  # never expected; pad by repetition rather than misalign landmarks
            frames = np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), 0)])
        return frames[:n]

    def audio(self, i: int, sample_rate: int = 16000) -> np.ndarray:
        from reenact import io

        if not self.records[i].has_audio:
            raise InputError(self.records[i].key, "clip has no audio")
        return self._with_file(i, lambda p: io.read_audio(p, sample_rate))

    def split(self, val_identities: list[str] | None = None, val_fraction: float = 0.1) -> tuple[list[int], list[int]]:
        """(train, val) clip indices, split by identity. Without an explicit list, an identity is held out when
        a hash of its name falls below ``val_fraction``: stable across machines and dataset growth. Aliases of one
        person (``IDENTITY_ALIASES``) fall on the same side."""
        if val_identities:
            named = {canonical_identity(i) for i in val_identities}
            held = {i for i in self.identities if canonical_identity(i) in named}
        else:
            held = held_out(self.identities, val_fraction)
        train = [i for i, r in enumerate(self.records) if r.identity not in held]
        val = [i for i, r in enumerate(self.records) if r.identity in held]
        return train, val


class FrameCache:
    """Every stored crop of a prepared set decoded once into one uint8 memmap ``(total, S, S, 3)``.

    Episodes then read K+1 frames with no video decoding, and DataLoader workers share the pages through the OS.
    Built on first use into ``cache_dir`` (default ``<root>/cache``), atomically; keyed by a hash of the index,
    so a changed dataset gets a new cache. For VoxCeleb2-size sets use ``EpisodeDataset(cache=False)``.
    """

    def __init__(self, ds: PreparedDataset, cache_dir: str | Path | None = None, workers: int | None = None,
                 progress: bool = False):
        self.ds = ds
        counts = np.array([r.num_stored for r in ds.records], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        digest = hashlib.sha1("".join(f"{r.key}:{r.shard}:{r.video_off}" for r in ds.records).encode()).hexdigest()[:12]
        cache_dir = Path(cache_dir) if cache_dir else ds.root / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"frames-{ds.size}-{digest}.u8"
        shape = (int(self.offsets[-1]), ds.size, ds.size, 3)
        if not self.path.exists():
            self._build(shape, workers, progress)
        self.frames = np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)

    def _build(self, shape, workers, progress):
        from tqdm.auto import tqdm

        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)

            def fill(i):
                mm[self.offsets[i]:self.offsets[i + 1]] = self.ds.frames(i)

            with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:  # decoders release the GIL
                list(tqdm(pool.map(fill, range(len(self.ds))), total=len(self.ds), desc="decode cache",
                          disable=not progress))
            mm.flush()
            del mm
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get(self, clip: int, ids) -> np.ndarray:
        return np.asarray(self.frames[self.offsets[clip] + np.asarray(ids)])
