"""Reference numbers of the classical methods: self-reenactment of `static` and `warp` on held-out real clips.

    python benchmarks/eval_reference.py --data .devdata/prepared [--shots 1] [--frames-per-clip 16]
        [--warp-kind pa] [--out out/eval_reference]

Runs the self protocol of `reenact eval` (held-out split `split(None, 0.1)`, K source frames from the first
third of each clip, targets evenly spaced over the rest) and prints the results table plus the wall time. The
frames per clip bound the run time: about 0.1 s of dlib analysis per image on one CPU core dominates.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset (reenact prepare)")
    ap.add_argument("--shots", default="1")
    ap.add_argument("--frames-per-clip", type=int, default=16)
    ap.add_argument("--clips", type=int, default=None)
    ap.add_argument("--split", default="val", choices=["val", "train", "all"])
    ap.add_argument("--warp-kind", default="pa", choices=["pa", "tps"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/eval_reference"))
    a = ap.parse_args()

    from reenact.metrics.evaluate import EvalOptions, results_markdown, run_eval

    opts = EvalOptions(protocol="self", methods=("static", "warp"),
                       shots=tuple(int(k) for k in a.shots.split(",")), clips=a.clips,
                       frames_per_clip=a.frames_per_clip, split=a.split, seed=a.seed, warp_kind=a.warp_kind)
    t0 = time.time()
    rep = run_eval(a.data, a.out, opts)
    dt = time.time() - t0
    print(results_markdown(rep.results))
    n = sum(e["targets"] for per_k in rep.results["results"].values() for e in per_k.values())
    cpu = platform.processor() or platform.machine()
    print(f"{len(rep.results['clips'])} clips, {n} rendered targets in {dt:.0f} s on {cpu} ({os.cpu_count()} cores); "
          f"outputs in {a.out}")


if __name__ == "__main__":
    main()
