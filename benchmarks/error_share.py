"""Where is the held-out self-reenactment error? Share of the squared error inside the face vs outside it.

Same clips, sources and targets as ``reenact eval --protocol self`` (1 shot). For each method, the squared error to
the real frame is split between the convex hull of the target's 68 landmarks (the face), its mouth, and the rest
of the 256 px crop (hair, ears, neck, clothes, background). Optionally writes the warp's mean error map.

    python benchmarks/error_share.py --data .devdata/prepared [--cache runs/cache/cache --tag NAME=TAG ...]
        [--map docs/images/error_map_warp.png]

``--tag NAME=TAG`` adds a method read from a render cache (``python -m reenact.metrics.render_cache``), e.g.
``--tag "warp-guided FF=model-d4f0b24361e9-ft0-s0-k1"``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reenact.data.dataset import PreparedDataset  # noqa: E402
from reenact.metrics import evaluate as ev  # noqa: E402


def hull_mask(points: np.ndarray, size: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return m.astype(bool)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--tag", action="append", default=[], help="NAME=TAG of a render cache")
    ap.add_argument("--map", default=None, help="write the warp's mean squared-error map here (PNG)")
    a = ap.parse_args(argv)
    from reenact.metrics.harness import CachedRenderer

    renderers = {"static": ev.StaticRenderer(), "warp": ev.WarpRenderer("pa")}
    for spec in a.tag:
        name, tag = spec.split("=", 1)
        renderers[name] = CachedRenderer(None, a.cache, tag)
    opts = ev.EvalOptions(methods=("warp",), shots=(1,), sync_seconds=0)
    ds = PreparedDataset(a.data)
    err: dict[str, list[np.ndarray]] = {k: [] for k in renderers}
    face, mouth = [], []
    for _, frames, pts, src, tgt in ev.self_targets(ds, opts):
        real = frames[tgt].astype(np.float32)
        for name, r in renderers.items():
            out = r.render(frames[src], pts[src], pts[tgt]).astype(np.float32)
            err[name].append(((out - real) ** 2).mean(-1))
        size = real.shape[1]
        face += [hull_mask(p, size) for p in pts[tgt]]
        mouth += [hull_mask(p[48:68], size) for p in pts[tgt]]
    face_m, mouth_m = np.stack(face), np.stack(mouth)
    print(f"{len(face)} targets; the face hull covers {face_m.mean():.0%} of the crop\n")
    print("| method | MSE face | MSE outside | share of squared error outside the face | in the mouth |")
    print("|---|---:|---:|---:|---:|")
    for name, v in err.items():
        e = np.concatenate(v)
        total = e.sum()
        print(f"| {name} | {e[face_m].mean():.0f} | {e[~face_m].mean():.0f} | {e[~face_m].sum() / total:.0%} | "
              f"{e[mouth_m].sum() / total:.0%} |")
    if a.map:
        m = np.concatenate(err["warp"]).mean(0)
        cv2.imwrite(a.map, np.clip(255 * m / np.percentile(m, 99.5), 0, 255).astype(np.uint8))
        print(f"\nwrote {a.map}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
