"""Render on one machine, score on another: a cache of a method's outputs for ``reenact eval``.

Scoring needs dlib (identity, landmarks) and a CPU is enough for it; rendering with fine-tuning needs a GPU. The
two do not always live on one machine (our GPU image has no dlib). So ``python -m reenact.metrics.render_cache``
renders the self-reenactment targets of ``reenact eval`` (same clips, sources and targets, same seed) and stores
each call's outputs losslessly, and ``reenact eval --render-cache DIR`` reads them back instead of rendering.

Entries are keyed by the method's tag (method, K, fine-tuning steps, checkpoint name) and a hash of the call's
inputs (source and target landmarks), so a cache never answers for a different question; a missing entry is
rendered (and stored) as usual. The cache itself (:class:`~reenact.metrics.harness.CachedRenderer`,
:func:`~reenact.metrics.harness.method_tag`) is the harness's, which ``reenact eval`` reads through; this module
fills it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from reenact.metrics.harness import CachedRenderer, method_tag


def render_only(data: str | Path, cache: str | Path, opts) -> dict[str, int]:
    """Render every (clip, K) call of the self protocol of ``reenact eval`` into ``cache``; no scoring (no dlib).
    Returns the number of calls rendered per tag."""
    from tqdm.auto import tqdm

    from reenact.data.dataset import PreparedDataset
    from reenact.metrics.harness import clip_pool, make_renderer, select_frames, stored_points

    if opts.protocol != "self":
        raise ValueError("render_only supports the self protocol")
    ds = PreparedDataset(data)
    pool = clip_pool(ds, opts)
    base = {m: make_renderer(m, opts) for m in opts.methods}
    counts: dict[str, int] = {}
    for clip in tqdm(pool, desc="render", unit="clip", disable=not opts.progress):
        frames = ds.frames(clip)
        pts, valid = stored_points(ds.meta(clip))
        _, tgt = select_frames(valid, 1, opts.frames_per_clip)
        for k in opts.shots:
            src, _ = select_frames(valid, k, 1)
            if src is None:
                continue
            for m, r in base.items():
                tag = method_tag(m, k, opts)
                CachedRenderer(r, cache, tag).render(frames[src], pts[src], pts[tgt])
                counts[tag] = counts.get(tag, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> None:
    from reenact.metrics.evaluate import EvalOptions

    ap = argparse.ArgumentParser(description="Render reenact eval's self-reenactment targets into a cache "
                                             "(score later with `reenact eval --render-cache DIR`).")
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--method", default="model")
    ap.add_argument("--checkpoint")
    ap.add_argument("--shots", default="1,8")
    ap.add_argument("--ft-steps", type=int, default=0)
    ap.add_argument("--ft-train", choices=["all", "psi"], default="all")
    ap.add_argument("--ft-lr-psi", type=float, default=None)
    ap.add_argument("--ft-warp-trust", type=float, default=0.0)
    ap.add_argument("--clips", type=int)
    ap.add_argument("--frames-per-clip", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    opts = EvalOptions(methods=tuple(a.method.split(",")), shots=tuple(int(s) for s in a.shots.split(",")),
                       ft_steps=a.ft_steps, checkpoint=a.checkpoint, clips=a.clips,
                       frames_per_clip=a.frames_per_clip, seed=a.seed, device=a.device, ft_train=a.ft_train,
                       ft_lr_psi=a.ft_lr_psi, ft_warp_trust=a.ft_warp_trust)
    for tag, n in render_only(a.data, a.cache, opts).items():
        print(f"{tag}: {n} calls")


if __name__ == "__main__":
    main()
