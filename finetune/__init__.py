"""Stage 2 of Zakharov et al. 2019: few-shot personalisation of a meta-learned model into an avatar.

Most users want ``reenact.Reenactor`` (which calls this package). Pieces, imported lazily:
``load_shots`` (source images -> crops + landmarks), ``finetune.personalize.personalize`` / ``FinetuneOptions`` (embedding,
feed-forward or fine-tuning), ``Avatar`` (rendering and the avatar file). The base model it starts from is the
core's ``reenact.models.BaseModel``.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Avatar": "finetune.avatar",
    "Source": "reenact.avatar",
    "FinetuneOptions": "finetune.personalize",
    "Personalization": "finetune.personalize",
    "Shot": "finetune.shots",
    "load_shots": "finetune.shots",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
