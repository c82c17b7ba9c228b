"""What kind of media a file holds, from its first bytes: the one definition of the image magic numbers, used
by the readers (``reenact.io``) and by the provenance tools (``reenact.provenance``), which the writers of
``reenact.io`` call in turn; so it lives below both."""
from __future__ import annotations

from pathlib import Path

from reenact.errors import MediaError

# Magic numbers of still-image formats that FFmpeg/OpenCV would otherwise happily open as a 1-frame video.
IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


def head(path: Path, n: int = 16) -> bytes:
    """The first ``n`` bytes of ``path``; MediaError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as e:
        raise MediaError(path, f"cannot read file ({e.strerror or e})") from e


def still_image_kind(path: Path) -> str | None:
    """``"JPEG"``, ``"PNG"``, ``"BMP"``, ``"TIFF"`` or ``"WebP"`` from the file's magic number; None otherwise."""
    start = head(path)
    for magic, name in IMAGE_MAGIC:
        if start.startswith(magic):
            return name
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
        return "WebP"
    return None
