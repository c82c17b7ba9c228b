"""dlib backend: HOG face detector + the 68-point shape predictor from ``face_recognition_models``.

Works fully offline (dlib-bin ships the library, face_recognition_models ships the model files).
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np

from reenact.errors import ReenactError
from reenact.landmarks.base import FaceLandmarks, LandmarkDetector


def model_dir() -> Path:
    """Folder of face_recognition_models' files, found without pkg_resources (deprecated, slow import)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ReenactError("the dlib backend needs the face_recognition_models package: "
                           "pip install face_recognition_models")
    return Path(spec.origin).parent / "models"


def model_file(name: str) -> Path:
    path = model_dir() / name
    if not path.exists():
        raise ReenactError(f"{path}: missing model file of face_recognition_models (reinstall the package)")
    return path


class DlibDetector(LandmarkDetector):
    """HOG detector + 68-point regression-tree shape predictor.

    detect_size: images are downscaled so their longer side is at most this before HOG detection (detection
    cost grows with area; faces in talking-head video are large). Landmarks are always fitted at full
    resolution. upsample: HOG pyramid upsampling, for small faces.
    """

    name = "dlib"

    def __init__(self, detect_size: int = 320, upsample: int = 1, min_score: float = -0.2):
        import dlib  # lazy: keeps `import reenact` light

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        self.detect_size = detect_size
        self.upsample = upsample
        self.min_score = min_score
        # dlib's detector and shape predictor keep scratch state inside the C++ objects: two threads calling
        # one instance at once (the app's queue runs two jobs on the shared detector) crashed with SIGSEGV in CI.
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        image = _as_rgb_contiguous(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return []
        scale = min(1.0, self.detect_size / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # a 3 x 2000 strip must not shrink to 0
        small = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        # dlib misreads strided numpy views silently: always hand it a contiguous array.
        gray = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        with self._lock:
            rects, scores, _ = self.detector.run(gray, self.upsample, self.min_score)
        faces = []
        for r, s in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float32) / scale
            faces.append(FaceLandmarks(self._fit(image, box), box, float(s)))
        return faces

    def refine(self, image: np.ndarray, box: np.ndarray) -> FaceLandmarks:
        image = _as_rgb_contiguous(image)
        return FaceLandmarks(self._fit(image, np.asarray(box, np.float32)), np.asarray(box, np.float32), 1.0)

    def _fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        with self._lock:
            shape = self.predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def _as_rgb_contiguous(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
