"""Errors users see. Every input problem names the file (or source) and the problem."""
from __future__ import annotations

import os


class ReenactError(Exception):
    """Base class of all errors raised on purpose by reenact."""


class InputError(ReenactError, ValueError):
    """Bad input: the message names the file and what is wrong with it."""

    def __init__(self, source: str | os.PathLike | None, problem: str, hint: str | None = None):
        self.source = str(source) if source is not None else "<input>"
        self.problem = problem
        self.hint = hint
        msg = f"{self.source}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class MediaError(InputError):
    """A media file is missing, unreadable, corrupt, truncated or has no usable stream."""


class NoFaceError(InputError):
    """No face was found where one was required."""

    def __init__(self, source=None, problem: str = "no face found", hint: str | None = None):
        super().__init__(source, problem, hint or "crop closer to the face, or pass landmarks explicitly")


class MultipleFacesError(InputError):
    """Several faces were found where one was required."""

    def __init__(self, source=None, count: int = 2, hint: str | None = None):
        self.count = count
        super().__init__(source, f"{count} faces found, expected one",
                         hint or "crop to one face, or choose multiple='largest'")


class CheckpointError(ReenactError):
    """A checkpoint or avatar file is missing, malformed or does not match its base model."""


class NonFiniteLossError(ReenactError, FloatingPointError):
    """A training or fine-tuning loss became NaN/Inf; the update it would have made was not applied. The message
    names the step, the update (generator / discriminator) and the losses that were not finite."""
