"""Developer tool: a checkpoint in files small enough for the lent GPU machines' transfer limit (16 MiB per file
coming back from a run).

    python tools/transfer_checkpoint.py SRC DST [--mb 15] [--full]

writes DST from the checkpoint SRC with every weights file at most ``--mb`` MiB (shards + index; loading reads
them like one file). Default: the compact export (E_ema/G_ema/D in float16, as the bundled default model is
made); ``--full``: every module and the training state, for resuming elsewhere. Stage-1 runs there write such
checkpoints directly with ``train.shard_mb=15``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRANSFER_MB = 15  # under the 16 MiB a file may have coming back from a lent machine


def main(argv: list[str] | None = None) -> int:
    from reenact.checkpoint import export_checkpoint, load_checkpoint, save_checkpoint, shard_bytes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--mb", type=float, default=TRANSFER_MB, help=f"MiB per file at most (default {TRANSFER_MB})")
    ap.add_argument("--full", action="store_true", help="all modules and the training state, as stored")
    a = ap.parse_args(argv)
    limit = shard_bytes(a.mb)
    if not a.full:
        out = export_checkpoint(a.src, a.dst, max_file_bytes=limit)
    else:
        from types import SimpleNamespace

        ck = load_checkpoint(a.src, train_state=True)
        # save_checkpoint reads each module's state_dict(): hand it the tensors as read, without building networks
        stored = {n: SimpleNamespace(state_dict=lambda w=w: w) for n, w in ck.weights.items()}
        out = save_checkpoint(a.dst, stored, ck.config, ck.meta, ck.train_state,
                              state_dtype=ck.meta.get("state_dtype", "float32"), max_file_bytes=limit)
    for f in sorted(out.iterdir()):
        print(f"{f.stat().st_size / 2**20:7.2f} MiB  {f.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
