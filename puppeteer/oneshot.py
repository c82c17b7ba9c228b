"""One shot, end to end: personalise a model to the person in a photo, then drive it (``puppeteer.animate``).

The one place that chains the two stages for a portrait: ``reenact animate`` (the CLI), the web app's Animate
tab and ``puppeteer.audio.speak`` (speech as the driver) all come through here. The model is loaded through the
front door (``reenact.api.Reenactor``), which is why this lives in its own module: ``puppeteer.drive`` itself
needs nothing of the front door.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from finetune.personalize import FinetuneOptions
    from puppeteer.drive import DriveResult, LiveDriver
    from reenact.api import Reenactor
    from reenact.avatar import Avatar

ImageLike = np.ndarray | str | os.PathLike


def personalise_portrait(portrait: ImageLike, *, reenactor: "Reenactor | None" = None,
                         checkpoint: str | os.PathLike | None = None, device: str = "auto",
                         photos: Sequence[ImageLike] = (), landmarks=None,
                         multiple: Literal["error", "largest"] = "error", steps: int | None = None,
                         seed: int | None = None, finetune: "FinetuneOptions | None" = None,
                         progress: bool | None = None,
                         save_avatar: str | os.PathLike | None = None) -> tuple["Reenactor", "Avatar"]:
    """The first half of :func:`animate`: ``(reenactor, avatar)`` of the person in ``portrait`` (and
    ``photos``, more pictures of the same person). Arguments as :func:`animate`'s."""
    if reenactor is None:
        from reenact.api import Reenactor

        reenactor = Reenactor.load(checkpoint, device)
    images = [portrait, *photos]
    marks = None if landmarks is None else [landmarks, *[None] * len(photos)]
    avatar = reenactor.personalize(images, steps=steps, landmarks=marks, multiple=multiple, progress=progress,
                                   seed=seed, options=finetune)
    if save_avatar is not None:
        avatar.save(save_avatar)
    return reenactor, avatar


def animate(portrait: ImageLike, driver: str | os.PathLike | Iterable[np.ndarray], output: str | os.PathLike, *,
            reenactor: "Reenactor | None" = None, checkpoint: str | os.PathLike | None = None, device: str = "auto",
            photos: Sequence[ImageLike] = (), landmarks=None, multiple: Literal["error", "largest"] = "error",
            steps: int | None = None, seed: int | None = None, finetune: "FinetuneOptions | None" = None,
            crop: bool = False, save_avatar: str | os.PathLike | None = None, progress: bool = True,
            **drive_options) -> tuple["Avatar", "DriveResult | LiveDriver"]:
    """Personalise a model to the person in ``portrait``, then drive it with ``driver`` and write ``output``.

    portrait: image path or RGB uint8 array; the face is pasted back into it (``crop=True``: the face crops
        only). photos: more photos of the same person, for personalisation only.
    driver: a video file (:func:`puppeteer.drive.puppeteer_video`: the driver's frame count, frame rate and
        audio; returns a ``DriveResult``) or any iterable of RGB uint8 frames, e.g. a ``Camera``
        (:func:`puppeteer.drive.record_live` at ``driver.fps`` or ``fps=``; returns the ``LiveDriver``).
    reenactor: a loaded ``Reenactor``; ``None`` loads ``checkpoint`` (``None``: the bundled model) on ``device``.
    landmarks: the portrait's ``(68, 2)`` landmarks (array or ``.npy``) when detection fails. multiple: with
        several faces in the portrait, ``"error"`` or ``"largest"``.
    steps, seed, finetune: personalisation (``Reenactor.personalize``: ``steps=0`` is feed-forward; None: the
        ``FinetuneOptions`` default). save_avatar: also save the avatar file there.
    ``drive_options`` go to the driving function (``options`` a ``RetargetOptions``, ``smooth``, ``audio``,
    ``crf``...); the landmark ``detector`` defaults to the reenactor's. Returns ``(avatar, result)``.
    """
    from puppeteer.drive import drive_to_file

    r, avatar = personalise_portrait(portrait, reenactor=reenactor, checkpoint=checkpoint, device=device,
                                     photos=photos, landmarks=landmarks, multiple=multiple, steps=steps, seed=seed,
                                     finetune=finetune, progress=progress, save_avatar=save_avatar)
    drive_options.setdefault("detector", r.detector)
    return avatar, drive_to_file(avatar, driver, output, into=None if crop else portrait, progress=progress,
                                 **drive_options)


__all__ = ["animate", "personalise_portrait"]
