"""Speech-model training throughput: batch assembly and steps/s of the lip-sync expert and the audio-to-landmark
model on the current device, with the real training loops (``puppeteer.audio.train``) on real clips.

    python benchmarks/audio_train.py --data .devdata/prepared [--device cuda] [--steps 60] [key=value ...]
    python benchmarks/audio_train.py --data .devdata/audio_features.npz --device cuda --steps 2000

``--data`` is a prepared folder or a feature file (``python -m puppeteer.audio.train --export-features``). Steps/s
count the training steps alone (the loops' own clock, validation excluded). Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from puppeteer.audio.config import audio_config  # noqa: E402
from puppeteer.audio.data import Batcher, load_clips  # noqa: E402
from reenact.models.lipsync import FRAMES  # noqa: E402
from puppeteer.audio.train import train_a2l, train_sync  # noqa: E402
from reenact.device import resolve_device  # noqa: E402


def batch_ms(clips, length: int, window: int, pad: int, n: int, device: torch.device, reps: int = 20) -> float:
    b = Batcher(clips, length, window, pad=pad, seed=0, device=device)
    b.sample(n)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        b.sample(n)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / reps * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared folder or audio feature file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=60, help="training steps per network (default 60)")
    ap.add_argument("overrides", nargs="*", help="AudioConfig overrides, e.g. threads=1")
    args = ap.parse_args(argv)
    cfg = audio_config(args.overrides + [f"train_sync.steps={args.steps}", f"train_a2l.steps={args.steps}",
                                         f"train_sync.val_every={args.steps}", f"train_a2l.val_every={args.steps}"])
    device = resolve_device(args.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    clips = load_clips(args.data, speech_only=True)
    train = [c for c in clips if not c.held_out]
    val = [c for c in clips if c.held_out]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ms = batch_ms(train, FRAMES, cfg.window, cfg.max_offset, cfg.train_sync.batch_size, device)
        expert, run = train_sync(cfg, train, val, Path(tmp), device, progress=False)
        rows.append(("lip-sync expert", cfg.train_sync.batch_size, ms, run["steps_per_second"]))
        tc = cfg.train_a2l
        ms = batch_ms(train, tc.length, cfg.window, 0, tc.batch_size, device)
        _, run = train_a2l(cfg, train, val, Path(tmp), device, expert, progress=False)
        rows.append((f"audio-to-landmark (+ expert loss), x{tc.length} frames", tc.batch_size, ms,
                     run["steps_per_second"]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"\n{len(train)} training clips, {args.steps} steps each, device: {name}, torch {torch.__version__}\n")
    print("| network | batch | batch assembly (ms) | training steps/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
