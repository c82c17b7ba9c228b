"""The Python front door: load a meta-learned model, personalise it to a person, render avatars.

    from reenact import Reenactor

    r = Reenactor.load("runs/small/checkpoints")          # or Reenactor.load() for the bundled model
    avatar = r.personalize(["me.jpg"], steps=100)         # few-shot fine-tuning (steps=0: feed-forward)
    avatar.save("me.safetensors")
    crop = avatar.render(points)                          # (68, 2) crop pixels -> (S, S, 3) uint8
    frame = avatar.render_full(points_in_photo, into=photo)   # pasted back into the photo
    for frame in drive(avatar, camera_frames): ...        # driven by a stream (puppeteer.drive), lazily

Importing this module is cheap: torch and the networks load on first use.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from reenact.errors import CheckpointError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from finetune.personalize import FinetuneOptions
    from puppeteer.drive import LiveDriver
    from reenact.avatar import Avatar
    from reenact.models.base_model import BaseModel
    from finetune.shots import ImageLike, LandmarksLike
    from reenact.landmarks.base import FaceLandmarks, LandmarkDetector

WEIGHTS = Path(__file__).with_name("weights")
#: The bundled crop model (256 px warp-guided crop generator, pasted back), the default until 0.1.0's photo
#: renderer passed it on the held-out figures; its folder keeps the name ``default`` (avatar files record it).
CROP_WEIGHTS = WEIGHTS / "default"
#: The bundled photo renderer's mouth generator (E and G in float16, no D): the default model.
PHOTO_WEIGHTS = WEIGHTS / "photo"
#: Name of the bundled default model (``Reenactor.load()``, any command without ``--checkpoint``).
DEFAULT_MODEL = "photo"
#: Models shipped with the package, by name (``Reenactor.load("crop")``, ``--checkpoint crop``): "photo" the
#: photo renderer, "crop" the crop generator, "default" whichever of them is the default (``DEFAULT_MODEL``).
BUNDLED = {"photo": PHOTO_WEIGHTS, "crop": CROP_WEIGHTS}
BUNDLED["default"] = BUNDLED[DEFAULT_MODEL]
#: The default model's checkpoint directory (a checkpoint directory: meta.json, config.yaml, weights).
DEFAULT_WEIGHTS = BUNDLED[DEFAULT_MODEL]


def default_checkpoint() -> Path:
    """The bundled default model's checkpoint directory; CheckpointError while none is bundled."""
    if (DEFAULT_WEIGHTS / "meta.json").exists():
        return DEFAULT_WEIGHTS
    import reenact

    raise CheckpointError(
        f"no default model is bundled with reenact {reenact.__version__} yet (looked in {DEFAULT_WEIGHTS}); "
        "pass a meta-learned checkpoint: Reenactor.load('runs/NAME/checkpoints') in Python, or "
        "--checkpoint runs/NAME/checkpoints on the command line (a run folder, its checkpoints folder or one "
        "step_XXXXXXX folder)")


