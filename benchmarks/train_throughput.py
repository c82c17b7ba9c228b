"""Stage-1 training throughput: episodes/s and peak memory of one preset on the current device.

    python benchmarks/train_throughput.py --preset small [--steps 30 --batch 16 --compile] [key=value ...]

Synthetic episodes of the right shapes (uint8 frames, face-like landmarks) feed ``Trainer.train_step``
directly, so the figure covers augmentation, landmark rasterisation, E/G/D forward + backward and both
optimiser steps, but not data loading. Prints one Markdown table row.
"""
from __future__ import annotations

import argparse
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meta_learning.trainer import Trainer  # noqa: E402
from reenact.config import load_config  # noqa: E402
from reenact.models import count_params  # noqa: E402


def face_template(size: int) -> np.ndarray:
    """A rough frontal face in iBUG order, (68, 2) pixels: realistic segment lengths for the rasteriser."""
    c, r = size / 2, size
    p = np.zeros((68, 2))
    t = np.linspace(0, np.pi, 17)
    p[0:17] = np.stack([c - 0.4 * r * np.cos(t), c + 0.1 * r + 0.35 * r * np.sin(t)], 1)
    p[17:22] = np.stack([np.linspace(c - 0.3 * r, c - 0.08 * r, 5), np.full(5, c - 0.15 * r)], 1)
    p[22:27] = np.stack([np.linspace(c + 0.08 * r, c + 0.3 * r, 5), np.full(5, c - 0.15 * r)], 1)
    p[27:31] = np.stack([np.full(4, c), np.linspace(c - 0.12 * r, c + 0.08 * r, 4)], 1)
    p[31:36] = np.stack([np.linspace(c - 0.07 * r, c + 0.07 * r, 5), np.full(5, c + 0.12 * r)], 1)
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for start, cx in ((36, c - 0.17 * r), (42, c + 0.17 * r)):
        p[start:start + 6] = np.stack([cx + 0.06 * r * np.cos(a), c - 0.06 * r + 0.03 * r * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    p[48:60] = np.stack([c + 0.15 * r * np.cos(a), c + 0.25 * r + 0.06 * r * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    p[60:68] = np.stack([c + 0.1 * r * np.cos(a), c + 0.25 * r + 0.03 * r * np.sin(a)], 1)
    return p.astype(np.float32)


class SyntheticEpisodes:
    """Random uint8 frames and jittered face-template landmarks; ``num_videos`` rows for D's table."""

    def __init__(self, k: int, size: int, num_videos: int = 1000):
        self.k, self.size, self.num_videos = k, size, num_videos
        self.template = face_template(size)

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, item) -> dict[str, torch.Tensor]:  # EpisodeDataset interface: (clip, seed)
        i, seed = item
        one = self.batch(1, seed)
        return {"frames": one["frames"][0], "points": one["points"][0],
                "video_index": torch.tensor(int(i) % self.num_videos)}

    def batch(self, b: int, seed: int) -> dict[str, torch.Tensor]:
        g = np.random.default_rng(seed)
        n = self.k + 1
        frames = g.integers(0, 256, (b, n, 3, self.size, self.size), dtype=np.uint8)
        pts = self.template + g.normal(0, 0.01 * self.size, (b, n, 68, 2)).astype(np.float32)
        return {"frames": torch.from_numpy(frames), "points": torch.from_numpy(pts),
                "video_index": torch.from_numpy(g.integers(0, self.num_videos, b))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 CUDA / 2 CPU)")
    p.add_argument("--batch", type=int, default=None, help="episodes per step (default: the preset's)")
    p.add_argument("--compile", action="store_true", help="torch.compile E, G, D")
    p.add_argument("--device", default="auto")
    p.add_argument("--loader", action="store_true",
                   help="run Trainer.fit (DataLoader with data.num_workers workers, logging, a final checkpoint)")
    p.add_argument("--header", action="store_true", help="print the table header first")
    p.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        extra = [f"train.out_dir={tmp}", "train.resume=none", "train.progress=false", f"train.device={a.device}"]
        if a.batch:
            extra.append(f"train.batch_size={a.batch}")
        if a.compile:
            extra.append("train.compile=true")
        cfg = load_config(a.preset, extra + list(a.overrides))
        ds = SyntheticEpisodes(cfg.data.k_shots, cfg.model.resolution)
        t = Trainer(cfg, dataset=ds)
        dev = t.device
        cuda = dev.type == "cuda"
        steps = a.steps or (20 if cuda else 5)
        warmup = a.warmup if a.warmup is not None else (5 if cuda else 2)
        b = cfg.train.batch_size
        if a.loader:
            t.tc.log_every = warmup or 1
            t.fit(warmup + steps)
            import json

            rec = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()][-1]
            dt = b / rec["samples_per_s"]
            logs = rec["train"]
            steps = 0
        batches = [ds.batch(b, i) for i in range(4)] if not a.loader else []
        if cuda:
            batches = [{k: v.pin_memory() for k, v in x.items()} for x in batches]
        for i in range(warmup if not a.loader else 0):
            t.train_step(batches[i % 4])
        if cuda:
            torch.cuda.synchronize(dev)
            if not a.loader:
                torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for i in range(steps):
            logs = t.train_step(batches[i % 4])
        if cuda:
            torch.cuda.synchronize(dev)
        if not a.loader:
            dt = (time.perf_counter() - t0) / steps
        if not all(math.isfinite(v) for v in logs.values()):
            print(f"non-finite losses: {logs}", file=sys.stderr)
            return 1
        if cuda:
            mem = torch.cuda.max_memory_allocated(dev) / 2 ** 30
            name = torch.cuda.get_device_name(dev)
        else:
            mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
            name = f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()}"
        params = sum(count_params(m) for m in (t.E, t.G, t.D)) - t.D.W.weight.numel()
        if a.header:
            print("| preset | device | res | K | batch | params (M) | amp | compile | ms/step | episodes/s | peak mem (GiB) |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {a.preset} | {name} | {cfg.model.resolution} | {cfg.data.k_shots} | {b} | {params / 1e6:.2f} | "
              f"{'bf16' if t.amp else 'off'} | {'yes' if cfg.train.compile else 'no'}{' +loader' if a.loader else ''} | {dt * 1000:.1f} | "
              f"{b / dt:.1f} | {mem:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
