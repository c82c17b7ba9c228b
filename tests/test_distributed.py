"""DDP on CPU (gloo): two processes with B episodes each make the same first update as one process with 2B."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from reenact.config import load_config


def _cfg(out, batch_size):
    return load_config("tiny", [f"train.out_dir={out}", f"train.batch_size={batch_size}", "train.progress=false",
                                "train.augment=false", "train.val_every=0", "train.sample_every=0",
                                "train.checkpoint_every=1000", "train.resume=none", "train.device=cpu"])


def _params(trainer, grads: bool = False) -> dict[str, torch.Tensor]:
    mods = (("E", trainer.E), ("G", trainer.G), ("D", trainer.D))
    out = {f"{m}.{k}": v.detach().clone() for m, mod in mods for k, v in mod.state_dict().items()}
    if grads:  # the last backward of each network (G/E update, D update) leaves its averaged gradients
        out.update({f"grad:{m}.{k}": p.grad.detach().clone() for m, mod in mods for k, p in mod.named_parameters()})
    return out


def _worker(rank: int, world: int, port: int, clip: str, out: str) -> None:
    from safetensors.torch import save_file

    from meta_learning import distributed
    from meta_learning.trainer import Trainer
    from test_trainer import StandInEpisodes

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    env = distributed.init_distributed("cpu")
    try:
        cfg = _cfg(out, batch_size=1)
        t = Trainer(cfg, env=env, dataset=StandInEpisodes(clip, k=cfg.data.k_shots))
        logs = t.train_step(next(iter(t.loader())))
        tensors = _params(t, grads=True)
        tensors["g_total"] = torch.tensor(logs["g_total"])
        save_file(tensors, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_on_combined_batch(tmp_path, talking_clip):
    from safetensors.torch import load_file

    from meta_learning.trainer import Trainer
    from test_trainer import StandInEpisodes

    mp.spawn(_worker, args=(2, _free_port(), str(talking_clip), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))

    cfg = _cfg(tmp_path / "single", batch_size=2)
    ds = StandInEpisodes(talking_clip, k=cfg.data.k_shots)
    single = Trainer(cfg, dataset=ds)
    init = _params(single)
    logs = single.train_step(next(iter(single.loader())))
    after = _params(single, grads=True)

    assert r0["g_total"].item() == pytest.approx(logs["g_total"], rel=1e-5)  # losses averaged over ranks
    lr = {"E": cfg.train.lr_g, "G": cfg.train.lr_g, "D": cfg.train.lr_d}
    # gradient scale of each network: float32 reduction-order noise is ~1e-6 of it
    scale = {n: max(v.abs().max().item() for k, v in after.items() if k.startswith(f"grad:{n}.")) for n in lr}
    moved = 0
    for k, v in after.items():
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=lambda m: f"ranks disagree on {k}: {m}")
        net = k.removeprefix("grad:").split(".")[0]
        noise = 1e-5 * scale[net]
        if k.startswith("grad:"):  # all-reduced gradient == gradient of the combined batch
            torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=noise,
                                       msg=lambda m: f"DDP gradient != single process on {k}: {m}")
            continue
        # Adam's first step is lr * g / (|g| + eps): where g ~ 0 (e.g. biases cancelled by a following norm)
        # it amplifies gradient rounding noise, so the bound is elementwise: d(update)/dg = lr eps / (|g|+eps)^2
        g = after.get(f"grad:{k}")
        if g is None:  # buffers (spectral-norm vectors)
            torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6)
            continue
        eps = 1e-8
        bound = 1e-7 + torch.clamp(2 * lr[net] * eps * noise / (g.abs() + eps) ** 2, max=2 * lr[net])
        err = (r0[k] - v).abs()
        assert (err <= bound).all(), f"DDP parameters != single process on {k}: max err {err.max().item():.3g}"
        moved += int(not torch.equal(v, init[k]))
    assert moved > len([k for k in after if k.startswith("grad:")]) // 2  # the step really updated the nets

    # the per-video table: rows of both ranks' clips moved, the others did not
    w_init, w_after = init["D.W.weight"], after["D.W.weight"]
    touched = (w_after != w_init).any(dim=1)
    assert touched.sum() == 2