class Reenactor:
    """A meta-learned model (embedder, generator, discriminator) ready to personalise.

    Create with :meth:`load`. ``resolution``: side of the face crops it renders; ``device``; ``base_hash``:
    SHA-256 of the checkpoint's weights (avatars record it); ``checkpoint``: the checkpoint directory.
    """

    def __init__(self, base: "BaseModel", landmarks_backend: str = "dlib"):
        self.base = base
        self.landmarks_backend = landmarks_backend
        self._detector: LandmarkDetector | None = None

    @classmethod
    def load(cls, checkpoint: str | os.PathLike | None = None, device: str = "auto",
             landmarks_backend: str = "dlib") -> "Reenactor":
        """Load a checkpoint (a run folder, its ``checkpoints`` folder or a ``step_*`` folder, or the name of a
        bundled model: ``"photo"``, ``"crop"``, ``"default"``); ``None`` or ``"default"``: the bundled default model
        (``"photo"``, :data:`DEFAULT_MODEL`). ``device``: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:N"``.
        ``landmarks_backend``: detector used for source images without given landmarks."""
        import json

        from reenact.checkpoint import resolve_checkpoint
        from reenact.models.base_model import BaseModel
        from reenact.models.region_model import RegionModel, is_region_checkpoint

        if checkpoint is None:
            checkpoint = default_checkpoint()
        elif isinstance(checkpoint, str) and checkpoint in BUNDLED and not Path(checkpoint).exists():
            checkpoint = BUNDLED[checkpoint]
        path = resolve_checkpoint(Path(checkpoint))
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}  # BaseModel.load names the problem
        model = RegionModel if is_region_checkpoint(meta) else BaseModel
        return cls(model.load(path, device), landmarks_backend)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def renderer(self) -> str:
        """``"photo"`` (a region model: the photo warped at its resolution + region generators) or ``"crop"``
        (the 256 px crop generator, pasted back)."""
        from reenact.models.region_model import RegionModel

        return "photo" if isinstance(self.base, RegionModel) else "crop"

    @property
    def finetune_steps(self) -> int:
        """Fine-tuning steps ``personalize`` uses when given none (the model's default)."""
        return int(self.base.finetune_steps)

    @property
    def resolution(self) -> int:
        return self.base.resolution

    @property
    def device(self):
        return self.base.device

    @property
    def base_hash(self) -> str:
        return self.base.hash

    @property
    def checkpoint(self) -> Path:
        return self.base.path

    @property
    def config(self) -> Any:
        return self.base.config

    def __repr__(self) -> str:
        return (f"Reenactor({self.checkpoint}, {self.resolution} px, step {self.base.step}, on {self.device}, "
                f"base {self.base_hash[:12]})")

    # -- landmarks ----------------------------------------------------------------------------------
    @property
    def detector(self) -> "LandmarkDetector":
        """The landmark detector (created on first use)."""
        if self._detector is None:
            from reenact.landmarks import create_detector

            self._detector = create_detector(self.landmarks_backend)
        return self._detector

    def detect(self, image: "np.ndarray", multiple: Literal["error", "largest"] = "error",
               source: str = "<image>") -> "FaceLandmarks":
        """68 landmarks of the one face in an RGB uint8 image (see ``LandmarkDetector.detect_one``)."""
        return self.detector.detect_one(image, multiple=multiple, source=source)

    # -- personalisation ----------------------------------------------------------------------------
    def personalize(self, images: "ImageLike | Sequence[ImageLike]", steps: int | None = None,
                    landmarks: "LandmarksLike | Sequence[LandmarksLike]" = None,
                    multiple: Literal["error", "largest"] = "error", progress: bool | None = None,
                    seed: int | None = None, *, options: "FinetuneOptions | None" = None,
                    g_encoding: str = "delta-int8", cropped: bool = False, **finetune_options) -> "Avatar":
        """Make an avatar of the person in ``images`` (Zakharov et al. 2019, stage 2).

        images: one or more image paths or RGB uint8 ``(H, W, 3)`` arrays of the same person (photos,
            paintings, drawings); each is cropped like the training data.
        steps: fine-tuning steps (FT; None: the model's ``finetune_steps``: 0 for the photo model, 100 for the crop
            model); ``0`` is the feed-forward avatar (FF:
            ``psi = P e``, G unchanged).
        landmarks: ``None`` to detect every face, or one entry per image: ``None`` (detect) or a ``(68, 2)``
            array / ``.npy`` file in that image's pixels (for faces the detector misses).
        multiple: with several faces in an image, ``"error"`` (MultipleFacesError) or ``"largest"``.
        progress: tqdm bar with ETA. seed: augmentation / sampling seed.
        options: a ``finetune.personalize.FinetuneOptions`` (default: its defaults); ``steps``, ``progress``,
            ``seed`` and ``finetune_options`` (any of its fields by name: ``lr_g``, ``lr_d``, ``batch_size``,
            ``augment``, ``train``, ``lr_psi``, ``warp_trust``...) given here replace its values. With
            ``train="psi"`` the warp-guided G's mask and flow stay as meta-learned (a small avatar file).
        g_encoding: how the fine-tuned generator is stored (``"delta-int8"``, ``"delta-fp16"`` or ``"fp16"``; see
            ``finetune.avatar``).
        cropped: the images are already the model's crops (e.g. ``reenact prepare`` frames): not cropped again.

        Raises NoFaceError (with the hint to pass landmarks), MultipleFacesError, InputError (unreadable image,
        bad landmarks file, naming it).
        """
        from finetune.avatar import Avatar
        from finetune.personalize import FinetuneOptions, personalize
        from finetune.shots import load_shots

        given = {"steps": None if steps is None else int(steps), "progress": progress,
                 "seed": None if seed is None else int(seed)}
        finetune_options.update({k: v for k, v in given.items() if v is not None})
        opts = dataclasses.replace(options or FinetuneOptions(), **finetune_options).for_model(self.base)
        if self.renderer != "photo" and (float(opts.identity) or opts.perceptual is not None):
            # the crop model's fine-tuning terms are its loss.content
            raise InputError("fine-tuning options", "identity and perceptual weights apply to the photo renderer "
                                                    "only (this model's fine-tuning uses its loss.content)")
        shots = load_shots(images, self.resolution, landmarks, multiple, detector=lambda: self.detector,
                           cropped=cropped)
        if self.renderer == "photo":
            from finetune.photo_avatar import PhotoAvatar

            return PhotoAvatar.personalize(self.base, shots, steps=int(opts.steps), seed=int(opts.seed),
                                           progress=opts.progress, g_encoding=g_encoding,
                                           identity=opts.identity, perceptual=opts.perceptual,
                                           **({} if opts.lr_g is None else {"lr": opts.lr_g}))
        result = personalize(self.base, shots, opts)
        return Avatar.from_personalization(self.base, shots, result, g_encoding=g_encoding)

    def load_avatar(self, path: str | os.PathLike) -> "Avatar":
        """Open an avatar file made from this model (CheckpointError naming both hashes otherwise)."""
        from finetune.avatar import Avatar, read_avatar_metadata
        from finetune.photo_avatar import PhotoAvatar, is_photo_avatar

        return (PhotoAvatar if is_photo_avatar(read_avatar_metadata(path)) else Avatar).load(path, self)


