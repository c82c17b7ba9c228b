"""Checks of option values shared by the CLI and the Python entry points, so a bad value is refused before any
work starts, by the same rule and with the same message whichever way it came in.

Each check returns the value and raises :class:`reenact.errors.InputError` naming the option and the problem.
The CLI turns that into an argparse error (exit 2, one line).
"""
from __future__ import annotations

import math

from reenact.errors import InputError

__all__ = ["at_least", "positive", "between", "optional_at_least", "crf", "fps", "device", "CRF_RANGE",
           "FPS_MAX", "SPEECH_RATE"]

CRF_RANGE = (0, 51)  # libx264's quality scale: 0 lossless, 51 worst
FPS_MAX = 1000.0  # far above any camera; a guard against typos like --fps 25000
SPEECH_RATE = (80, 450)  # words per minute eSpeak NG accepts


def _number(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(name, f"must be a finite number, got {value!r}")
    return v


def at_least(value, minimum, name: str):
    """``value >= minimum``."""
    if _number(value, name) < minimum:
        raise InputError(name, f"must be at least {minimum}, got {value}")
    return value


def optional_at_least(value, minimum, name: str):
    """None (no limit), or ``value >= minimum``."""
    return None if value is None else at_least(value, minimum, name)


def positive(value, name: str):
    """``value > 0``."""
    if _number(value, name) <= 0:
        raise InputError(name, f"must be greater than 0, got {value}")
    return value


def between(value, lo, hi, name: str, unit: str = ""):
    """``lo <= value <= hi``."""
    if not lo <= _number(value, name) <= hi:
        raise InputError(name, f"must be between {lo} and {hi}{unit}, got {value}")
    return value


def crf(value, name: str = "crf"):
    """An H.264 quality (``CRF_RANGE``)."""
    return between(value, *CRF_RANGE, name)


def fps(value, name: str = "fps"):
    """A frame rate: above 0, at most ``FPS_MAX``."""
    positive(value, name)
    return between(value, 0, FPS_MAX, name)


def device(value: str, name: str = "device") -> str:
    """A device spec this machine has: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (torch is only imported for
    ``cuda``/``mps``-like specs, so checking the default costs nothing)."""
    if value in ("auto", "cpu"):
        return value
    from reenact.device import resolve_device  # noqa: PLC0415  (imports torch)

    try:
        resolve_device(value)
    except ValueError as e:
        raise InputError(name, str(e).replace(f"device={value!r}", repr(value), 1)) from None
    return value
