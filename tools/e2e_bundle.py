"""Developer tool: the end-to-end benchmark's bundle, for a machine without dlib, its 68-point model or the
shared data (a lent GPU machine).

    python tools/e2e_bundle.py DIR [--clip PATH] [--portrait PATH] [--seconds 10]

writes DIR: the driver clip and the portrait (copies), the driver's track as the puppeteer computes it (dlib,
keyframe every 10th frame, fits confirmed; ``driver_track.npz``, filled, not smoothed), the portrait's 68
landmarks (``portrait_landmarks.npy``) and ``bundle.json`` with the tracking time measured here. On the other
machine ``python benchmarks/end_to_end.py --bundle DIR`` runs from that folder alone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from end_to_end import DATA, cpu_name, pick_clip  # noqa: E402  (the benchmark's own choice of driver)

KEYFRAME_INTERVAL = 10  # puppeteer_video's and the CLI's default


def make_bundle(out: Path, clip: Path, portrait: Path, seconds: float) -> Path:
    """Copy ``clip`` and ``portrait`` into ``out`` with their landmarks, tracked here with dlib."""
    import numpy as np

    from puppeteer.drive import track_driver
    from reenact import io
    from reenact.landmarks import create_detector

    out.mkdir(parents=True, exist_ok=True)
    info = io.probe(clip)
    frames = min(int(round(seconds * info.fps)), info.num_frames)
    det = create_detector("dlib")
    track_driver(clip, det, max_frames=8, progress=False)  # warm-up, like the timed runs get
    timings: dict[str, float] = {}
    track = track_driver(clip, det, keyframe_interval=KEYFRAME_INTERVAL, check_faces=True, max_frames=frames,
                         progress=False, timings=timings)
    face = det.detect_one(io.read_image(portrait), multiple="error", source=str(portrait))
    driver, photo = f"driver{clip.suffix.lower()}", f"portrait{portrait.suffix.lower()}"
    shutil.copyfile(clip, out / driver)
    shutil.copyfile(portrait, out / photo)
    track.save(out / "driver_track.npz")
    np.save(out / "portrait_landmarks.npy", np.asarray(face.points, np.float32))
    import torch

    meta = {"driver": driver, "driver_source": clip.name, "portrait": photo, "portrait_source": portrait.name,
            "frames": len(track), "fps": float(info.fps), "seconds": seconds, "missing": int(len(track.missing)),
            "landmarks": f"dlib, keyframe {KEYFRAME_INTERVAL}, fits confirmed (puppeteer.drive.track_driver)",
            "landmarks_s": timings["landmarks"], "decode_s": timings["decode"],
            "made_on": f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "made_at": time.strftime("%Y-%m-%d %H:%M")}
    (out / "bundle.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"{out}: {len(track)} frames of {clip.name} tracked in {meta['landmarks_s']:.2f} s "
          f"(+ {meta['decode_s']:.2f} s decoding) on {meta['made_on']}; portrait {portrait.name}; "
          f"{size / 1e6:.1f} MB")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="folder to write")
    ap.add_argument("--clip", type=Path, help="driver video (default: the benchmark's 10 s 512x512 shared clip)")
    ap.add_argument("--portrait", type=Path, default=DATA / "portraits" / "lp_s5.jpg")
    ap.add_argument("--seconds", type=float, default=10.0, help="driver seconds to track (default 10)")
    a = ap.parse_args(argv)
    make_bundle(a.out, a.clip or pick_clip(a.seconds), a.portrait, a.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
