"""An avatar of the photo renderer (``reenact.renderer``): the photo itself, its landmarks and the person's
region-generator parameters. Rendered at the photo's resolution; the crop outputs of :meth:`render_batch` are
the full render cut with the photo's 256 px crop (the self-reenactment protocol's crops).

File (``.safetensors``, no pickle): ``photo.png`` (uint8 bytes of the first photo, PNG: lossless and a fraction
of raw), ``psi`` (1, n), ``e`` (1, D), ``source.*`` as :mod:`finetune.avatar`, and for fine-tuned avatars the
region generator's tensors that differ from the base model's (``G.q8.*`` ..., the same encoding). Metadata as
:mod:`finetune.avatar` plus ``renderer`` = ``photo`` and ``region``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
import torch

from finetune.avatar import (FORMAT, Avatar, check_base, check_points, encode_generator, file_parts, read_avatar_file,
                             tuned_generator)
from reenact.avatar import Source
from reenact.crop import CropParams, crop_image, invert, transform_points
from reenact.errors import CheckpointError, InputError
from reenact.renderer import PhotoRenderer, embed

if TYPE_CHECKING:  # pragma: no cover
    from finetune.shots import Shot
    from reenact.models.region_model import RegionModel

RENDERER = "photo"


class PhotoAvatar(Avatar):
    """Same interface as :class:`finetune.avatar.Avatar` (:class:`reenact.avatar.Avatar`: render, render_batch,
    render_full(_batch), save); ``base`` is a :class:`reenact.models.region_model.RegionModel`; ``photos`` the source images."""

    #: renders whole frames of its photo natively: pipelines ask for those instead of pasting crops back
    renders_photo = True

    def __init__(self, base: "RegionModel", psi: torch.Tensor, e: torch.Tensor, encoded: dict[str, torch.Tensor],
                 sources: list[Source], info: dict[str, Any], photos: Sequence[np.ndarray],
                 history: list[dict[str, float]] | None = None):
        self.base = base
        self._person(base, psi, e, base.G.num_params, encoded, sources, info, history)
        self.photos = [np.ascontiguousarray(p) for p in photos]
        self.source_crops = None
        self.G = tuned_generator(base.G, encoded)
        self._renderer = PhotoRenderer(self.photos[0], self.sources[0].points, self.G, self.psi, base.spec, base.size)

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def personalize(cls, base: "RegionModel", shots: Sequence["Shot"], steps: int = 0, seed: int = 0,
                    progress: bool = True, g_encoding: str = "delta-int8", identity: float = 0.0,
                    perceptual: float | None = None, **ft_options) -> "PhotoAvatar":
        """An avatar from the shots: feed-forward (``steps=0``: ``psi = P E(region crops)``) or fine-tuned
        (``finetune.region_finetune``). identity / perceptual: weights of the SFace identity term (0: off) and of
        the EfficientNet-Lite0 term (None: the model's ``loss.perceptual``) in fine-tuning."""
        photos = [s.image for s in shots]
        if any(p is None for p in photos):
            raise InputError("<images>", "the photo renderer needs the full source images")
        pts = [np.asarray(s.points, np.float32) for s in shots]
        e = embed(base.E, photos, pts, base.spec, base.size, base.device)
        psi = base.G.psi(e)
        sources = [Source.of(s) for s in shots]
        info: dict[str, Any] = {"mode": "FF", "steps": 0, "g_encoding": "none", "options": {"seed": seed}}
        encoded: dict[str, torch.Tensor] = {}
        history: list[dict[str, float]] = []
        if steps > 0:
            from finetune.region_finetune import finetune_region

            if float(identity):
                ft_options["identity"] = float(identity)
            if perceptual is not None:
                ft_options["perceptual"] = float(perceptual)
            G, psi, history, seconds = finetune_region(base, photos, pts, psi, steps=steps, seed=seed,
                                                       progress=progress, **ft_options)
            encoded = encode_generator(G.state_dict(), base.G.state_dict(), g_encoding)
            info = {"mode": "FT", "steps": int(steps), "g_encoding": g_encoding,
                    "options": {"seed": seed, **ft_options}, "seconds": round(seconds, 3)}
        return cls(base, psi, e, encoded, sources, info, photos, history)

    # -- properties ------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return CropParams().size

    def __repr__(self) -> str:
        h, w = self.photos[0].shape[:2]
        return (f"PhotoAvatar({self.mode}, {self.steps} steps, {self.shots} shot(s), photo {w}x{h}, "
                f"region {self.base.spec.name}, base {self.base_hash[:12]})")

    # -- rendering -------------------------------------------------------------------------------------
    def render_batch(self, points: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """``points`` ``(N, 68, 2)`` in the first photo's crop pixels -> RGB uint8 ``(N, 256, 256, 3)``: the
        full-resolution render cut with that crop."""
        src = self.sources[0]
        pts = check_points(points, "crop")
        full = self._renderer.render(transform_points(pts, invert(src.matrix)), batch_size or 16)
        return np.stack([crop_image(f, src.matrix, self.resolution) for f in full])

    def render_full_batch(self, points: np.ndarray, into: np.ndarray | str | os.PathLike | None = None,
                          shot: int = 0) -> np.ndarray:
        """``points`` ``(N, 68, 2)`` in the photo's pixels -> ``(N, H, W, 3)`` frames of the photo's size. The
        photo is the avatar's own (``into``, if given, is checked to be of its size: the renderer warps the
        photo itself, it does not paste a crop into another image)."""
        if shot != 0:
            raise InputError("<shot>", f"the photo renderer renders into its first photo, not shot {shot}")
        if into is not None:
            self.source_image(into, 0)  # same checks as the crop avatar: size of the photo it was made from
        return self._renderer.render(check_points(points, "photo"))

    # -- file ------------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        t = super().tensors()
        ok, png = cv2.imencode(".png", cv2.cvtColor(self.photos[0], cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError("<photo>", "could not encode the photo as PNG")
        t["photo.png"] = torch.from_numpy(png.reshape(-1).copy())
        return t

    def metadata(self) -> dict[str, str]:
        m = super().metadata()
        m.update({"renderer": RENDERER, "region": self.base.spec.name,
                  "model": json.dumps({"kind": "region", "region": self.base.spec.name, "size": self.base.size})})
        return m

    @classmethod
    def load(cls, path: str | os.PathLike, reenactor: Any) -> "PhotoAvatar":
        base = getattr(reenactor, "base", reenactor)
        meta, tensors = read_avatar_file(path)
        if meta.get("renderer") != RENDERER:
            raise CheckpointError(f"{path}: not a photo-renderer avatar")
        check_base(path, meta, base)
        try:
            sources, info, encoded = file_parts(meta, tensors)
            photo = cv2.imdecode(tensors["photo.png"].numpy(), cv2.IMREAD_COLOR)
            if photo is None or tuple(photo.shape[:2]) != tuple(sources[0].size):
                raise CheckpointError(f"{path}: the stored photo is unreadable or not the first source's size")
            return cls(base, tensors["psi"], tensors["e"], encoded, sources, info,
                       [cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)])
        except CheckpointError:
            raise
        except (KeyError, ValueError, IndexError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: malformed avatar file ({type(exc).__name__}: {exc})") from None


def is_photo_avatar(meta: dict[str, str]) -> bool:
    return meta.get("format") == FORMAT and meta.get("renderer") == RENDERER


__all__ = ["PhotoAvatar", "is_photo_avatar"]
