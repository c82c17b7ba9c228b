"""Provenance of the media reenact makes: a record in the container, a C2PA manifest, a watermark in the frames.

Every synthetic video or image reenact writes through :mod:`reenact.io` carries

1. **container metadata**: a JSON record (``tool``, ``version``, ``base_model`` SHA-256, ``created`` date,
   ``synthetic: true``, the watermark's state) in the mp4's metadata (key ``reenact_provenance``, plus a
   plain-language ``comment``), in PNG text chunks, or in the EXIF ``ImageDescription`` of JPEG/WebP/TIFF,
   with an XMP ``DigitalSourceType`` of *trainedAlgorithmicMedia* for images (IPTC's synthetic-media flag);
2. **a C2PA manifest** (when ``c2pa-python`` is installed, ``pip install 'reenact[provenance]'``), signed offline
   with a key generated on this machine (see :mod:`reenact.provenance.c2pa`);
3. **an invisible watermark** in the pixels (:mod:`reenact.provenance.watermark`) carrying the first 16 bits of
   the base model's hash; it survives H.264 re-encoding and halving the size, which strip 1 and 2.

Which writes are stamped: the writers take ``provenance=``: a :class:`Provenance` (stamp with it), ``None``
(never: real footage, e.g. prepared training crops) or ``"auto"`` (the default): stamp when the write happens
inside a :func:`using` block (the CLI and the app wrap their work in one to set the watermark and the operation).
The pipelines that render (``puppeteer_video``, ``speak``, ``lipsync``, live recording, the demo) hand their
writers ``Provenance.of(avatar)`` themselves, so their outputs are stamped however they are called. Rendering
alone never marks a writer: a still image made from ``avatar.render_full(...)`` is stamped by passing
``provenance=Provenance.of(avatar)`` to ``write_image`` (or by writing it inside ``using()``).

``reenact verify FILE`` (:func:`reenact.provenance.verify.verify`) reads all three back.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from reenact.provenance.watermark import Embedder

__all__ = ["Provenance", "using", "current", "Stamp", "SCHEMA", "WATERMARK_SCHEME"]

SCHEMA = "reenact-provenance/1"
WATERMARK_SCHEME = "reenact-ss/1"  # keyed spread spectrum on a 128/64-cell grid; see watermark.py
ProvenanceArg = "Provenance | None | Literal['auto']"


@dataclass(frozen=True)
class Provenance:
    """What to record about a synthetic output.

    base_model: SHA-256 (hex) of the base model's weights (``Reenactor.base_hash``, ``Avatar.base_hash``);
        None when unknown. watermark: embed the invisible watermark (turning it off is recorded).
    watermark_off_reason: a word on why it is off, recorded with it (e.g. ``"--no-watermark"``).
    c2pa: sign a C2PA manifest: None = when ``c2pa-python`` is installed, False = never, True = required
        (an error when it cannot be done). synthetic: the synthetic-media flag (always True for renders).
    operation: what made it (``"animate"``, ``"speak"``, ``"puppeteer"``, ...), for the record.
    """

    base_model: str | None = None
    watermark: bool = True
    watermark_off_reason: str | None = None
    c2pa: bool | None = None
    synthetic: bool = True
    operation: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, avatar_or_reenactor: Any, **fields) -> "Provenance":
        """The provenance of what ``avatar_or_reenactor`` renders: the innermost :func:`using` block's (a default
        one outside any), its ``base_model`` filled in from ``avatar_or_reenactor.base_hash`` where the block
        names none, then ``fields`` replaced."""
        prov = current() or cls()
        if prov.base_model is None:
            prov = replace(prov, base_model=getattr(avatar_or_reenactor, "base_hash", None))
        return replace(prov, **fields) if fields else prov

    @property
    def payload(self) -> int:
        """The watermark's 16-bit payload: the first 4 hex digits of the base model's hash (0: unknown)."""
        try:
            return int(self.base_model[:4], 16) if self.base_model else 0
        except ValueError:
            return 0

    def record(self, watermark_state: dict[str, Any], created: str | None = None) -> dict[str, Any]:
        """The JSON record written into the file."""
        from reenact import __version__

        rec: dict[str, Any] = {
            "schema": SCHEMA, "tool": "reenact", "version": __version__, "synthetic": bool(self.synthetic),
            "created": created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
            .replace("+00:00", "Z"),
            "base_model": f"sha256:{self.base_model}" if self.base_model else None,
            "watermark": watermark_state,
        }
        if self.operation:
            rec["operation"] = self.operation
        if self.extra:
            rec["extra"] = dict(self.extra)
        return rec


# ------------------------------------------------------------------------------------------ context

_SCOPE: ContextVar["Provenance | None"] = ContextVar("reenact_provenance_scope", default=None)


@contextlib.contextmanager
def using(provenance: Provenance | None = None, **fields) -> Iterator[Provenance]:
    """Stamp every write made through ``reenact.io`` inside this block (with ``provenance``, or a
    :class:`Provenance` of ``fields``) that is given ``provenance="auto"`` (the writers' default), and start
    :meth:`Provenance.of` from it. The block is a context variable: it covers this thread (or task) only."""
    prov = provenance if provenance is not None else Provenance(**fields)
    if provenance is not None and fields:
        prov = replace(provenance, **fields)
    token = _SCOPE.set(prov)
    try:
        yield prov
    finally:
        _SCOPE.reset(token)


def current() -> Provenance | None:
    """The provenance set by the innermost :func:`using` block, if any."""
    return _SCOPE.get()


def resolve(arg: "Provenance | None | str") -> Provenance | None:
    """The provenance a write gets: see the module's docstring."""
    if arg is None or isinstance(arg, Provenance):
        return arg
    if arg == "auto":
        return current()
    raise ValueError(f"provenance must be a Provenance, None or 'auto', got {arg!r}")


# -------------------------------------------------------------------------------------------- stamp

class Stamp:
    """One file's provenance, applied by a writer: ``mark`` each frame, ``container_metadata`` for an mp4
    (or ``image_options`` for an image), then ``finish`` the written temporary file (C2PA) before it is
    moved into place.

    Frames smaller than ``MIN_SIDE`` (128 px) on their short side are not watermarked (too few pixels to carry
    the pattern); the record says so.
    """

    def __init__(self, provenance: Provenance, height: int, width: int, kind: Literal["video", "image"]):
        from reenact.provenance.watermark import MIN_SIDE, Watermark

        self.provenance = provenance
        self.kind = kind
        self.embedder: "Embedder | None" = None
        if not provenance.watermark:
            state: dict[str, Any] = {"state": "off", "reason": provenance.watermark_off_reason or "turned off"}
        else:
            self.embedder = Watermark().embedder(height, width, provenance.payload)
            if self.embedder is None:
                state = {"state": "skipped",
                         "reason": f"frames of {width}x{height} are below the {MIN_SIDE} px it needs"}
            else:
                state = {"state": "embedded", "scheme": WATERMARK_SCHEME, "payload": f"{provenance.payload:04x}"}
        self.record = provenance.record(state)

    @property
    def json(self) -> str:
        return json.dumps(self.record, separators=(",", ":"), sort_keys=True)

    def mark(self, frame: np.ndarray) -> np.ndarray:
        return frame if self.embedder is None else self.embedder(frame)

    def container_metadata(self) -> dict[str, str]:
        from reenact.provenance.metadata import video_metadata

        return video_metadata(self.record)

    def image_options(self, fmt: str) -> dict[str, Any]:
        from reenact.provenance.metadata import image_save_options

        return image_save_options(fmt, self.record)

    def finish(self, path: Path, final_name: str | None = None) -> None:
        """Sign the written file at ``path`` with a C2PA manifest (in place), as the provenance asks."""
        from reenact.provenance import c2pa

        if self.provenance.c2pa is False:
            return
        if not c2pa.available():
            if self.provenance.c2pa:
                raise RuntimeError(f"{final_name or path}: a C2PA manifest was required, but {c2pa.why_unavailable()}")
            return
        name = final_name or Path(path).name
        if not c2pa.can_carry(name):
            if self.provenance.c2pa:
                raise RuntimeError(f"{name}: a C2PA manifest was required, but {c2pa.cannot_carry(name)}")
            warnings.warn(f"{name}: no C2PA manifest, {c2pa.cannot_carry(name)}; the container record and the "
                          "watermark are still written", stacklevel=3)
            return
        c2pa.sign_in_place(path, self.record, title=name)


def stamp_for(arg: "Provenance | None | str", height: int, width: int,
              kind: Literal["video", "image"]) -> Stamp | None:
    prov = resolve(arg)
    return None if prov is None else Stamp(prov, height, width, kind)
