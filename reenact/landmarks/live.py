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

    def find_near(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The detector's box (frame pixels) of a face found in a small crop around ``box`` (x0, y0, x1, y1)
        and overlapping it; None when there is none."""
        box = np.asarray(box, np.float32)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = self.context * max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
        s = self.check_size / side
        m = np.array([[s, 0, self.check_size / 2 - s * cx], [0, s, self.check_size / 2 - s * cy]], np.float32)
        crop = cv2.warpAffine(np.ascontiguousarray(image), m, (self.check_size, self.check_size),
                              flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        expected = np.array([box[0] * s + m[0, 2], box[1] * s + m[1, 2], box[2] * s + m[0, 2], box[3] * s + m[1, 2]])
        best = max(self.detector.detect(crop), key=lambda f: _iou(f.box, expected), default=None)
        if best is None or _iou(best.box, expected) < self.min_iou:
            return None
        off = np.array([m[0, 2], m[1, 2], m[0, 2], m[1, 2]], np.float32)
        return ((np.asarray(best.box, np.float32) - off) / s).astype(np.float32)

    def has_face(self, image: np.ndarray, box: np.ndarray) -> bool:
        """Whether a detection in a small crop around ``box`` (x0, y0, x1, y1) overlaps it."""
        if self.find_near(image, box) is not None:
            return True
        # A weak face (blur, a face filling the frame so the crop is mostly replicated border) can fail in the
        # small crop and pass on the whole frame: measured on shared clips, this second look removes the few
        # false alarms, and costs a full detection only on frames that failed the first.
        return any(_iou(f.box, box) >= self.min_iou for f in self.detector.detect(image))


class LiveTracker:
    """Causal, per-frame tracking of one face for live input: ``points = tracker(frame)``.

    Between keyframes the box is carried by optical flow: the last frame's 68 points are followed into this
    frame (pyramidal Lucas-Kanade, checked forward-backward), the box moves and scales with them, and the shape
    predictor is fitted inside it (~2 ms a frame at 512 px, against ~12 ms for a fit confirmed by a detection).
    The fit, not the flow, gives the points: flow slides along the lips and jaw while the mouth moves, while
    the predictor sees them. The box follows the flow rather than the previous fit, so the fit does not feed
    back into its own box (which drifts, see ``track_frames``).

    Every ``keyframe_interval`` frames, and whenever the flow fails (fewer than ``min_flow`` of the points
    followed both ways within ``max_flow_error`` face widths), the face is re-detected in a small crop around
    the box, then, when that finds nothing, on the whole frame (the only expensive step: ~60 ms at 512 px).
    ``flow=False`` fits inside the last detection's box and confirms each fit with :class:`CheckedDetector`.

    Returns ``(68, 2)`` float32 pixels, or ``None`` when there is no face in the frame. With ``smooth`` the
    points pass a One-Euro filter (parameters in face sizes per second, as ``FaceTrack.smooth``), which
    restarts when a lost face is found again (so it does not glide in from where it was lost).

    multiple: with several faces, ``"largest"`` follows the largest at (re)acquisition, then the one
    overlapping the tracked box; ``"error"`` raises MultipleFacesError. ``source`` names the input in errors.
    ``detections`` counts whole-frame detections, ``redetections`` the crop ones.
    """

    def __init__(self, detector: LandmarkDetector, fps: float = 25.0, keyframe_interval: int = 10,
                 smooth: bool = True, min_cutoff: float = 1.0, beta: float = 0.5,
                 multiple: Literal["error", "largest"] = "largest", source: str = "<stream>", flow: bool = True,
                 min_flow: float = 0.6, max_flow_error: float = 0.02):
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        self.detector = detector if isinstance(detector, CheckedDetector) else CheckedDetector(detector)
        self.fps, self.keyframe_interval, self.smooth = float(fps), int(keyframe_interval), bool(smooth)
        self.min_cutoff, self.beta = min_cutoff, beta
        self.multiple, self.source = multiple, source
        self.flow, self.min_flow, self.max_flow_error = bool(flow), float(min_flow), float(max_flow_error)
        self.frame = 0
        self.box: np.ndarray | None = None  # the tracked box; None while lost
        self.detections = 0
        self.redetections = 0
        self._filter: OneEuroFilter | None = None
        self._scale = 1.0
        self._gray: np.ndarray | None = None  # previous frame, for the flow
        self._points: np.ndarray | None = None  # previous raw fit

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        t = self.frame
        self.frame += 1
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if self.flow else None
        if self.box is None:
            points = self._detect(frame, t)
        elif not self.flow:
            points = self._detect(frame, t) if t % self.keyframe_interval == 0 else self._checked_fit(frame)
        else:
            moved = self._flow_box(gray)
            if moved is None or t % self.keyframe_interval == 0:
                points = self._redetect(frame, t, self.box if moved is None else moved)
            else:
                self.box = moved
                points = self._fit(frame, moved)
                if points is None:
                    points = self._redetect(frame, t, moved)
        self._gray, self._points = gray, points
        if points is None:
            self.box = None
            self._filter = None
            return None
        if not self.smooth:
            return points
        if self._filter is None:
            self._filter = OneEuroFilter(self.fps, self.min_cutoff, self.beta)
            self._scale = float(self.box[2] - self.box[0]) or 1.0
        return (self._filter(points / self._scale) * self._scale).astype(np.float32)

    # -- between keyframes ---------------------------------------------------------------------------

    def _flow_box(self, gray: np.ndarray) -> np.ndarray | None:
        """The box moved and scaled as the previous points flowed into ``gray``; None when the flow fails."""
        if self._gray is None or self._points is None or self._gray.shape != gray.shape:
            return None
        p0 = self._points.reshape(-1, 1, 2).astype(np.float32)
        lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        p1, st, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, p0, None, **lk)
        if p1 is None:
            return None
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._gray, p1, None, **lk)
        width = float(self.box[2] - self.box[0]) or 1.0
        err = np.linalg.norm((back - p0).reshape(-1, 2), axis=1) / width
        good = (st.ravel() == 1) & (st2.ravel() == 1) & (err < self.max_flow_error)
        if good.mean() < self.min_flow:
            return None
        a, b = p0.reshape(-1, 2)[good], p1.reshape(-1, 2)[good]
        # median translation and scale: robust to the few points that slid along an edge
        shift = np.median(b - a, axis=0)
        ca, cb = np.median(a, axis=0), np.median(b, axis=0)
        da, db = np.linalg.norm(a - ca, axis=1), np.linalg.norm(b - cb, axis=1)
        scale = float(np.median(db[da > 1e-3] / da[da > 1e-3])) if (da > 1e-3).any() else 1.0
        scale = float(np.clip(scale, 0.8, 1.25))
        c = np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float32) + shift
        half = np.array([self.box[2] - self.box[0], self.box[3] - self.box[1]], np.float32) * scale / 2
        return np.concatenate([c - half, c + half]).astype(np.float32)

    def _fit(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        try:
            face = self.detector.detector.refine(frame, box)
        except NoFaceError:
            return None
        return face.points if plausible(face.points, box, frame.shape[:2]) else None

    def _checked_fit(self, frame: np.ndarray) -> np.ndarray | None:
        face = self.detector.refine(frame, self.box)
        return face.points if plausible(face.points, self.box, frame.shape[:2]) else None

    # -- keyframes -----------------------------------------------------------------------------------

    def _redetect(self, frame: np.ndarray, t: int, box: np.ndarray) -> np.ndarray | None:
        """Detection in a small crop around ``box``; the whole frame when that finds nothing."""
        found = self.detector.find_near(frame, box)
        if found is None:
            return self._detect(frame, t)
        self.redetections += 1
        self.box = found
        return self._fit(frame, found)

    def _detect(self, frame: np.ndarray, t: int) -> np.ndarray | None:
        self.detections += 1
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
