"""Render on one machine, score on another: a cache of a method's outputs for ``reenact eval``.

Scoring needs dlib (identity, landmarks) and a CPU is enough for it; rendering with fine-tuning needs a GPU. The
two do not always live on one machine (our GPU image has no dlib). So ``python -m reenact.metrics.render_cache``
renders the self-reenactment targets of ``reenact eval`` (same clips, sources and targets, same seed) and stores
each call's outputs losslessly, and ``reenact eval --render-cache DIR`` reads them back instead of rendering.

Entries are keyed by the method's tag (method, K, fine-tuning steps, checkpoint name) and a hash of the call's
inputs (source and target landmarks), so a cache never answers for a different question; a missing entry is
rendered (and stored) as usual.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


class CachedRenderer:
    """Wraps a renderer (``render(src_images, src_points, tgt_points) -> frames``) with an on-disk cache."""

    def __init__(self, renderer, directory: str | Path, tag: str):
        self.renderer, self.dir, self.tag = renderer, Path(directory), tag
        self.hits = self.misses = 0

    def key(self, src_points: np.ndarray, tgt_points: np.ndarray) -> Path:
        h = hashlib.sha1()
        for a in (src_points, tgt_points):
            a = np.ascontiguousarray(a, np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return self.dir / f"{self.tag}-{h.hexdigest()[:20]}.npz"

    def render(self, src_images, src_points, tgt_points):
        path = self.key(src_points, tgt_points)
        if path.exists():
            with np.load(path, allow_pickle=False) as z:  # plain arrays only: never unpickle
                self.hits += 1
                return z["frames"]
        self.misses += 1
        out = self.renderer.render(src_images, src_points, tgt_points)
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, frames=np.asarray(out, np.uint8))
            os.replace(tmp, path)  # atomic: a killed run leaves no half-written entry
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out


def method_tag(method: str, k: int, opts) -> str:
    """Cache tag of one method at K shots: the settings that change its outputs."""
    if method != "model":
        return f"{method}-{getattr(opts, 'warp_kind', 'pa') if method == 'warp' else 'x'}-k{k}"
    ft = f"ft{int(opts.ft_steps)}"
    if int(opts.ft_steps):  # only settings away from the paper's FT enter the tag
        ft += ("" if opts.ft_train == "all" else opts.ft_train) \
            + ("" if opts.ft_lr_psi is None else f"lr{float(opts.ft_lr_psi):g}") \
            + (f"wt{float(opts.ft_warp_trust):g}" if opts.ft_warp_trust else "")
    # "-v2": sources given to the model as they are; caches of the earlier harness, which cropped them again,
    # must not answer for it
    return f"model-{checkpoint_tag(opts.checkpoint)}-{ft}-s{int(opts.seed)}-k{k}-v2"


def checkpoint_tag(checkpoint: str | Path) -> str:
    """A checkpoint's name in cache tags: from its content (meta.json: step, save time), not its path, so a cache
    rendered from a copy on another machine matches the original here. The weights hash that loading caches in
    meta.json (``reenact.checkpoint.checkpoint_hash``) is left out: a first load must not rename the checkpoint."""
    import json

    from reenact.checkpoint import HASH_KEY, resolve_checkpoint

    meta = json.loads((resolve_checkpoint(str(checkpoint)) / "meta.json").read_text())
    meta.pop(HASH_KEY, None)
    # the exact text checkpoint.save_checkpoint writes, so tags of never-loaded checkpoints did not change
    return hashlib.sha1(json.dumps(meta, indent=1, sort_keys=True).encode()).hexdigest()[:12]


def render_only(data: str | Path, cache: str | Path, opts) -> dict[str, int]:
    """Render every (clip, K) call of the self protocol of ``reenact eval`` into ``cache``; no scoring (no dlib).
    Returns the number of calls rendered per tag."""
    from tqdm.auto import tqdm

    from reenact.data.dataset import PreparedDataset
    from reenact.metrics.evaluate import _clip_pool, _stored_points, make_renderer, select_frames

    if opts.protocol != "self":
        raise ValueError("render_only supports the self protocol")
    ds = PreparedDataset(data)
    pool = _clip_pool(ds, opts)
    base = {m: make_renderer(m, opts) for m in opts.methods}
    counts: dict[str, int] = {}
    for clip in tqdm(pool, desc="render", unit="clip", disable=not opts.progress):
        frames = ds.frames(clip)
        pts, valid = _stored_points(ds.meta(clip))
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
