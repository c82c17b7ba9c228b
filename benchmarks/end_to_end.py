"""End-to-end puppeteering speed: frames/s per stage for a 10-second 512x512 driver, on the current device.

    python benchmarks/end_to_end.py [--checkpoint CKPT] [--preset tiny] [--train-steps 30] [--device auto]
                                    [--clip PATH] [--portrait PATH] [--seconds 10] [--steps 0]
    python benchmarks/end_to_end.py --bundle DIR [--checkpoint CKPT] [--preset tiny] [--device auto] [--steps 0]

Without ``--checkpoint`` a model of ``--preset`` is meta-learned briefly first (``--train-steps`` on the first
2 s of three shared clips): its weights are meaningless, its cost is real. Then a portrait is personalised
(``--steps``, 0: feed-forward, not timed) and driven with the clip by ``puppeteer.drive.puppeteer_video``:
tracking, One-Euro smoothing, retargeting, rendering, paste-back into the portrait and H.264 encoding with the
driver's audio. Prints one Markdown table; the stages are sequential, so the total's frames/s is what a user
waits for. The `tiny` preset (32 px) understates render and paste-back cost: pass a real checkpoint, or
``--preset small --train-steps 2`` for the cost of the small architecture.

For a machine without dlib, its 68-point model or the shared data, ``tools/e2e_bundle.py DIR`` writes a small
folder: the driver clip and the portrait (copies), the driver's track as the puppeteer computes it,
the portrait's 68 landmarks and ``bundle.json`` with the tracking time measured there.
``--bundle DIR`` then runs from that folder alone: the landmarks stage is precomputed (dlib is CPU-bound; its
time is quoted from the machine that made the bundle), decoding is timed in a separate pass, and
retargeting, rendering, paste-back and encoding are timed for real. Without ``--checkpoint`` the model is a
randomly initialised one of ``--preset`` (no dataset needed): meaningless pictures, the real cost.
Encoding needs PyAV; without it frames are dropped unencoded and the encode row says "not measured".
"""
from __future__ import annotations

import argparse
import csv
import json
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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def random_checkpoint(preset: str, out: Path) -> Path:
    """A checkpoint of ``preset`` with randomly initialised weights (seed 0): no dataset, no training."""
    import torch

    from reenact.checkpoint import save_checkpoint
    from reenact.config import load_config
    from reenact.models import build_discriminator, build_embedder, build_generator

    cfg = load_config(preset, [])
    torch.manual_seed(0)
    mods = {"E": build_embedder(cfg.model), "G": build_generator(cfg.model),
            "D": build_discriminator(cfg.model, 1)}
    return save_checkpoint(out / "random_init", mods, cfg, {"step": 0})


