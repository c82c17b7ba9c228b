"""Multi-GPU / multi-node training with torchrun + DistributedDataParallel.

Launch: ``torchrun --nproc_per_node=8 -m meta_learning.train --preset small ...`` (multi-node: add
``--nnodes=N --node_rank=R --rdzv_endpoint=HOST:PORT``). Each process reads RANK / LOCAL_RANK / WORLD_SIZE,
joins the ``env://`` process group (NCCL on CUDA, gloo on CPU) and drives one device. NCCL's settings are the
launcher's: this module reads the environment and changes none of it (``tools/torchrun.sh`` turns NVLink
multicast off for machines whose partitioned GPUs hang on it).

- Data: the episode sampler shards each global batch by rank (see ``EpisodeSampler``), so the union of the
  ranks' batches equals one process's batch of ``batch_size * world_size`` episodes.
- Rank 0 alone logs, validates, writes samples and checkpoints.
- Gradients: E+G and D are two DDP modules; DDP averages gradients over ranks, which equals the gradient of
  the global-batch mean loss because every loss is a per-sample mean over equally sized per-rank batches.
- The per-video table ``W`` (D's ``nn.Embedding``) is an ordinary dense parameter. A rank's backward writes
  gradient only into the rows of the clips in its batch; all other rows get exactly zero (the embedding
  lookup's backward is a scatter into the rows it read). The all-reduce then sums the ranks' rows, giving the
  global-batch gradient. Cost: ``num_videos * embed_dim * 4`` bytes per step (150k clips x 512: 300 MB; on
  NVLink a few ms; consider sparse handling across slow inter-node links).
  Adam and the rows not in the batch: with the default ``beta1 = 0`` (SAGAN/TTUR) there is no momentum, so a
  row with zero gradient does not move at all; its second moment decays by ``beta2`` per step, which bounds
  the next update of a long-unseen row at ``lr / sqrt(1 - beta2)`` (~3.2 lr for beta2 = 0.9) per element -
  harmless. With ``beta1 > 0`` unseen rows would keep drifting along stale momentum; a separate optimiser for
  W or SparseAdam would then be the fix. We keep W in D's optimiser (D's learning rate, as in the paper).
- Buffers (spectral-norm vectors) are identical on all ranks (they depend on weights only), so DDP's buffer
  broadcast is switched off.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from reenact.device import resolve_device

@dataclass
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 1800) -> DistEnv:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single-process env.
    Reads the environment torchrun sets and changes none of it (NCCL switches are the launcher's to set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, env: DistEnv) -> nn.Module:
    """DDP-wrap ``module`` when running distributed (buffers are not broadcast: see module docstring)."""
    if not env.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    import warnings

    ids = [env.device.index] if env.device.type == "cuda" else None
    with warnings.catch_warnings():  # newer torch renames the flag; the old one keeps init-time semantics
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return DDP(module, device_ids=ids, broadcast_buffers=False)


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean over ranks (in place; no-op single-process). A NaN on any rank makes the result NaN everywhere,
    so all ranks stop together."""
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= env.world_size
    return t


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
