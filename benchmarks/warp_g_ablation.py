"""Where does the warp-guided generator lose to the classical warp? Held-out self-reenactment of its parts.

Runs ``reenact eval --protocol self`` (same clips, targets, metrics) with extra methods that take the warp-guided
G apart at inference, feed-forward (no fine-tuning):

- ``warp``: the reference piecewise-affine warp of the nearest source; ``tps``: the same with a thin-plate spline
  (what the generator warps with);
- ``model``: the generator's output;
- ``fused``: the generator's own warp after its predicted residual flow and the fusion of the K shots, before the
  synthesis branch and the blend mask (what the mask would pass through at m = 1);
- ``noflow``: the generator's output with the residual flow forced to zero;
- ``nearest``: the generator given only the nearest source per target (as the warp uses it), for K > 1.

``--ft-steps N`` fine-tunes each avatar first (then ``model``/``fused``/``noflow`` are the fine-tuned G's);
``--ft-flip P`` and ``--ft-lr-g LR`` change the fine-tuning's mirror-flip probability and G's learning rate.

    python benchmarks/warp_g_ablation.py --data .devdata/prepared --checkpoint runs/warp2/checkpoints/step_0006000 \
        --shots 1,8 --out runs/ev/ablation

Prints the markdown table of ``results.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reenact.metrics import evaluate as ev  # noqa: E402
from warp_g_maps import generator_output  # noqa: E402

EXTRA = ("tps", "fused", "noflow", "nearest")


class _Parts:
    """One feed-forward model shared by the extra methods; remembers the fused warp of its last render."""

    def __init__(self, checkpoint: str, device: str, ft_steps: int = 0):
        self.model = ev.ModelRenderer(checkpoint, device, ft_steps=ft_steps, batch_size=1024)
        self.fused: np.ndarray | None = None

    def render(self, src, pts, tgt, flow: bool = True) -> np.ndarray:
        r = self.model
        if r.ft_steps == 0:
            r._last = None  # feed-forward avatars are cheap; a fine-tuned one is reused for the same sources
        with contextlib.ExitStack() as stack:
            if not flow:
                stack.enter_context(_zero_flow())
            out = r.render(src, pts, tgt)
            avatar = r._last[1]
            warp = generator_output(avatar, np.asarray(tgt) * (avatar.resolution / src.shape[1])).aux["warp"]
            self.fused = ((warp.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) \
                .permute(0, 2, 3, 1).cpu().numpy()
        return out


@contextlib.contextmanager
def _zero_flow():
    """Every FlowNet (the base's and fine-tuned copies) predicts no residual flow; confidences unchanged."""
    from reenact.models.warp_generator import FlowNet

    forward = FlowNet.forward

    def no_residual(self, x):
        f, logit = forward(self, x)
        return torch.zeros_like(f), logit

    FlowNet.forward = no_residual
    try:
        yield
    finally:
        FlowNet.forward = forward


class _Method:
    def __init__(self, parts: _Parts, kind: str):
        self.parts, self.kind = parts, kind

    def render(self, src, pts, tgt):
        p = self.parts
        if self.kind == "model":
            return p.render(src, pts, tgt)
        if self.kind == "fused":
            p.render(src, pts, tgt)
            return p.fused
        if self.kind == "noflow":
            return p.render(src, pts, tgt, flow=False)
        if self.kind == "nearest":
            near = ev.nearest_source(pts, tgt)
            out = np.empty((len(tgt),) + src.shape[1:], np.uint8)
            for k in np.unique(near):
                sel = near == k
                out[sel] = p.render(src[k:k + 1], pts[k:k + 1], tgt[sel])
            return out
        raise ValueError(self.kind)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shots", default="1")
    ap.add_argument("--methods", default="warp,tps,model,fused,noflow")
    ap.add_argument("--clips", type=int, default=None)
    ap.add_argument("--frames-per-clip", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ft-steps", type=int, default=0)
    ap.add_argument("--ft-flip", type=float, default=None)
    ap.add_argument("--ft-lr-g", type=float, default=None)
    a = ap.parse_args(argv)
    methods = tuple(a.methods.split(","))
    if a.ft_flip is not None or a.ft_lr_g is not None:
        import dataclasses

        import finetune.personalize as fp

        plain = fp.personalize
        change = {k: v for k, v in (("flip", a.ft_flip), ("lr_g", a.ft_lr_g)) if v is not None}
        fp.personalize = lambda base, shots, options=None: plain(base, shots, dataclasses.replace(options, **change))
    parts = _Parts(a.checkpoint, a.device, a.ft_steps)
    base_make = ev.make_renderer

    def make(method, opts):
        if method == "tps":
            return ev.WarpRenderer("tps", opts.device, opts.batch_size)
        if method in ("model",) + EXTRA:
            return _Method(parts, method)
        return base_make(method, opts)

    ev.METHODS = tuple(ev.METHODS) + EXTRA
    ev.make_renderer = make
    opts = ev.EvalOptions(protocol="self", methods=methods, shots=tuple(int(s) for s in a.shots.split(",")),
                          checkpoint=a.checkpoint, clips=a.clips, frames_per_clip=a.frames_per_clip,
                          device=a.device, sync_seconds=0)
    report = ev.run_eval(a.data, a.out, opts)
    print((Path(a.out) / "results.md").read_text())
    print(f"{report.seconds} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