class NullWriter:
    """Stands in for ``reenact.io.VideoWriter`` when PyAV is missing: frames are dropped, nothing encoded."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, frame):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="meta-learned checkpoint (default: train --preset briefly; with --bundle: "
                                         "a randomly initialised --preset)")
    ap.add_argument("--preset", default="tiny", help="preset to train when no checkpoint is given (default tiny)")
    ap.add_argument("--train-steps", type=int, default=30, help="steps of that brief training (default 30)")
    ap.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N]")
    ap.add_argument("--clip", type=Path, help="driver video (default: a 10 s 512x512 shared clip with audio)")
    ap.add_argument("--portrait", type=Path, default=DATA / "portraits" / "lp_s5.jpg")
    ap.add_argument("--seconds", type=float, default=10.0, help="driver seconds to use (default 10)")
    ap.add_argument("--steps", type=int, default=0, help="personalisation steps (not timed; default 0)")
    ap.add_argument("--bundle", type=Path, help="read clip, portrait and their precomputed landmarks from this "
                                                "folder (made by tools/e2e_bundle.py): no dlib, no shared data")
    a = ap.parse_args(argv)

    import torch

    from reenact.device import resolve_device
    from puppeteer.drive import puppeteer_video
    from reenact import Reenactor, io
    from reenact.models import count_params

    device = resolve_device(a.device)
    bundle = track = None
    portrait, landmarks = a.portrait, None
    if a.bundle:
        from reenact.landmarks.track import FaceTrack

        bundle = json.loads((a.bundle / "bundle.json").read_text())
        clip, portrait = a.bundle / bundle["driver"], a.bundle / bundle["portrait"]
        track, landmarks = FaceTrack.load(a.bundle / "driver_track.npz"), [a.bundle / "portrait_landmarks.npy"]
    else:
        clip = a.clip or pick_clip(a.seconds)
    info = io.probe(clip)
    encoder = io._import_av() is not None
    if bundle and not encoder:
        io.VideoWriter = NullWriter  # what puppeteer_video writes with: frames are dropped, encode not timed
    with tempfile.TemporaryDirectory(prefix="e2e_") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        if a.checkpoint:
            ckpt = a.checkpoint
        elif bundle:
            ckpt = random_checkpoint(a.preset, tmp)
        else:
            ckpt = train_briefly(a.preset, a.train_steps, tmp, str(device))
        t_train = time.perf_counter() - t
        r = Reenactor.load(ckpt, device=str(device))
        avatar = r.personalize([portrait], steps=a.steps, landmarks=landmarks, progress=False)
        photo = io.read_image(portrait)
        frames = int(round(a.seconds * info.fps))
        if track is not None:
            frames = min(frames, len(track))
        warm = 64 if device.type == "cuda" else 8  # one full render batch on a GPU (allocator, kernels)
        puppeteer_video(avatar, clip, tmp / "warmup.mp4", into=photo, max_frames=warm, progress=False,
                        track=track)  # lazy inits
        t_decode = None
        if bundle:  # the pipeline decodes the driver only to track it: a separate pass times decoding here
            t = time.perf_counter()
            decoded = sum(1 for _ in io.read_frames(clip, max_frames=frames))
            t_decode = time.perf_counter() - t
        t = time.perf_counter()
        res = puppeteer_video(avatar, clip, tmp / "out.mp4", into=photo, max_frames=frames, progress=False,
                              track=track)
        wall = time.perf_counter() - t

    cfg = r.config.model
    if a.checkpoint:
        name = f"{Path(str(ckpt)).name}"
    elif bundle:
        name = f"{a.preset}, randomly initialised (meaningless pictures, real cost)"
    else:
        name = f"{a.preset}, {a.train_steps} training steps"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"model: {name}; preset/generator: {cfg.generator} G, {cfg.resolution} px, "
          f"G {count_params(r.base.G) / 1e6:.2f}M params; avatar {avatar.mode}")
    print(f"device: {device} ({dev}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)" + (f"; checkpoint trained here in {t_train:.0f} s"
                                                    if not a.checkpoint and not bundle else ""))
    source = bundle["driver_source"] if bundle else clip.name
    pasted = bundle["portrait_source"] if bundle else portrait.name
    print(f"driver: {source} {info.width}x{info.height}, {res.frames} frames ({res.frames / res.fps:.1f} s at "
          f"{res.fps:g} fps); output {res.size[1]}x{res.size[0]} pasted into {pasted}"
          + (", with audio" if res.audio_seconds is not None else ", without audio"))
    if bundle:
        print(f"bundle: {a.bundle} (made {bundle['made_at']}); landmarks precomputed: {bundle['landmarks']}")
    print()
    print(f"| stage ({cfg.resolution} px {cfg.generator} G on {device.type}) | seconds | ms/frame | frames/s |")
    print("|---|---:|---:|---:|")

    def row(label, s, bold=False, rate=True):
        b = "**" if bold else ""
        v = res.frames / s if s else float("inf")
        fps = f"{v:.{1 if v < 100 else 0}f}" if rate else ""
        print(f"| {b}{label}{b} | {b}{s:.2f}{b} | {b}{1000 * s / res.frames:.1f}{b} | {b + fps + b if fps else ''} |")

    staged = 0.0
    if bundle:
        kind = "PyAV" if encoder else "OpenCV, no PyAV"
        row(f"decode ({kind}; separate pass, {decoded} frames)", t_decode)
        lm = bundle["landmarks_s"] * res.frames / bundle["frames"]
        row("landmarks (dlib, keyframe 10, checked): precomputed, CPU machine's time [1]", lm)
        for label, keys in [("smooth + retarget", ["smooth", "retarget"]), ("render", ["render"]),
                            ("paste-back", ["paste_back"])]:
            s = sum(res.timings.get(k, 0.0) for k in keys)
            staged += s
            row(label, s)
        s = res.timings.get("encode", 0.0) + res.timings.get("audio", 0.0)
        staged += s
        if encoder:
            row("encode (H.264 + AAC)" if res.audio_seconds is not None else "encode (H.264)", s)
        else:
            print("| encode | not measured (no PyAV: frames dropped unencoded) | | |")
        other = max(wall - staged, 0.0)
        row("other", other, rate=False)
        row(f"end to end, measured here (decode + all stages but landmarks{'' if encoder else ' and encode'})",
            wall + t_decode, bold=True)
        row("end to end with landmarks at the CPU machine's rate (estimate)", wall + t_decode + lm)
        print(f"\n[1] not run here: the track comes from the bundle. dlib is CPU-bound (no GPU path); this is its "
              f"time measured when the bundle was made, on {bundle['made_on']} "
              f"({bundle['landmarks_s']:.2f} s for {bundle['frames']} frames).")
        return 0

    rows = [("decode", ["decode"]), ("landmarks (dlib, keyframe 10, checked)", ["landmarks"]),
            ("smooth + retarget", ["smooth", "retarget"]), ("render", ["render"]),
            ("paste-back", ["paste_back"]), ("encode (H.264 + AAC)", ["encode", "audio"])]
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