def open_avatar(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                device: str = "auto") -> "Avatar":
    """Open an avatar file together with its base model.

    checkpoint: the base model; ``None`` tries the checkpoint recorded in the avatar file (if it still exists),
    then the bundled model the file was made from (by its weights' hash: a crop avatar opens on the crop model
    wherever the package moved), then the bundled default model.
    """
    if checkpoint is None:
        from finetune.avatar import read_avatar_metadata

        meta = read_avatar_metadata(path)
        recorded = meta.get("base_checkpoint")
        bundled = bundled_by_hash(meta.get("base_hash"))
        if recorded and (Path(recorded) / "meta.json").exists():
            checkpoint = recorded
        elif bundled is not None:
            checkpoint = bundled
        elif recorded and not (DEFAULT_WEIGHTS / "meta.json").exists():
            raise CheckpointError(f"{path}: its base model {recorded} is not there any more and no default model "
                                  "is bundled; pass the checkpoint it was made from (checkpoint=... in Python, "
                                  "--checkpoint on the command line)")
    return Reenactor.load(checkpoint, device).load_avatar(path)

def bundled_by_hash(base_hash: str | None) -> Path | None:
    """The bundled model whose weights have SHA-256 ``base_hash`` (from its meta.json), or None."""
    import json

    for path in dict.fromkeys(BUNDLED.values()):
        try:
            if base_hash and json.loads((path / "meta.json").read_text()).get("weights_sha256") == base_hash:
                return path
        except (OSError, ValueError):
            continue
    return None


def drive(avatar: "Avatar", frames, **options) -> "LiveDriver":
    """Drive ``avatar`` with a stream of RGB uint8 frames (camera, video, any iterator), lazily: an iterator that
    yields one output frame per input frame as it is made (identity-preserving retargeting). The front door's
    shortcut to ``puppeteer.drive.drive``, which lists the options (e.g. ``into=photo`` to paste back); a whole
    driver file: ``puppeteer.puppeteer_video``; a photo to personalise and drive: ``puppeteer.animate``."""
    from puppeteer.drive import drive as drive_frames

    return drive_frames(avatar, frames, **options)


__all__ = ["Reenactor", "open_avatar", "drive", "default_checkpoint", "bundled_by_hash", "DEFAULT_WEIGHTS",
           "DEFAULT_MODEL", "CROP_WEIGHTS", "PHOTO_WEIGHTS", "BUNDLED"]
