"""Driving an avatar with another person's video, live or from a file (identity-preserving retargeting).

    from reenact import Reenactor
    from puppeteer import animate, drive, puppeteer_video, RetargetOptions

    avatar, result = animate("me.jpg", "driver.mp4", "out.mp4", steps=100)   # personalise, then drive
    avatar = Reenactor.load("runs/small").personalize(["me.jpg"], steps=100)
    result = puppeteer_video(avatar, "driver.mp4", "out.mp4", into="me.jpg")   # full frame, driver's audio
    for frame in drive(avatar, camera_or_video_frames):                       # streaming, lazily
        ...

Pieces, imported lazily: ``puppeteer.retarget`` (``Retargeter``, ``RetargetOptions``, ``choose_reference``:
landmark geometry only), ``reenact.landmarks.live`` (``CheckedDetector``, ``LiveTracker``), ``puppeteer.drive``
(``puppeteer_video``, ``drive`` / ``LiveDriver``, ``Camera``, ``Compositor``), ``puppeteer.oneshot``
(``animate``: personalise a photo, then drive it), ``puppeteer.live``
(``run_live`` / ``LiveRun``: real time, each stage on its own thread, late frames dropped), ``puppeteer.measure``
(``jitter``, ``shape_ratios``). Driving from speech will live in ``puppeteer.audio``.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Retargeter": "puppeteer.retarget",
    "RetargetOptions": "puppeteer.retarget",
    "choose_reference": "puppeteer.retarget",
    "retarget": "puppeteer.retarget",
    "CheckedDetector": "reenact.landmarks.live",
    "LiveTracker": "reenact.landmarks.live",
    "puppeteer_video": "puppeteer.drive",
    "animate": "puppeteer.oneshot",
    "drive": "puppeteer.drive",
    "LiveDriver": "puppeteer.drive",
    "DriveResult": "puppeteer.drive",
    "Camera": "puppeteer.drive",
    "Compositor": "puppeteer.drive",
    "run_live": "puppeteer.live",
    "LiveRun": "puppeteer.live",
    "jitter": "puppeteer.measure",
    "shape_ratios": "puppeteer.measure",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'puppeteer' has no attribute {name!r}")
