"""One type for a face, one interface for every landmark backend."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reenact.errors import InputError, MultipleFacesError, NoFaceError

# Below this many pixels on a side no detector finds a face (dlib's smallest is 80 px, upsampled once 40 px);
# smaller images are refused with that reason rather than with whatever the resizing library says.
MIN_FACE_SIDE = 16

Multiple = Literal["error", "largest"]


@dataclass(frozen=True)
class FaceLandmarks:
    """68 landmarks of one face.

    points: ``(68, 2)`` float32 pixel coordinates ``(x, y)`` in iBUG order.
    box: ``(4,)`` float32 face box ``(x0, y0, x1, y1)`` in pixels (the detector's box).
    score: detector confidence (backend-specific scale, higher is more confident).
    """

    points: np.ndarray
    box: np.ndarray
    score: float = 1.0

    def __post_init__(self):
        pts = np.asarray(self.points, dtype=np.float32)
        if pts.shape != (68, 2):
            raise ValueError(f"FaceLandmarks.points must be (68, 2), got {pts.shape}")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float32).reshape(4))

    @property
    def area(self) -> float:
        """Area of the landmarks' bounding box: a finer size measure than a detector box, whose sizes come in
        the steps of the detector's image pyramid."""
        span = self.points.max(0) - self.points.min(0)
        return float(span[0] * span[1])

    @classmethod
    def from_points(cls, points: np.ndarray, score: float = 1.0) -> "FaceLandmarks":
        pts = np.asarray(points, dtype=np.float32)
        box = np.concatenate([pts.min(0), pts.max(0)])
        return cls(pts, box, score)


class LandmarkDetector(ABC):
    """Backend interface: images are RGB uint8 ``(H, W, 3)``."""

    name: str = "base"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        """All faces in the image, any order."""

    def refine(self, image: np.ndarray, box: np.ndarray) -> FaceLandmarks:
        """Landmarks for a face known to be inside ``box`` (used when tracking between keyframes).

        Backends that cannot skip detection fall back to detecting and taking the best overlap.
        """
        faces = self.detect(image)
        if not faces:
            raise NoFaceError("<frame>")
        return max(faces, key=lambda f: _iou(f.box, box))

    def detect_one(self, image: np.ndarray, multiple: Multiple = "error",
                   source: str = "<image>", min_secondary_score: float = 0.3) -> FaceLandmarks:
        """Exactly one face: ``NoFaceError`` if none, ``MultipleFacesError`` if several (unless
        ``multiple='largest'``). Weak detections (score below ``min_secondary_score``) beside a confident one are
        not counted as faces: they are mostly patterns such as badges or prints (seen on scikit-image's
        astronaut), and refusing the photo for them would be wrong. ``image``: uint8 RGB, gray or RGBA (as
        ``reenact.io.as_rgb`` reads them)."""
        from reenact.io import as_rgb

        image = as_rgb(image, source)
        h, w = image.shape[:2]
        if min(h, w) < MIN_FACE_SIDE:
            raise InputError(source, f"image is {w}x{h} pixels: too small to find a face in",
                             f"a face needs at least {MIN_FACE_SIDE} pixels each way")
        faces = self.detect(image)
        if not faces:
            raise NoFaceError(source)
        best = max(f.score for f in faces)
        if best >= min_secondary_score:
            faces = [f for f in faces if f.score >= min_secondary_score]
        if len(faces) > 1:
            if multiple == "largest":
                return max(faces, key=lambda f: f.area)
            raise MultipleFacesError(source, len(faces))
        return faces[0]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / ua) if ua > 0 else 0.0
