"""A personalised avatar: renders one person from landmarks, and its small safetensors file.

File format (``.safetensors``, no pickle). Tensors:

- ``psi`` (1, n) float32: the person-specific AdaIN parameters psi'; ``e`` (1, D) float32: the mean embedding.
- ``source.points`` (K, 68, 2) float32 landmarks of the K source images in full-image pixels;
  ``source.crop_points`` (K, 68, 2) the same in crop pixels; ``source.matrix`` (K, 2, 3) float32 affine maps
  full image -> crop (for paste-back); ``source.size`` (K, 2) int64 ``(H, W)`` of the source images.
- Fine-tuned avatars only, the generator tensors that differ from the base model's:
  ``G.q8.<name>`` int8 + ``G.q8scale.<name>`` float32 (one scale per output row): weight matrices as the
  delta to the base weights, quantised per output channel (``delta = q8 * scale``);
  ``G.full.<name>`` float32: vectors (biases, norm affines, spectral-norm singular vectors) stored exactly;
  ``G.f16.<name>`` / ``G.d16.<name>`` float16: whole tensors / deltas (alternative encodings).
  Tensors equal to the base's (e.g. the projection P, which fine-tuning does not use) are not stored.

Metadata (strings): ``format`` = ``reenact-avatar``, ``format_version``, ``base_hash`` (SHA-256 of the base
checkpoint's weights), ``base_checkpoint``, ``base_step``, ``resolution``, ``landmarks`` (``ibug68``),
``mode`` (``FT``/``FF``), ``steps``, ``shots``, ``g_encoding``, ``model`` / ``options`` / ``sources`` /
``crop`` (JSON), ``reenact_version``.

The avatar in memory is always rebuilt from exactly what the file holds (the quantised deltas included), so a
saved and re-loaded avatar renders bit-identically to the one that was saved.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from reenact.avatar import Avatar as AvatarInterface
from reenact.avatar import Source
from reenact.checkpoint import check_finite
from reenact.errors import CheckpointError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from reenact.models.base_model import BaseModel
    from finetune.personalize import Personalization
    from finetune.shots import Shot

FORMAT = "reenact-avatar"
FORMAT_VERSION = 2  # 2: photo-renderer avatars (metadata renderer=photo, finetune.photo_avatar)
ENCODINGS = ("delta-int8", "delta-fp16", "fp16")


# ------------------------------------------------------------------------------------ generator encoding

def _is_matrix(t: torch.Tensor) -> bool:
    # Conv / linear weights carry nearly all parameters; everything else (biases, norm affines, attention
    # gammas, spectral-norm vectors u/v whose dot product sets each layer's scale) is small and kept exact.
    return t.is_floating_point() and t.ndim >= 2


def encode_generator(tuned: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                     encoding: str = "delta-int8") -> dict[str, torch.Tensor]:
    """The tensors that store ``tuned`` relative to ``base`` (both G state dicts, any device) -> CPU tensors."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown generator encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    out: dict[str, torch.Tensor] = {}
    for name, t in tuned.items():
        t = t.detach().cpu()
        b = base[name].detach().cpu()
        if torch.equal(t, b.to(t.dtype)):
            continue
        if not _is_matrix(t):
            out[f"G.full.{name}"] = t.float().contiguous()
        elif encoding == "fp16":
            out[f"G.f16.{name}"] = t.half().contiguous()
        elif encoding == "delta-fp16":
            out[f"G.d16.{name}"] = (t.float() - b.float()).half().contiguous()
        else:
            d = (t.float() - b.float()).reshape(t.shape[0], -1)
            scale = d.abs().amax(dim=1) / 127.0
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = torch.round(d / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[f"G.q8.{name}"] = q.reshape(t.shape).contiguous()
            out[f"G.q8scale.{name}"] = scale.contiguous()
    return out


def decode_generator(encoded: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_generator`: a full G state dict (CPU, float32 where floating)."""
    state = {k: v.detach().cpu().clone() for k, v in base.items()}
    for key, t in encoded.items():
        if not key.startswith("G.") or key.startswith("G.q8scale."):
            continue
        kind, name = key[2:].split(".", 1)
        if name not in state:
            raise CheckpointError(f"avatar tensor {key!r} names no parameter of the base generator")
        b = state[name].float()
        if kind == "full":
            v = t.float()
        elif kind == "f16":
            v = t.float()
        elif kind == "d16":
            v = b + t.float()
        elif kind == "q8":
            scale = encoded.get(f"G.q8scale.{name}")
            if scale is None:
                raise CheckpointError(f"avatar tensor {key!r} has no scale G.q8scale.{name}")
            v = b + (t.float().reshape(t.shape[0], -1) * scale.float()[:, None]).reshape(t.shape)
        else:
            raise CheckpointError(f"avatar tensor {key!r}: unknown encoding {kind!r}")
        if v.shape != state[name].shape:
            raise CheckpointError(f"avatar tensor {key!r} has shape {tuple(v.shape)}, the base generator's "
                                  f"{name} is {tuple(state[name].shape)}")
        state[name] = v.to(state[name].dtype)
    return state


def tuned_generator(G: torch.nn.Module, encoded: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The generator an avatar renders with: a frozen copy of ``G`` with the avatar's stored tensors, or ``G``
    itself (shared) for a feed-forward avatar."""
    if not any(k.startswith("G.") for k in encoded):
        return G
    tuned = copy.deepcopy(G)
    tuned.load_state_dict(decode_generator(encoded, {k: v.detach().cpu() for k, v in G.state_dict().items()}))
    return tuned.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- avatar

class Avatar(AvatarInterface):
    """The crop generator's avatar (:class:`reenact.avatar.Avatar`): renders the person's face crop from
    landmarks and pastes it back. Made by ``Reenactor.personalize``; saved with :meth:`save`, re-opened with
    :meth:`load` (or ``Reenactor.load_avatar``).

    Attributes: ``resolution`` (crop side S), ``mode`` (``"FT"`` fine-tuned or ``"FF"`` feed-forward),
    ``steps``, ``shots`` (K), ``sources`` (list of :class:`Source`), ``base_hash``, ``psi`` (1, n) and ``e``
    (1, D) float32 tensors, ``history`` (per-step fine-tuning losses; empty for a loaded avatar).
    """

    def __init__(self, base: "BaseModel", psi: torch.Tensor, e: torch.Tensor, encoded: dict[str, torch.Tensor],
                 sources: list[Source], info: dict[str, Any], history: list[dict[str, float]] | None = None,
                 crops: np.ndarray | None = None):
        self.base = base
        # (K, S, S, 3) uint8 source crops: the warp-guided generator renders from them, so they travel in the file
        self.source_crops = None if crops is None else np.ascontiguousarray(np.asarray(crops, dtype=np.uint8))
        if base.G.needs_sources and self.source_crops is None:
            raise CheckpointError("the base model's warp-guided generator needs the source crops, which this "
                                  "avatar does not carry")
        self._person(base, psi, e, base.G.num_adain_params, encoded, sources, info, history)
        self.G = tuned_generator(base.G, encoded)

    def _person(self, base, psi: torch.Tensor, e: torch.Tensor, num_params: int, encoded: dict[str, torch.Tensor],
                sources: Sequence[Source], info: dict[str, Any], history: list[dict[str, float]] | None) -> None:
        """Store what every avatar kind holds: psi (checked against its generator's ``num_params``), e, the
        encoded generator tensors, sources, info, history."""
        self.psi = psi.detach().float().to(base.device)
        self.e = e.detach().float().to(base.device)
        if self.psi.shape != (1, num_params):
            raise CheckpointError(f"psi has shape {tuple(self.psi.shape)}, the base generator expects (1, {num_params})")
        self._encoded = encoded
        self.sources, self.info, self.history = list(sources), info, history or []

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_personalization(cls, base: "BaseModel", shots: Sequence["Shot"], result: "Personalization",
                             g_encoding: str = "delta-int8") -> "Avatar":
        """Package a stage-2 result (see ``finetune.personalize``)."""
        encoded: dict[str, torch.Tensor] = {}
        if result.generator is not None:
            encoded = encode_generator(result.generator, base.G.state_dict(), g_encoding)
        sources = [Source.of(s) for s in shots]
        o = result.options
        psi_only = o.train == "psi"
        steps = int(o.steps) if result.generator is not None or psi_only else 0
        info = {"mode": ("FT-psi" if psi_only else "FT") if steps else "FF", "steps": steps, "shots": len(sources),
                "g_encoding": g_encoding if encoded else "none",
                "options": {"lr_g": o.lr_g, "lr_d": o.lr_d, "batch_size": o.batch_size, "augment": o.augment,
                            "flip": o.flip, "scale": o.scale, "shift": o.shift, "seed": o.seed,
                            "train": o.train, "lr_psi": o.lr_psi, "warp_trust": o.warp_trust},
                "seconds": round(result.seconds, 3)}
        crops = np.stack([s.crop for s in shots]) if base.G.needs_sources else None
        return cls(base, result.psi, result.e, encoded, sources, info, result.history, crops=crops)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.base.resolution

    @property
    def mode(self) -> str:
        return str(self.info.get("mode", "FF"))

    @property
    def steps(self) -> int:
        return int(self.info.get("steps", 0))

    @property
    def base_hash(self) -> str:
        return self.base.hash

    def __repr__(self) -> str:
        return (f"Avatar({self.mode}, {self.steps} steps, {self.shots} shot(s), {self.resolution} px, "
                f"base {self.base_hash[:12]})")

    # -- rendering ----------------------------------------------------------------------------------
    def render_batch(self, points: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """``points`` ``(N, 68, 2)`` in crop pixels -> RGB uint8 ``(N, S, S, 3)``; runs in chunks of
        ``batch_size`` (default 16 on CPU, 64 on GPU)."""
        from reenact.draw import rasterize

        pts = check_points(points, "crop")
        S, dev = self.resolution, self.base.device
        n = batch_size or (64 if dev.type == "cuda" else 16)
        out = np.empty((len(pts), S, S, 3), np.uint8)
        with torch.inference_mode():
            for i in range(0, len(pts), n):
                p = torch.from_numpy(pts[i:i + n]).to(dev)
                img = self.G.forward_psi(rasterize(p, S) * 2 - 1, self.psi, **self._source_inputs(p)).image
                img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                out[i:i + n] = img.permute(0, 2, 3, 1).cpu().numpy()
        return out

    def _source_inputs(self, tgt_points: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra inputs of a warp-guided generator (the shots and their landmarks); empty for the base G."""
        if self.source_crops is None:
            return {}
        dev = self.base.device
        src = torch.from_numpy(self.source_crops).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
        pts = torch.from_numpy(self.source_points.astype(np.float32)).to(dev)
        return {"src": src[None], "src_points": pts[None], "tgt_points": tgt_points}

    def render_full_batch(self, points: np.ndarray, into: np.ndarray | str | os.PathLike | None = None,
                          shot: int = 0) -> np.ndarray:
        """Render and paste back into the full source image.

        points: ``(N, 68, 2)`` landmarks in the full image's pixels. into: the source image ``shot`` (array or
        path) the avatar was made from (same size). The face is rendered in the crop of that source and blended
        in with a soft mask around the rendered landmarks (``reenact.crop.face_mask``); pixels away from the
        face keep their values exactly. Returns RGB uint8 ``(N, H, W, 3)`` of the image's size.
        """
        from reenact.crop import face_mask, paste_back, transform_points

        frame, src = self.source_image(into, shot)
        pts = np.asarray(points, dtype=np.float32)
        if pts.ndim != 3 or pts.shape[1:] != (68, 2):
            raise InputError("<points>", f"expected (N, 68, 2) landmarks in image pixels, got {pts.shape}")
        crop_pts = transform_points(pts, src.matrix)
        crops = self.render_batch(crop_pts)
        S = self.resolution
        return np.stack([paste_back(frame, c, src.matrix, face_mask(p, S)) for c, p in zip(crops, crop_pts)])

    # -- file ---------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything the file stores, as CPU tensors (see the module doc)."""
        t = {"psi": self.psi.cpu().contiguous(), "e": self.e.cpu().contiguous(),
             "source.points": torch.from_numpy(np.stack([s.points for s in self.sources]).astype(np.float32)),
             "source.crop_points": torch.from_numpy(np.stack([s.crop_points for s in self.sources]).astype(np.float32)),
             "source.matrix": torch.from_numpy(np.stack([s.matrix for s in self.sources]).astype(np.float32)),
             "source.size": torch.tensor([list(s.size) for s in self.sources], dtype=torch.int64)}
        t.update({k: v.contiguous() for k, v in self._encoded.items()})
        if self.source_crops is not None:
            t["source.crops"] = torch.from_numpy(self.source_crops)
        return t

    def metadata(self) -> dict[str, str]:
        import reenact
        from omegaconf import OmegaConf

        from reenact.crop import CropParams

        b, crop = self.base, CropParams()
        return {
            "format": FORMAT, "format_version": str(FORMAT_VERSION),
            "base_hash": b.hash, "base_checkpoint": str(b.path), "base_step": str(b.step),
            "resolution": str(self.resolution), "landmarks": "ibug68",
            "mode": self.mode, "steps": str(self.steps), "shots": str(self.shots),
            "g_encoding": str(self.info.get("g_encoding", "none")),
            "model": json.dumps(OmegaConf.to_container(b.config.model, resolve=True), sort_keys=True),
            "options": json.dumps(self.info.get("options", {}), sort_keys=True),
            "crop": json.dumps({"scale": crop.scale, "shift_y": crop.shift_y,
                                "convention": "reenact.crop.box_from_points + crop_matrix"}),
            "sources": json.dumps([{"name": s.name, "size": list(s.size), "landmarks_from": s.landmarks_from}
                                   for s in self.sources]),
            "reenact_version": reenact.__version__,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the avatar file atomically; returns its path."""
        from safetensors.torch import save_file

        from reenact.io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(self.tensors(), str(tmp), metadata=self.metadata())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, reenactor: Any) -> "Avatar":
        """Open an avatar file onto its base model (a ``Reenactor`` or a ``BaseModel``). Raises CheckpointError
        when the file is not an avatar or was made from another base model (both hashes are named)."""
        base = getattr(reenactor, "base", reenactor)
        meta, tensors = read_avatar_file(path)
        check_base(path, meta, base)
        if int(meta.get("resolution", -1)) != base.resolution:
            raise CheckpointError(f"{path}: avatar resolution {meta.get('resolution')} != base model's "
                                  f"{base.resolution}")
        try:
            sources, info, encoded = file_parts(meta, tensors)
            crops = tensors["source.crops"].numpy() if "source.crops" in tensors else None
            return cls(base, tensors["psi"], tensors["e"], encoded, sources, info, crops=crops)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except (KeyError, ValueError, IndexError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: malformed avatar file ({type(exc).__name__}: {exc})") from None


def check_points(points: np.ndarray, where: str) -> np.ndarray:
    """``(N, 68, 2)`` float32 finite landmarks (in ``where`` pixels), or InputError saying what is wrong."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise InputError("<points>", f"expected (N, 68, 2) landmarks in {where} pixels, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("<points>", "landmarks contain NaN or infinite values")
    return pts


def check_base(path, meta: dict[str, str], base) -> None:
    """CheckpointError naming both hashes unless the avatar file was made from ``base``."""
    if meta["base_hash"] != base.hash:
        raise CheckpointError(
            f"{path}: avatar was made from base model {meta['base_hash']} "
            f"(checkpoint {meta.get('base_checkpoint', '?')}, step {meta.get('base_step', '?')}), but the loaded "
            f"base model is {base.hash} ({base.path}); load the avatar with the checkpoint it was made from")


def file_parts(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> tuple[list[Source], dict[str, Any], dict[str, torch.Tensor]]:
    """The sources, info and encoded generator tensors of an avatar file (KeyError/ValueError if malformed)."""
    srcs_meta = json.loads(meta.get("sources", "[]"))
    info = {"mode": meta.get("mode", "FF"), "steps": int(meta.get("steps", 0)),
            "g_encoding": meta.get("g_encoding", "none"), "options": json.loads(meta.get("options", "{}"))}
    sources = [Source(name=str(srcs_meta[i]["name"]) if i < len(srcs_meta) else f"<image {i}>",
                      size=tuple(int(v) for v in tensors["source.size"][i].tolist()),
                      points=tensors["source.points"][i].numpy(),
                      crop_points=tensors["source.crop_points"][i].numpy(),
                      matrix=tensors["source.matrix"][i].numpy(),
                      landmarks_from=str(srcs_meta[i].get("landmarks_from", "")) if i < len(srcs_meta) else "")
               for i in range(tensors["source.points"].shape[0])]
    return sources, info, {n: t for n, t in tensors.items() if n.startswith("G.")}


def _open_avatar(path: str | os.PathLike, tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata (and tensors, if asked) of a file that must be a reenact avatar; CheckpointError otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: avatar file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a reenact avatar (metadata format={meta.get('format')!r})")
    return meta, out


def read_avatar_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of an avatar file; CheckpointError if it is missing, unreadable or not an avatar."""
    meta, tensors = _open_avatar(path, tensors=True)
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: avatar format version {meta['format_version']} is newer than this "
                              f"reenact understands ({FORMAT_VERSION}); upgrade reenact")
    for key in ("psi", "e", "source.points", "source.crop_points", "source.matrix", "source.size"):
        if key not in tensors:
            raise CheckpointError(f"{path}: malformed avatar file (no tensor {key!r})")
    if "base_hash" not in meta:
        raise CheckpointError(f"{path}: malformed avatar file (no base_hash)")
    check_finite(tensors, path)  # a NaN psi renders black frames that provenance would still vouch for
    return meta, tensors


def read_avatar_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Only the metadata of an avatar file (cheap: the tensors are not read)."""
    return _open_avatar(path, tensors=False)[0]
