"""Landmark tracking speed and `prepare` seconds per clip, on this machine.

    python benchmarks/landmarks.py [--clip PATH] [--frames 250] [--backend dlib]

Prints a markdown table row per measurement (frames/s of decoding + tracking on a 512x512 shared clip, with
and without decoding; `prepare` seconds per clip of 256 px crops).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def pick_clip() -> Path:
    with open(DATA / "MANIFEST.tsv") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["file"].startswith("videos/")
                and r["width"] == "512" and r["height"] == "512" and float(r["face_frames_fraction"]) >= 1.0]
    rows.sort(key=lambda r: -float(r["seconds"]))
    return DATA / rows[0]["file"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--backend", default="dlib")
    ap.add_argument("--keyframe-interval", type=int, default=10)
    a = ap.parse_args()

    from reenact import io
    from reenact.data.prepare import PrepareOptions, prepare_clip
    from reenact.landmarks import create_detector
    from reenact.landmarks.track import track_frames

    clip = a.clip or pick_clip()
    det = create_detector(a.backend)
    frames = list(io.read_frames(clip, max_frames=a.frames))
    h, w = frames[0].shape[:2]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; clip {clip.name} {w}x{h}")
    print("| measurement | value |\n|---|---|")
    t = time.perf_counter()
    list(io.read_frames(clip, max_frames=a.frames))
    dec = time.perf_counter() - t
    t = time.perf_counter()
    track_frames(iter(frames), det, keyframe_interval=a.keyframe_interval)
    trk = time.perf_counter() - t
    print(f"| decode {w}x{h} | {len(frames) / dec:.0f} frames/s |")
    print(f"| landmarks ({a.backend}, keyframe every {a.keyframe_interval}) | {len(frames) / trk:.0f} frames/s |")
    print(f"| decode + landmarks | {len(frames) / (dec + trk):.0f} frames/s |")
    t = time.perf_counter()
    for f in frames[:25]:
        det.detect(f)
    print(f"| detection on every frame | {25 / (time.perf_counter() - t):.0f} frames/s |")
    secs = float(io.probe(clip).duration)
    t = time.perf_counter()
    prepare_clip(clip, PrepareOptions(), detector=det)
    dt = time.perf_counter() - t
    print(f"| prepare one clip ({secs:.1f} s of video, 256 px crops, 1 worker) | {dt:.1f} s ({secs / dt:.1f}x real time) |")


if __name__ == "__main__":
    main()
