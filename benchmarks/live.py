"""Real-time driving: a real 512x512 driver clip fed at its own frame rate through ``puppeteer.live.run_live``.

    python benchmarks/live.py [--checkpoint CKPT | --avatar FILE] [--portrait IMG] [--driver VIDEO]
                              [--seconds 10] [--threads 2] [--no-out]

The avatar is made from --portrait (feed-forward) with --checkpoint (a region checkpoint gives the photo renderer;
none: the bundled default), or read from --avatar. Decoding, landmarks (keyframe detection + flow), retargeting,
rendering with paste-back and encoding (to a temporary mp4 with the driver's audio, stamped; --no-out: none)
run as in ``reenact live``. Prints one Markdown table: sustained frames/s, dropped frames, median and p95
latency from a frame's arrival to its output frame, and the mean cost of the landmark and render stages per
frame they handled (on their threads, during the run), with the machine's load.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def default_driver() -> Path:
    """The longest 512x512 clip of the manifest with a face in nearly every frame."""
    import csv

    with open(DATA / "MANIFEST.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["file"].startswith("videos/")
                and r["width"] == r["height"] == "512" and float(r["face_frames_fraction"]) >= 0.85]
    return DATA / max(rows, key=lambda r: (float(r["seconds"]), r["file"]))["file"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="base model: a region checkpoint (photo renderer) or a crop G; default bundled")
    ap.add_argument("--avatar", help="an avatar file instead of --checkpoint + --portrait")
    ap.add_argument("--portrait", default=str(DATA / "portraits" / "lp_s5.jpg"))
    ap.add_argument("--driver", default=None, help="driver video (default: a 512x512 clip of the shared data)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of the driver played")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--queue-size", type=int, default=2)
    ap.add_argument("--no-out", action="store_true", help="do not encode a file")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from puppeteer.live import run_live
    from reenact import io
    from reenact.api import Reenactor, open_avatar

    driver = Path(a.driver) if a.driver else default_driver()
    info = io.probe(driver)
    n = min(info.num_frames, int(round(a.seconds * info.fps)))
    if a.avatar:
        avatar = open_avatar(a.avatar, a.checkpoint, device=a.device)
        into = io.read_image(avatar.sources[0].name)
    else:
        avatar = Reenactor.load(a.checkpoint, a.device).personalize([a.portrait], steps=0, progress=False)
        into = io.read_image(a.portrait)
    kind = type(avatar).__name__
    with tempfile.TemporaryDirectory() as tmp:
        out = None if a.no_out else Path(tmp) / "live.mp4"
        load0 = os.getloadavg()[0]
        live = run_live(avatar, driver, out=out, into=into, max_frames=n, queue_size=a.queue_size, progress=False)
        st = live.run()
        t_pose, t_render = st.busy["landmarks"] / max(st.tracked, 1), st.busy["render"] / max(st.rendered, 1)
        load1 = os.getloadavg()[0]

    print(f"driver {driver.relative_to(DATA) if driver.is_relative_to(DATA) else driver} "
          f"({info.width}x{info.height}, {info.fps:g} fps, {n} frames fed at its own rate); avatar {kind} "
          f"({a.checkpoint or a.avatar or 'bundled default'}), output {into.shape[1]}x{into.shape[0]}"
          f"{'' if a.no_out else ', encoded with audio and provenance'}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{a.threads}, load average {load0:.1f} -> {load1:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print("| avatar | sustained fps | dropped | latency median | latency p95 | landmarks ms/frame | render ms/frame |")
    print("|---|---|---|---|---|---|---|")
    drop = 100.0 * st.dropped / max(st.frames_in, 1)
    print(f"| {kind} | {st.fps:.1f} | {st.dropped} of {st.frames_in} ({drop:.1f}%) | {1000 * st.latency(50):.0f} ms "
          f"| {1000 * st.latency(95):.0f} ms | {1000 * t_pose:.1f} | {1000 * t_render:.1f} |")


if __name__ == "__main__":
    main()
