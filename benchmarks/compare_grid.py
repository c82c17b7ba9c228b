"""Side-by-side grid of held-out self-reenactment from a render cache: real | warp | models ... (full resolution).

    python benchmarks/compare_grid.py --data .devdata/prepared --cache runs/cache/cache --shots 1 \
        --column "warp=warp-pa-k1" --column "base G, FT=model-f411d2c66c82-ft40-s0-k1" \
        --column "warp-guided G, FT=model-d4f0b24361e9-ft40-s0-k1" --rows 6 --out docs/images/grid.jpg

Each column is a cache tag of ``reenact.metrics.render_cache`` (fill it with ``reenact eval --render-cache`` or
``python -m reenact.metrics.render_cache``); rows are the first target of evenly spaced held-out clips.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from reenact import io
    from reenact.data.dataset import PreparedDataset
    from reenact.metrics.evaluate import EvalOptions
    from reenact.metrics.harness import CachedRenderer, clip_pool, grid_image, select_frames, stored_points

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--column", action="append", required=True, help="LABEL=CACHE_TAG")
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--target", type=int, default=3, help="which of the clip's 8 eval targets to show")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cols = [c.split("=", 1) for c in a.column]
    ds = PreparedDataset(a.data)
    pool = clip_pool(ds, EvalOptions())
    rows = []
    for clip in [pool[i] for i in np.linspace(0, len(pool) - 1, a.rows).round().astype(int)]:
        frames = ds.frames(clip)
        pts, valid = stored_points(ds.meta(clip))
        _, tgt = select_frames(valid, 1, 8)
        src, _ = select_frames(valid, a.shots, 1)
        row = [frames[tgt][a.target]]
        for _, tag in cols:
            path = CachedRenderer(None, a.cache, tag).key(pts[src], pts[tgt])
            if not path.exists():
                raise SystemExit(f"{path}: not in the cache (render it first)")
            with np.load(path, allow_pickle=False) as z:
                row.append(z["frames"][a.target])
        s = row[0].shape[0]
        rows.append([r if r.shape[0] == s else __import__("cv2").resize(r, (s, s)) for r in row])
    s = min(r[0].shape[0] for r in rows)
    import cv2

    rows = [[t if t.shape[0] == s else cv2.resize(t, (s, s), interpolation=cv2.INTER_AREA) for t in r] for r in rows]
    img = grid_image(rows, ["real"] + [c[0] for c in cols])
    print(io.write_image(a.out, img))


if __name__ == "__main__":
    main()
