"""68-point facial landmarks: one type (`FaceLandmarks`), interchangeable backends, video tracking.

``create_detector("dlib")`` is the offline default. ``"face_alignment"`` (GPU-capable) needs its weights
present locally; ``"mediapipe"`` is an optional extra. Backends are imported lazily.
"""
from __future__ import annotations

import importlib

from reenact.landmarks.base import FaceLandmarks, LandmarkDetector

_BACKENDS = {
    "dlib": "reenact.landmarks.dlib:DlibDetector",
    "face_alignment": "reenact.landmarks.face_alignment:FaceAlignmentDetector",
    "mediapipe": "reenact.landmarks.mediapipe:MediaPipeDetector",
}

BACKENDS = tuple(_BACKENDS)


def create_detector(backend: str = "dlib", **kwargs) -> LandmarkDetector:
    """A landmark detector by name (see ``BACKENDS``); kwargs go to its constructor."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown landmark backend {backend!r}; choose one of {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["BACKENDS", "FaceLandmarks", "LandmarkDetector", "create_detector"]
