"""What an avatar is, for everything that renders one: the interface ``reenact.Avatar`` and its :class:`Source`.

An avatar is one person, ready to render from landmarks. The kinds are made in the personalisation stage
(``finetune.avatar.Avatar``: the crop generator, pasted back; ``finetune.photo_avatar.PhotoAvatar``: the photo
renderer) and all implement :class:`Avatar`, so that the core, the driving stage (``puppeteer``) and the front
door depend on this interface, never on a stage's classes. This module imports no stage (and no torch).
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reenact.errors import InputError


@dataclass(frozen=True)
class Source:
    """One source image of an avatar, as its file stores it: ``name`` (path or ``<image i>``), ``size``
    ``(H, W)``, ``points`` ``(68, 2)`` full-image pixels, ``crop_points`` ``(68, 2)`` crop pixels, ``matrix``
    ``(2, 3)`` full -> crop, ``landmarks_from`` (detector name, landmarks file or ``"array"``).

    ``finetune.shots.Shot`` is a Source that also carries its pixels (the crop, the full image)."""

    name: str
    size: tuple[int, int]
    points: np.ndarray
    crop_points: np.ndarray
    matrix: np.ndarray
    landmarks_from: str = ""

    @classmethod
    def of(cls, source: "Source") -> "Source":
        """The stored part of ``source`` (e.g. a ``Shot`` without its pixels), arrays as float32."""
        return Source(source.name, tuple(source.size), np.asarray(source.points, np.float32),
                      np.asarray(source.crop_points, np.float32), np.asarray(source.matrix, np.float32),
                      source.landmarks_from)


class Avatar(ABC):
    """One person, ready to render from landmarks: ``reenact.Avatar``. Made by ``Reenactor.personalize``;
    saved with :meth:`save`, re-opened with :meth:`load` (or ``Reenactor.load_avatar``).

    Every avatar has ``sources`` (list of :class:`Source`, one per source image), ``resolution`` (crop side S),
    ``base_hash`` (SHA-256 of the base model it was made from) and ``renders_photo`` (True when it renders whole
    frames of its photo natively: pipelines then ask for those instead of pasting crops back).
    """

    sources: list[Source]
    renders_photo: bool = False

    # -- what each kind implements -----------------------------------------------------------------
    @property
    @abstractmethod
    def resolution(self) -> int:
        """Side S of the face crops :meth:`render_batch` returns."""

    @property
    @abstractmethod
    def base_hash(self) -> str:
        """SHA-256 of the base model's weights."""

    @abstractmethod
    def render_batch(self, points: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """``points`` ``(N, 68, 2)`` in crop pixels -> RGB uint8 ``(N, S, S, 3)``."""

    @abstractmethod
    def render_full_batch(self, points: np.ndarray, into: np.ndarray | str | os.PathLike | None = None,
                          shot: int = 0) -> np.ndarray:
        """``points`` ``(N, 68, 2)`` in the pixels of source image ``shot`` -> ``(N, H, W, 3)`` frames of that
        image (``into``: the image, array or path; a crop avatar needs it to paste back into)."""

    @abstractmethod
    def save(self, path: str | os.PathLike) -> Path:
        """Write the avatar file; returns its path."""

    @classmethod
    def load(cls, path: str | os.PathLike, reenactor: Any) -> "Avatar":
        """Open an avatar file onto the ``reenactor`` (a ``Reenactor``) it was made from, as the kind of avatar
        the file holds (``reenactor.load_avatar``); each kind's own ``load`` opens its kind only."""
        return reenactor.load_avatar(path)

    # -- shared by all kinds -----------------------------------------------------------------------
    @property
    def shots(self) -> int:
        return len(self.sources)

    @property
    def source_points(self) -> np.ndarray:
        """``(K, 68, 2)`` landmarks of the source crops, in crop pixels (a neutral pose to drive from)."""
        return np.stack([s.crop_points for s in self.sources])

    def render(self, points: np.ndarray) -> np.ndarray:
        """``points`` ``(68, 2)`` in crop pixels -> the rendered crop, RGB uint8 ``(S, S, 3)``."""
        return self.render_batch(_one(points, "crop"))[0]

    def render_full(self, points: np.ndarray, into: np.ndarray | str | os.PathLike | None = None,
                    shot: int = 0) -> np.ndarray:
        """Like :meth:`render_full_batch` for ``(68, 2)`` points -> one ``(H, W, 3)`` frame."""
        return self.render_full_batch(_one(points, "image"), into, shot)[0]

    def source_image(self, into: np.ndarray | str | os.PathLike | None,
                     shot: int = 0) -> tuple[np.ndarray, Source]:
        """The full-size image to paste shot ``shot`` back into (a path or an RGB uint8 array of the source's
        size), checked, with its :class:`Source`."""
        if not 0 <= shot < len(self.sources):
            raise IndexError(f"shot {shot} out of range: the avatar has {len(self.sources)} source image(s)")
        src = self.sources[shot]
        if into is None:
            raise InputError("<into>", "no image to paste the face back into",
                             "pass the image the avatar was made from (into=...)")
        if isinstance(into, (str, os.PathLike)):
            from reenact import io

            name, frame = str(into), io.read_image(into)
        else:
            name, frame = "<into>", np.asarray(into)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise InputError(name, f"expected an RGB uint8 (H, W, 3) image, got {frame.dtype} {frame.shape}")
        if tuple(frame.shape[:2]) != tuple(src.size):
            raise InputError(name, f"image is {frame.shape[1]}x{frame.shape[0]} but source {shot} "
                                   f"({src.name}) was {src.size[1]}x{src.size[0]}",
                             "paste back into the image the avatar was made from")
        return frame, src


def _one(points: np.ndarray, where: str) -> np.ndarray:
    """``(68, 2)`` points as a batch of one, or InputError."""
    pts = np.asarray(points)
    if pts.shape != (68, 2):
        raise InputError("<points>", f"expected (68, 2) landmarks in {where} pixels, got {pts.shape}")
    return pts[None]


__all__ = ["Avatar", "Source"]
