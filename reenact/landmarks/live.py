"""Tracking helpers for driving: a detector wrapper that notices a lost face, and a per-frame live tracker.

``reenact.landmarks.track.track_frames`` fits the shape predictor between keyframes inside a box taken from
the detections around the frame. A shape predictor always returns a face-shaped set of points, even on a black
frame, so a face that vanishes between two keyframes goes unnoticed. :class:`CheckedDetector` confirms each
such fit with a detection in a small crop around the box (a few milliseconds: the crop is 120 px; the whole
frame is searched only when that fails) and reports a collapsed shape when there is no face, which the tracker then treats as a frame without a face.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from reenact.errors import MultipleFacesError, NoFaceError
from reenact.landmarks.base import FaceLandmarks, LandmarkDetector, _iou
from reenact.landmarks.track import OneEuroFilter, _plausible as plausible


class CheckedDetector(LandmarkDetector):
    """Wraps a detector; :meth:`refine` only returns a face that a detection confirms.

    detector: the wrapped backend. context: side of the checked crop over the box's larger side. check_size:
    the crop's side in pixels (the face is then ~check_size / context px wide: big enough for dlib's HOG
    detector, whose window is 80 px after its 2x upsampling). min_iou: a detection in the crop confirms the box
    when their overlap reaches this.

    A fit that fails the crop check is checked once more with a detection on the whole frame.
    ``refine`` returns, when no face is confirmed, a collapsed shape (all 68 points at the box centre) with
    score 0: ``track_frames`` rejects collapsed fits and marks the frame as having no face. ``checked`` and
    ``rejected`` count the checks done and failed.
    """

    def __init__(self, detector: LandmarkDetector, context: float = 1.6, check_size: int = 120,
                 min_iou: float = 0.3):
        self.detector = detector
        self.name = getattr(detector, "name", "detector")
        self.context, self.check_size, self.min_iou = float(context), int(check_size), float(min_iou)
        self.checked = 0
        self.rejected = 0

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        return self.detector.detect(image)

    def refine(self, image: np.ndarray, box: np.ndarray) -> FaceLandmarks:
        box = np.asarray(box, np.float32)
        try:
            face = self.detector.refine(image, box)
        except NoFaceError:
            face = None
        self.checked += 1
        if face is None or not self.has_face(image, box):
            self.rejected += 1
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
            return FaceLandmarks(np.repeat(centre[None], 68, 0), box, 0.0)
        return face

    def has_face(self, image: np.ndarray, box: np.ndarray) -> bool:
        """Whether a detection in a small crop around ``box`` (x0, y0, x1, y1) overlaps it."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = self.context * max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
        s = self.check_size / side
        m = np.array([[s, 0, self.check_size / 2 - s * cx], [0, s, self.check_size / 2 - s * cy]], np.float32)
        crop = cv2.warpAffine(np.ascontiguousarray(image), m, (self.check_size, self.check_size),
                              flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        expected = np.array([box[0] * s + m[0, 2], box[1] * s + m[1, 2], box[2] * s + m[0, 2], box[3] * s + m[1, 2]])
        if any(_iou(f.box, expected) >= self.min_iou for f in self.detector.detect(crop)):
            return True
        # A weak face (blur, a face filling the frame so the crop is mostly replicated border) can fail in the
        # small crop and pass on the whole frame: measured on shared clips, this second look removes the few
        # false alarms, and costs a full detection only on frames that failed the first.
        return any(_iou(f.box, box) >= self.min_iou for f in self.detector.detect(image))


class LiveTracker:
    """Causal, per-frame tracking of one face for live input: ``points = tracker(frame)``.

    Detection runs every ``keyframe_interval`` frames and on every frame while the face is lost; in between
    the shape predictor is fitted inside the last detection's box and confirmed by :class:`CheckedDetector`.
    Returns ``(68, 2)`` float32 pixels, or ``None`` when there is no face in the frame. With ``smooth`` the
    points pass a One-Euro filter (parameters in face sizes per second, as ``FaceTrack.smooth``), which
    restarts when a lost face is found again (so it does not glide in from where it was lost).

    multiple: with several faces, ``"largest"`` follows the largest at (re)acquisition, then the one
    overlapping the tracked box; ``"error"`` raises MultipleFacesError. ``source`` names the input in errors.
    """

    def __init__(self, detector: LandmarkDetector, fps: float = 25.0, keyframe_interval: int = 10,
                 smooth: bool = True, min_cutoff: float = 1.0, beta: float = 0.5,
                 multiple: Literal["error", "largest"] = "largest", source: str = "<stream>"):
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        self.detector = detector if isinstance(detector, CheckedDetector) else CheckedDetector(detector)
        self.fps, self.keyframe_interval, self.smooth = float(fps), int(keyframe_interval), bool(smooth)
        self.min_cutoff, self.beta = min_cutoff, beta
        self.multiple, self.source = multiple, source
        self.frame = 0
        self.box: np.ndarray | None = None  # last detection's box; None while lost
        self._filter: OneEuroFilter | None = None
        self._scale = 1.0

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        t = self.frame
        self.frame += 1
        if self.box is None or t % self.keyframe_interval == 0:
            points = self._detect(frame, t)
        else:
            face = self.detector.refine(frame, self.box)
            points = face.points if plausible(face.points, self.box, frame.shape[:2]) else None
            if points is None:
                self.box = None
        if points is None:
            self._filter = None
            return None
        if not self.smooth:
            return points
        if self._filter is None:
            self._filter = OneEuroFilter(self.fps, self.min_cutoff, self.beta)
            self._scale = float(self.box[2] - self.box[0]) or 1.0
        return (self._filter(points / self._scale) * self._scale).astype(np.float32)

    def _detect(self, frame: np.ndarray, t: int) -> np.ndarray | None:
        faces = self.detector.detect(frame)
        if len(faces) > 1 and self.multiple == "error":
            raise MultipleFacesError(f"{self.source} (frame {t})", len(faces))
        if not faces:
            self.box = None
            return None
        if self.box is None:
            face = max(faces, key=lambda f: f.area)
        else:
            face = max(faces, key=lambda f: _iou(f.box, self.box))
            if _iou(face.box, self.box) < 0.1:  # someone else: ours is gone
                self.box = None
                return None
        self.box = face.box
        return face.points
