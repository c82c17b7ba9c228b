"""Meta-learning episodes: K + 1 frames of one video (K for the embedder, the last one is the target)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from reenact.data.dataset import FrameCache, PreparedDataset


class EpisodeDataset(Dataset):
    """Episodes from a prepared folder.

    ``ds[i]`` samples K+1 distinct frames (where a face was found) of clip ``i`` of the split; ``ds[(i, seed)]``
    does the same with a fixed seed, so a sampler that hands out seeds makes training exactly reproducible.
    Returns a dict: ``frames`` uint8 (K+1, 3, S, S); ``points`` float32 (K+1, 68, 2) pixels in the crop;
    ``video_index`` int64, the clip's global index (row of the discriminator's table, over all splits);
    with ``draw=True`` also ``landmark_images`` uint8 (K+1, 3, S, S) (OpenCV rasterizer; training draws on the
    device instead).
    """

    def __init__(self, root: str | Path, k_shots: int = 8, split: str = "train",
                 val_identities: list[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                 cache: bool = True, cache_dir: str | Path | None = None, draw: bool = False):
        self.data = PreparedDataset(root)
        train, val = self.data.split(val_identities, val_fraction)
        self.clips = {"train": train, "val": val, "all": list(range(len(self.data)))}[split]
        if not self.clips:
            raise ValueError(f"{root}: split {split!r} has no clips")
        self.k = k_shots
        self.seed = seed
        self.draw = draw
        self.cache = FrameCache(self.data, cache_dir) if cache else None
        self._calls = 0

    @property
    def num_videos(self) -> int:
        return len(self.data)

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.clips)

    def _frames(self, clip: int, ids: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            return self.cache.get(clip, ids)
        return self.data.frames(clip)[ids]

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        if isinstance(item, tuple):
            i, seed = item
            rng = np.random.default_rng([self.seed, int(seed)])
        else:
            i = item
            self._calls += 1
            rng = np.random.default_rng([self.seed, int(i), self._calls, torch.initial_seed() % (2**31)])
        clip = self.clips[int(i)]
        meta = self.data.meta(clip)
        stored_valid = meta["valid"][meta["frame_ids"]]
        candidates = np.flatnonzero(stored_valid)
        if len(candidates) == 0:
            candidates = np.arange(len(meta["frame_ids"]))
        ids = rng.choice(candidates, self.k + 1, replace=len(candidates) < self.k + 1)
        frames = self._frames(clip, ids)
        points = meta["points"][meta["frame_ids"][ids]]
        out = {
            "frames": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),
            "points": torch.from_numpy(points.astype(np.float32)),
            "video_index": torch.tensor(clip, dtype=torch.int64),
        }
        if self.draw:
            from reenact.draw import draw_landmarks

            lmk = np.stack([draw_landmarks(p, self.size) for p in points])
            out["landmark_images"] = torch.from_numpy(np.ascontiguousarray(lmk.transpose(0, 3, 1, 2)))
        return out
