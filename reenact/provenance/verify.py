"""``reenact verify FILE``: what a file says about where it came from, and what its pixels say.

Three independent signals, each reported on its own: the container record (easy to read, easy to strip), the
C2PA manifest (tamper-evident, but signed with a local key no one vouches for) and the watermark (survives
re-encoding and resizing, but is a public-key label anyone could also add or remove with effort).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reenact.provenance.watermark import Detection

__all__ = ["Verification", "verify"]


@dataclass
class Verification:
    """What :func:`verify` found in one file. ``found``: any of the three signals is there."""

    path: Path
    kind: str  # "video" or "image"
    metadata: dict | None
    c2pa: dict | None
    watermark: Detection
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.metadata is not None or self.c2pa is not None or self.watermark.detected

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "found": self.found, "metadata": self.metadata,
                "c2pa": self.c2pa, "watermark": asdict(self.watermark), "notes": self.notes}

    def describe(self) -> str:
        lines = [f"{self.path} ({self.kind})"]
        m = self.metadata
        if m is None:
            lines.append("  metadata:  none (never written, or stripped by a re-encode or an upload)")
        else:
            wm = m.get("watermark") or {}
            wm_text = wm.get("state", "?") + (f" ({wm['reason']})" if wm.get("reason") else "")
            lines.append(f"  metadata:  {m.get('tool')} {m.get('version')}, synthetic={str(m.get('synthetic')).lower()}, "
                         f"created {m.get('created')}, base model {m.get('base_model') or 'not recorded'}"
                         + (f", {m['operation']}" if m.get("operation") else "") + f"; watermark {wm_text}")
        c = self.c2pa
        if c is None:
            lines.append("  C2PA:      no manifest")
        else:
            s = c.get("signer", {})
            trust = ("signed with this machine's reenact key" if c.get("local_key")
                     else f"signer '{s.get('common_name')}' ({s.get('issuer')})")
            fails = ", ".join(c.get("failures") or []) or "none"
            lines.append(f"  C2PA:      {c.get('state')} manifest by {c.get('generator')}; {trust}; "
                         f"validation failures: {fails}")
        lines.append(f"  watermark: {self.watermark.describe()}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def verify(path: str | Path, max_frames: int = 64) -> Verification:
    """Read the container record, the C2PA manifest and the watermark of an image or a video.

    Raises MediaError (naming the file) when it is not a readable image or video.
    """
    from reenact import io
    from reenact.filekind import still_image_kind
    from reenact.provenance import c2pa
    from reenact.provenance.metadata import read_metadata
    from reenact.provenance.watermark import Watermark

    path = io._check_file(path)  # noqa: SLF001  (one definition of "missing / empty / a folder")
    kind = "image" if still_image_kind(path) else "video"
    if kind == "image":
        frames = [io.read_image(path)]
    else:
        info = io.probe(path)
        # spread the examined frames over the whole video (a clip could be a synthetic part spliced in)
        step = max(1, info.num_frames // max_frames) if info.num_frames else 1
        frames = io.read_frames(path, step=step, max_frames=max_frames)
    det = Watermark().detect(frames, max_frames=max_frames)
    meta = read_metadata(path)
    manifest = c2pa.read(path)
    notes = []
    if meta is not None:
        wm = meta.get("watermark") or {}
        if wm.get("state") == "embedded" and not det.detected:
            notes.append("the metadata says a watermark was embedded but none was found: the pixels were changed "
                         "(cropped, rotated, heavily filtered) or the metadata was copied onto other media")
        if wm.get("state") == "embedded" and det.detected and det.payload is not None \
                and wm.get("payload") != f"{det.payload:04x}":
            notes.append(f"the watermark's payload {det.payload:04x} differs from the metadata's "
                         f"{wm.get('payload')}: the metadata does not belong to these pixels")
    elif det.detected:
        notes.append("watermarked but without metadata: probably re-encoded, resized or uploaded since")
    if manifest is not None and manifest.get("state") == "Invalid":
        notes.append("the C2PA manifest does not match the file: it was modified after signing")
    return Verification(path, kind, meta, manifest, det, notes)
