"""End-to-end puppeteering speed: frames/s per stage for a 10-second 512x512 driver, on the current device.

    python benchmarks/end_to_end.py [--checkpoint CKPT] [--preset tiny] [--train-steps 30] [--device auto]
                                    [--clip PATH] [--portrait PATH] [--seconds 10] [--steps 0]

Without ``--checkpoint`` a model of ``--preset`` is meta-learned briefly first (``--train-steps`` on the first
2 s of three shared clips): its weights are meaningless, its cost is real. Then a portrait is personalised
(``--steps``, 0: feed-forward, not timed) and driven with the clip by ``puppeteer.drive.puppeteer_video``:
tracking, One-Euro smoothing, retargeting, rendering, paste-back into the portrait and H.264 encoding with the
driver's audio. Prints one Markdown table; the stages are sequential, so the total's frames/s is what a user
waits for. The `tiny` preset (32 px) understates render and paste-back cost: pass a real checkpoint, or
``--preset small --train-steps 2`` for the cost of the small architecture.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def manifest() -> list[dict]:
    with open(DATA / "MANIFEST.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def pick_clip(seconds: float) -> Path:
    """The shared 512x512 clip with audio and a face in every frame whose length is nearest ``seconds`` (not
    shorter)."""
    rows = [r for r in manifest() if r["file"].startswith("videos/") and r["width"] == "512"
            and r["height"] == "512" and r["has_audio"] == "1" and float(r["face_frames_fraction"]) >= 1.0
            and float(r["seconds"]) >= seconds]
    rows.sort(key=lambda r: (float(r["seconds"]) - seconds, r["file"]))
    return DATA / rows[0]["file"]


def train_briefly(preset: str, steps: int, work: Path, device: str) -> Path:
    """A checkpoint of ``preset`` after ``steps`` steps on the first 2 s of three shared clips."""
    from meta_learning.train import train
    from reenact.config import load_config
    from reenact.data.prepare import PrepareOptions, prepare_dataset

    cfg = load_config(preset, [])
    rows = [r for r in manifest() if r["file"].startswith("videos/") and r["has_audio"] == "1"
            and float(r["face_frames_fraction"]) >= 1.0 and float(r["seconds"]) >= 2.0 and int(r["width"]) <= 512]
    rows.sort(key=lambda r: (float(r["seconds"]), r["file"]))
    src, seen = work / "src", set()
    for r in rows:
        if r["identity"] in seen:
            continue
        seen.add(r["identity"])
        dst = src / r["identity"] / Path(r["file"]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(DATA / r["file"])
        if len(seen) == 3:
            break
    size = max(64, int(cfg.model.resolution))
    prepare_dataset(src, work / "prepared", PrepareOptions(size=size, frame_step=1, max_seconds=2.0, min_frames=8),
                    workers=1, progress=False)
    out = work / "run"
    cfg = load_config(preset, [f"data.root={work / 'prepared'}", f"train.out_dir={out}", f"train.steps={steps}",
                               "data.val_fraction=0", f"train.device={device}", "train.progress=false",
                               "train.val_every=0", "train.sample_every=0", f"train.checkpoint_every={steps}",
                               f"train.log_every={steps}", "train.resume=none", "data.num_workers=0",
                               # the weights are meaningless anyway: the smallest episodes keep a CPU run short
                               "train.batch_size=2", "data.k_shots=2"])
    train(cfg)
    return out / "checkpoints" / f"step_{steps:07d}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="meta-learned checkpoint (default: train --preset briefly)")
    ap.add_argument("--preset", default="tiny", help="preset to train when no checkpoint is given (default tiny)")
    ap.add_argument("--train-steps", type=int, default=30, help="steps of that brief training (default 30)")
    ap.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N]")
    ap.add_argument("--clip", type=Path, help="driver video (default: a 10 s 512x512 shared clip with audio)")
    ap.add_argument("--portrait", type=Path, default=DATA / "portraits" / "lp_s5.jpg")
    ap.add_argument("--seconds", type=float, default=10.0, help="driver seconds to use (default 10)")
    ap.add_argument("--steps", type=int, default=0, help="personalisation steps (not timed; default 0)")
    a = ap.parse_args(argv)

    import torch

    from finetune.base import resolve_device
    from puppeteer.drive import puppeteer_video
    from reenact import Reenactor, io
    from reenact.models import count_params

    device = resolve_device(a.device)
    clip = a.clip or pick_clip(a.seconds)
    info = io.probe(clip)
    with tempfile.TemporaryDirectory(prefix="e2e_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        ckpt = a.checkpoint or train_briefly(a.preset, a.train_steps, tmp, str(device))
        t_train = time.perf_counter() - t
        r = Reenactor.load(ckpt, device=str(device))
        avatar = r.personalize([a.portrait], steps=a.steps, progress=False)
        photo = io.read_image(a.portrait)
        frames = int(round(a.seconds * info.fps))
        puppeteer_video(avatar, clip, tmp / "warmup.mp4", into=photo, max_frames=8, progress=False)  # lazy inits
        t = time.perf_counter()
        res = puppeteer_video(avatar, clip, tmp / "out.mp4", into=photo, max_frames=frames, progress=False)
        wall = time.perf_counter() - t

    cfg = r.config.model
    name = f"{Path(str(ckpt)).name}" if a.checkpoint else f"{a.preset}, {a.train_steps} training steps"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"model: {name}; preset/generator: {cfg.generator} G, {cfg.resolution} px, "
          f"G {count_params(r.base.G) / 1e6:.2f}M params; avatar {avatar.mode}")
    print(f"device: {device} ({dev}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)" + (f"; checkpoint trained here in {t_train:.0f} s" if not a.checkpoint else ""))
    print(f"driver: {clip.name} {info.width}x{info.height}, {res.frames} frames ({res.frames / res.fps:.1f} s at "
          f"{res.fps:g} fps); output {res.size[1]}x{res.size[0]} pasted into {a.portrait.name}, with audio\n")
    print(f"| stage ({cfg.resolution} px {cfg.generator} G on {device.type}) | seconds | ms/frame | frames/s |")
    print("|---|---:|---:|---:|")
    rows = [("decode", ["decode"]), ("landmarks (dlib, keyframe 10, checked)", ["landmarks"]),
            ("smooth + retarget", ["smooth", "retarget"]), ("render", ["render"]),
            ("paste-back", ["paste_back"]), ("encode (H.264 + AAC)", ["encode", "audio"])]
    staged = 0.0
    for label, keys in rows:
        s = sum(res.timings.get(k, 0.0) for k in keys)
        staged += s
        print(f"| {label} | {s:.2f} | {1000 * s / res.frames:.1f} | {res.frames / s if s else float('inf'):.0f} |")
    other = max(wall - staged, 0.0)  # probing, reading the portrait, per-frame bookkeeping
    print(f"| other | {other:.2f} | {1000 * other / res.frames:.1f} | |")
    print(f"| **end to end** | **{wall:.2f}** | **{1000 * wall / res.frames:.1f}** | **{res.frames / wall:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
