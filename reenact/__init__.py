"""reenact: few-shot, landmark-driven face reenactment.

The public API is imported lazily so that `import reenact` is cheap and has no side effects
(no torch import, no model loading, no downloads).

Conventions used everywhere in the project:
- images are RGB uint8 arrays ``(H, W, 3)`` on the numpy side;
- tensors are ``(B, C, H, W)`` float in ``[-1, 1]`` on the network side;
- landmarks are 68 points in iBUG order, ``(68, 2)`` float32 pixel coordinates ``(x, y)``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "FaceLandmarks": "reenact.landmarks.base",
    "FaceTrack": "reenact.landmarks.track",
    "NoFaceError": "reenact.errors",
    "MultipleFacesError": "reenact.errors",
    "InputError": "reenact.errors",
    "ReenactError": "reenact.errors",
    "CheckpointError": "reenact.errors",
    "Reenactor": "reenact.api",
    "Avatar": "reenact.avatar",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from reenact.avatar import Avatar
    from reenact.api import Reenactor
    from reenact.errors import CheckpointError, InputError, MultipleFacesError, NoFaceError, ReenactError
    from reenact.landmarks.base import FaceLandmarks
    from reenact.landmarks.track import FaceTrack


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reenact' has no attribute {name!r}")
