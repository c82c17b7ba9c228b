"""Command line of stage 1: ``python -m meta_learning.train --preset small data.root=DIR train.out_dir=runs/x``.

Dotted ``key=value`` overrides follow the preset (``train.batch_size=16 model.spectral_norm=false``). Under
torchrun every process runs this; rank 0 alone logs and writes checkpoints. Resuming is automatic
(``train.resume=auto``): rerunning the same command continues from ``out_dir/checkpoints/latest``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def train(cfg) -> Path:
    """Train from a resolved Config (joins the process group when launched by torchrun); returns out_dir."""
    from meta_learning import distributed
    from meta_learning.trainer import Trainer

    env = distributed.init_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, env=env)
        if env.is_main:
            from reenact.models import count_params

            n = {k: count_params(m) for k, m in (("E", trainer.E), ("G", trainer.G), ("D", trainer.D))}
            print(f"E {n['E'] / 1e6:.2f}M  G {n['G'] / 1e6:.2f}M  D {n['D'] / 1e6:.2f}M params; "
                  f"{len(trainer.dataset)} training clips; {env.world_size} process(es) on {env.device}; "
                  f"global batch {trainer.batch_size * env.world_size}", file=sys.stderr)
        trainer.fit()
        return Path(cfg.train.out_dir)
    finally:
        distributed.cleanup()


def parse(argv: list[str] | None = None):
    from reenact.config import load_config, presets

    p = argparse.ArgumentParser(prog="meta_learning.train", description="Stage 1: meta-learning of E, G, D.")
    p.add_argument("--preset", default="small", help=f"preset name ({', '.join(presets())}) or a YAML path")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.root=DIR train.steps=1000")
    a = p.parse_args(argv)
    bad = [o for o in a.overrides if "=" not in o]
    if bad:
        p.error(f"overrides must be key=value, got: {' '.join(bad)}")
    return load_config(a.preset, a.overrides)


def main(argv: list[str] | None = None) -> int:
    train(parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
