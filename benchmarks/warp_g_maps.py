"""Where does the warp-guided G paint, and where does painting cost? Feed-forward, 1 shot, held-out targets.

For each target of ``reenact eval --protocol self`` (same clips and frames), the generator's blend mask gives the
share painted by its synthesis branch (``1 - mask``; 0 = G's own warp passed through). Compares the squared error
of the output with that of G's own warp (before synthesis) by how much was painted, and writes two mean maps:
the painted share, and where the output is worse than G's own warp.

    python benchmarks/warp_g_maps.py --data .devdata/prepared --checkpoint reenact/weights/default \
        --out docs/images
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


def generator_output(avatar, points: np.ndarray):
    """The avatar's ``GeneratorOutput`` (image, ``aux`` warp and blend mask) for ``points`` ``(N, 68, 2)`` in its
    crop pixels: what ``Avatar.render_batch`` computes before it keeps only the image."""
    import torch

    from reenact.draw import rasterize

    p = torch.from_numpy(np.asarray(points, np.float32)).to(avatar.base.device)
    with torch.inference_mode():
        return avatar.G.forward_psi(rasterize(p, avatar.resolution) * 2 - 1, avatar.psi, **avatar._source_inputs(p))


def to_png(path: Path, m: np.ndarray) -> None:
    m = np.clip(m, 0, None)
    cv2.imwrite(str(path), np.clip(255 * m / max(np.percentile(m, 99.5), 1e-9), 0, 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    opts = ev.EvalOptions(methods=("model",), shots=(1,), checkpoint=a.checkpoint, sync_seconds=0)
    ds = PreparedDataset(a.data)
    r = ev.ModelRenderer(a.checkpoint, a.device, ft_steps=0, batch_size=64)
    painted, err_out, err_warp = [], [], []
    for _, frames, pts, src, tgt in ev.self_targets(ds, opts):
        r._last = None
        out = r.render(frames[src], pts[src], pts[tgt]).astype(np.float32)
        avatar = r._last[1]
        aux = generator_output(avatar, pts[tgt] * (avatar.resolution / frames.shape[1])).aux
        real = frames[tgt].astype(np.float32)
        own = ((aux["warp"].float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).cpu().numpy()
        painted.append(1 - (aux["mask"].float().squeeze(1).cpu().numpy() + 1) / 2)
        err_out.append(((out - real) ** 2).mean(-1))
        err_warp.append(((own - real) ** 2).mean(-1))
    syn, eo, ew = (np.concatenate(v) for v in (painted, err_out, err_warp))
    d = eo - ew
    print(f"{len(syn)} targets; painted share {syn.mean():.3f} of the crop; MSE of the output {eo.mean():.0f}, "
          f"of G's own warp {ew.mean():.0f}\n")
    print("| painted share | pixels | MSE output | MSE G's warp | share of the output's extra error |")
    print("|---|---:|---:|---:|---:|")
    for name, sel in (("> 0.5", syn > 0.5), ("0.1 - 0.5", (syn > 0.1) & (syn <= 0.5)), ("<= 0.1", syn <= 0.1)):
        print(f"| {name} | {sel.mean():.1%} | {eo[sel].mean():.0f} | {ew[sel].mean():.0f} | "
              f"{d[sel].sum() / d.sum():.0%} |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    to_png(out / "warp_g_painted_share.png", syn.mean(0))
    to_png(out / "warp_g_worse_than_own_warp.png", d.mean(0))
    print(f"\nwrote {out / 'warp_g_painted_share.png'}, {out / 'warp_g_worse_than_own_warp.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
