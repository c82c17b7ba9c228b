"""The one device picker of the project: what ``device="auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` mean.

Every entry point (the API, the CLI, stage-1 and speech training, landmark backends) resolves its ``device``
option here, so the same string means the same device everywhere and a device this machine lacks is refused
before any work starts.
"""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA device ``local_rank`` when CUDA is available, else the CPU. ``"cuda"`` (no index): CUDA
    device ``local_rank``: under torchrun each process drives its own GPU. Anything else: ``torch.device(device)``.

    Raises ValueError naming the option when CUDA is asked for and missing, or the index is out of range."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device (use 'auto', 'cpu', 'cuda' or 'cuda:N'): {exc}") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    if dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    count = torch.cuda.device_count()
    if dev.index >= count:
        raise ValueError(f"device={device!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    return dev
