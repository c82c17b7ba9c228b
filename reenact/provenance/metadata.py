"""The provenance record in file containers: write options for the writers, and reading it back.

- mp4 (PyAV/FFmpeg, ``movflags=use_metadata_tags``): ``reenact_provenance`` = the JSON record, ``comment`` = one
  plain-language sentence, ``creation_time``.
- PNG: iTXt chunks ``reenact:provenance`` (JSON), ``Description`` (the sentence), ``Software``, and XMP
  (``XML:com.adobe.xmp``) with IPTC's ``DigitalSourceType`` = trainedAlgorithmicMedia.
- JPEG / WebP / TIFF: EXIF ``ImageDescription`` = the JSON record, ``Software``, ``DateTime``; JPEG and WebP
  also get the XMP packet, JPEG a COM comment with the sentence.
- BMP has nowhere to put it: the watermark is all it carries.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["video_metadata", "image_save_options", "read_metadata", "sentence", "VIDEO_KEY", "PNG_KEY"]

VIDEO_KEY = "reenact_provenance"
PNG_KEY = "reenact:provenance"
IPTC_SYNTHETIC = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_EXIF_DESCRIPTION, _EXIF_SOFTWARE, _EXIF_DATETIME = 0x010E, 0x0131, 0x0132


def _json(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def sentence(record: dict) -> str:
    """One plain-language line for players and viewers that show a comment."""
    base = record.get("base_model") or "an unrecorded base model"
    what = "Synthetic media" if record.get("synthetic") else "Media"
    return (f"{what} made with {record.get('tool', 'reenact')} {record.get('version', '')} (face reenactment; "
            f"base model {base}) on {record.get('created', '?')}. Not a recording of a real event.")


def _xmp(record: dict) -> bytes:
    desc = sentence(record).replace("&", "&amp;").replace("<", "&lt;")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<Iptc4xmpExt:DigitalSourceType>{IPTC_SYNTHETIC}</Iptc4xmpExt:DigitalSourceType>'
        f'<xmp:CreatorTool>{record.get("tool")} {record.get("version")}</xmp:CreatorTool>'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{desc}</rdf:li></rdf:Alt></dc:description>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


def video_metadata(record: dict) -> dict[str, str]:
    """Container metadata for an mp4 (needs ``movflags=use_metadata_tags`` for the custom key)."""
    return {VIDEO_KEY: _json(record), "comment": sentence(record), "creation_time": record["created"]}


def image_save_options(fmt: str, record: dict) -> dict[str, Any]:
    """Keyword arguments for Pillow's ``Image.save`` in format ``fmt`` (PNG, JPEG, WEBP, TIFF, BMP)."""
    from PIL import Image, PngImagePlugin

    software = f"{record.get('tool')} {record.get('version')}"
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(PNG_KEY, _json(record))
        info.add_itxt("Description", sentence(record))
        info.add_text("Software", software)
        info.add_itxt("XML:com.adobe.xmp", _xmp(record).decode("utf-8"))
        return {"pnginfo": info}
    if fmt in ("JPEG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[_EXIF_DESCRIPTION] = _json(record)
        exif[_EXIF_SOFTWARE] = software
        exif[_EXIF_DATETIME] = record["created"][:19].replace("-", ":").replace("T", " ")
        opts: dict[str, Any] = {"exif": exif.tobytes()}
        if fmt in ("JPEG", "WEBP"):
            opts["xmp"] = _xmp(record)
        if fmt == "JPEG":
            opts["comment"] = sentence(record)
        return opts
    return {}


def _parse(text: str | bytes | None) -> dict | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip().rstrip("\x00")
    if not text.startswith("{"):
        return None
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and rec.get("tool") == "reenact" else None


def read_metadata(path: str | Path) -> dict | None:
    """The provenance record stored in a file's container (mp4/mov/mkv, PNG, JPEG, WebP, TIFF); None when
    there is none (never written, or stripped by a re-encode, a screenshot or an upload that drops it)."""
    path = Path(path)
    from reenact.filekind import still_image_kind  # noqa: PLC0415

    if still_image_kind(path):
        from PIL import Image

        with Image.open(path) as im:
            rec = _parse(getattr(im, "text", {}).get(PNG_KEY) if hasattr(im, "text") else None)
            if rec is None:
                rec = _parse(im.info.get(PNG_KEY))
            if rec is None:
                rec = _parse(im.getexif().get(_EXIF_DESCRIPTION))
        return rec
    import av

    with av.open(str(path)) as c:
        return _parse(c.metadata.get(VIDEO_KEY))
