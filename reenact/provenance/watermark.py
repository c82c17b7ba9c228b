"""An invisible, keyed spread-spectrum watermark for the frames reenact writes.

What it is: a pseudo-random +-1 pattern on a coarse grid (``G x G`` cells laid over the whole frame, in
coordinates relative to the frame's size, so resizing the frame does not move it), added to the luma with a
strength that follows the local texture (strong where the image is busy and the eye and the encoder forgive
it, weak on flat skin and sky). Half of the cells carry a fixed *sync* sequence; the other half carry
``PAYLOAD_BITS`` payload bits plus an 8-bit CRC, each bit spread over ~340 cells (grid 128).

Detecting it: the frame (any size) is resized to ``G x G``, high-passed (a 4-neighbour Laplacian, which
removes most of the picture and keeps the pattern), clipped to 3 robust standard deviations, and correlated
with the sync sequence. The score ``z = <r, chips> / ||r||`` is, for a frame that was never marked (or marked
with another key), a standard normal variable whatever the picture is: the chips are random signs chosen
independently of it. ``z >= THRESHOLD`` (6, a chance of about 1e-9 per grid tried) says "marked". A video
accumulates the residuals of up to ``max_frames`` frames before correlating (the pattern is the same in every
frame, the picture is not). Frames get the finest grid (128 or 64 cells a side) whose cells are at least
``MIN_CELL_PX`` (2) pixels: 128 from 256 px up; frames below ``MIN_SIDE`` (128 px) are not marked. Detection
tries both grids. Strength: 2 luma levels on moderate texture (PSNR about 43 dB on a 720 px portrait).

What it survives (``tests/test_provenance.py``): H.264 re-encoding at libx264's default quality (crf 23)
together with a resize to half size, on 20 real portraits animated by the pipeline (all 20 found). What it
costs: a fine, static pattern the encoder has to keep: an animated 720 px portrait at reenact's crf 18 grows
by about 10% (50 frames: 119 -> 132 KB), a video whose whole frame moves by up to 2x, and encoding is slower. What it does not survive, by design of a 2-D grid: crops that cut
off part of the frame, rotations, mirror flips, strong blur. Anyone with the key (the default key ships in this
file) can detect it, and so can also estimate and subtract it: it is a label for honest tools, not a proof. See the README's responsible-use section.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = ["Watermark", "Detection", "DEFAULT_KEY", "THRESHOLD", "PAYLOAD_BITS", "MIN_SIDE"]

DEFAULT_KEY = "reenact-watermark-v1"
PAYLOAD_BITS = 16  # what the mark carries: the first 16 bits of the base model's SHA-256 (0: unknown)
CRC_BITS = 8
THRESHOLD = 6.0  # sync z-score that says "marked"; a standard normal exceeds it with probability ~1e-9
GRIDS = (128, 64)  # cells per side, finest first
MIN_CELL_PX = 2.0  # a grid is used when its cells are at least this many pixels on the frame's shorter side
MIN_SIDE = int(GRIDS[-1] * MIN_CELL_PX)  # 128: smaller frames are not marked (their cells would not survive)
STRENGTH = 2.0  # amplitude (luma levels) where the texture is moderate; flat areas get 0.4x, busy ones 1.6x
_MASK_RANGE = (0.4, 1.6)
_MASK_TEXTURE = 6.0  # local luma std (levels) that gets the full STRENGTH


def _luma(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _laplacian(y: np.ndarray) -> np.ndarray:
    import cv2

    k = np.array([[0, -0.25, 0], [-0.25, 1, -0.25], [0, -0.25, 0]], np.float32)
    return cv2.filter2D(y, -1, k, borderType=cv2.BORDER_REFLECT)


def _crc8(value: int, nbits: int) -> int:
    return zlib.crc32(int(value).to_bytes((nbits + 7) // 8, "big")) & 0xFF


@dataclass(frozen=True)
class Detection:
    """What :meth:`Watermark.detect` found.

    detected: ``score >= threshold``. score: the sync z-score of the best grid (standard normal on unmarked
    media). grid: that grid's cells per side. payload: the 16-bit payload when its CRC checks, else None
    (a mark too damaged to read, or no mark). frames: how many frames were examined.
    """

    detected: bool
    score: float
    grid: int
    payload: int | None
    frames: int
    threshold: float = THRESHOLD

    def describe(self) -> str:
        if not self.detected:
            return (f"no watermark (score {self.score:.1f}, below {self.threshold:g}; {self.frames} frame(s) "
                    "examined)")
        pl = f"payload {self.payload:04x}" if self.payload is not None else "payload unreadable (CRC mismatch)"
        return f"watermark present (score {self.score:.1f} >= {self.threshold:g}, grid {self.grid}, {pl})"


class _Layout:
    """Chips and cell roles of one grid size for one key."""

    def __init__(self, key: str, grid: int):
        seed = int.from_bytes(hashlib.sha256(f"{key}/{grid}".encode()).digest()[:8], "big")
        rng = np.random.default_rng(seed)
        n = grid * grid
        self.grid = grid
        self.chips = rng.choice(np.array([-1.0, 1.0], np.float32), size=n)
        order = rng.permutation(n)
        self.sync = np.zeros(n, bool)
        self.sync[order[: n // 2]] = True
        nbits = PAYLOAD_BITS + CRC_BITS
        self.bit_of = np.full(n, -1, np.int64)
        self.bit_of[order[n // 2:]] = np.arange(n - n // 2) % nbits
        self.nbits = nbits

    def cells(self, payload: int) -> np.ndarray:
        """``(G, G)`` +-1 pattern carrying ``payload``."""
        word = (int(payload) << CRC_BITS) | _crc8(payload, PAYLOAD_BITS)
        bits = np.array([(word >> (self.nbits - 1 - i)) & 1 for i in range(self.nbits)], np.float32) * 2 - 1
        sign = np.where(self.sync, 1.0, bits[np.maximum(self.bit_of, 0)])
        return (self.chips * sign).reshape(self.grid, self.grid).astype(np.float32)

    def score(self, r: np.ndarray) -> tuple[float, int | None]:
        """Sync z-score and CRC-checked payload of a ``(G, G)`` residual."""
        r = r.reshape(-1)
        rs = r[self.sync]
        norm = float(np.sqrt((rs * rs).sum()))
        z = float((rs * self.chips[self.sync]).sum() / norm) if norm > 0 else 0.0
        corr = np.bincount(self.bit_of[~self.sync], weights=(r * self.chips)[~self.sync], minlength=self.nbits)
        word = 0
        for c in corr:
            word = (word << 1) | int(c > 0)
        payload, crc = word >> CRC_BITS, word & 0xFF
        return z, (payload if _crc8(payload, PAYLOAD_BITS) == crc else None)


class Watermark:
    """Embed and detect the watermark with ``key`` (default: reenact's public key).

    >>> wm = Watermark()
    >>> marked = wm.embed(frame, payload=0x3FA2)     # RGB uint8 (H, W, 3), min side >= MIN_SIDE
    >>> wm.detect([marked]).detected
    True

    For a video, :meth:`embedder` precomputes the pattern once for a frame size.
    """

    def __init__(self, key: str = DEFAULT_KEY, strength: float = STRENGTH):
        self.key = key
        self.strength = float(strength)
        self._layouts = {g: _Layout(key, g) for g in GRIDS}

    @staticmethod
    def grid_for(height: int, width: int) -> int | None:
        """The grid used for frames of this size (None: too small to mark)."""
        side = min(height, width)
        for g in GRIDS:
            if side >= g * MIN_CELL_PX:
                return g
        return None

    def embedder(self, height: int, width: int, payload: int = 0) -> "Embedder | None":
        """A function marking RGB uint8 frames of ``height x width`` (None when they are too small)."""
        g = self.grid_for(height, width)
        if g is None:
            return None
        return Embedder(self._layouts[g].cells(payload), height, width, self.strength)

    def embed(self, image: np.ndarray, payload: int = 0) -> np.ndarray:
        """A marked copy of one RGB uint8 image (unchanged copy when it is smaller than ``MIN_SIDE``)."""
        e = self.embedder(image.shape[0], image.shape[1], payload)
        return image.copy() if e is None else e(image)

    def residual(self, frame: np.ndarray, grid: int) -> np.ndarray:
        """``(G, G)`` high-passed, clipped luma of one frame (the part that carries the pattern)."""
        import cv2

        y = cv2.resize(_luma(frame), (grid, grid), interpolation=cv2.INTER_AREA)
        r = _laplacian(y)
        s = float(np.median(np.abs(r))) * 1.4826 + 1e-3
        return np.clip(r, -3 * s, 3 * s)

    def detect(self, frames: Iterable[np.ndarray], max_frames: int = 64) -> Detection:
        """Look for the mark in RGB uint8 frames (one image, or a video's frames; at most ``max_frames``)."""
        sums = {g: np.zeros((g, g), np.float64) for g in GRIDS}
        n = 0
        for f in frames:
            a = np.asarray(f)
            if a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"frames must be RGB (H, W, 3), got shape {a.shape}")
            for g in GRIDS:
                sums[g] += self.residual(a, g)
            n += 1
            if n >= max_frames:
                break
        best = Detection(False, float("-inf"), GRIDS[0], None, n)
        for g in GRIDS:
            z, payload = self._layouts[g].score(sums[g]) if n else (0.0, None)
            if z > best.score:
                best = Detection(z >= THRESHOLD, z, g, payload if z >= THRESHOLD else None, n)
        return best


class Embedder:
    """Adds one precomputed pattern to frames of one size: ``marked = embedder(frame)``."""

    def __init__(self, cells: np.ndarray, height: int, width: int, strength: float):
        import cv2

        self.size = (height, width)
        # nearest-neighbour blocks: the area-average that detection resizes with gets each cell back intact
        self.pattern = cv2.resize(cells, (width, height), interpolation=cv2.INTER_NEAREST) * strength
        self._block = max(3, int(round(min(height, width) / cells.shape[0])) | 1)

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """Per-pixel gain from the local luma texture, in ``_MASK_RANGE``."""
        import cv2

        y = _luma(frame) if frame.ndim == 3 else frame.astype(np.float32)
        h, w = self.size
        # texture at the cell scale, computed on a small copy (cheap) and brought back to full size
        small = cv2.resize(y, (max(8, w // self._block * 2), max(8, h // self._block * 2)),
                           interpolation=cv2.INTER_AREA)
        k = (3, 3)
        mean = cv2.blur(small, k)
        std = np.sqrt(np.maximum(cv2.blur(small * small, k) - mean * mean, 0.0))
        gain = np.clip(std / _MASK_TEXTURE, *_MASK_RANGE)
        return cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        a = np.asarray(frame)
        if a.shape[:2] != self.size:
            raise ValueError(f"frame is {a.shape[1]}x{a.shape[0]}, the watermark was made for "
                             f"{self.size[1]}x{self.size[0]}")
        delta = self.pattern * self.mask(a)
        out = a.astype(np.float32) + (delta[..., None] if a.ndim == 3 else delta)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
