"""Identity metrics from dlib's 128-D face descriptors (ResNet of ``dlib_face_recognition_resnet_model_v1``).

- ACD (average content distance): Euclidean distance between the descriptors of an output and of the real
  frame (or the source identity). dlib's threshold for "same person" is 0.6; lower is better.
- CSIM: cosine similarity of the same descriptors. dlib's descriptors all lie in a narrow cone, so CSIM is
  compressed: about 0.97-0.98 for two frames of one person and still 0.82-0.87 for two different people
  (measured on the shared clips). Report it for comparison with papers, but rank models by ACD, which spreads
  the same information over a usable range (same person ~0.2-0.37, different people ~0.75-0.87).
- SFace similarity (optional extra ``losses``): cosine of SFace embeddings of faces aligned from known
  landmarks (:class:`SFaceScorer`); same person above 0.363. It spreads far wider than dlib's CSIM (measured
  on the shared clips: two frames of one person ~0.72-0.95, two people below 0.33).

:class:`FaceAnalyzer` runs dlib once per image: HOG face detection, the 68-point shape predictor, the
descriptor. Small images are upscaled first (HOG needs faces of ~80 px). An image where no face is found gives
``None``; callers count such failures instead of crashing (a broken output is a result, not an error).
"""
from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from reenact.landmarks.dlib import model_file

# Below this size (longer side) images are upscaled before detection: the HOG detector's smallest face is
# ~80 px (40 px with one upsampling), and face crops at 64-128 px hold faces of about that size.
_MIN_SIDE = 256


@dataclass(frozen=True)
class Face:
    """One analysed face: ``points`` (68, 2) float32 in the input image's pixels, ``descriptor`` (128,)
    float64, ``score`` the detector's confidence."""

    points: np.ndarray
    descriptor: np.ndarray
    score: float


class FaceAnalyzer:
    """dlib face detection + 68 landmarks + 128-D descriptor. Models load on construction (~0.3 s)."""

    def __init__(self, upsample: int = 1, min_side: int = _MIN_SIDE):
        import dlib  # lazy: `import reenact.metrics` stays light

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))
        self.upsample = upsample
        self.min_side = min_side
        self._lock = threading.Lock()  # dlib's objects are not safe to call from two threads at once

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        scale = max(1.0, self.min_side / max(img.shape[:2]))
        if scale > 1:
            img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                             interpolation=cv2.INTER_CUBIC)
        # dlib silently misreads strided numpy views: always hand it a contiguous array.
        return np.ascontiguousarray(img), scale

    def analyze(self, image: np.ndarray) -> Face | None:
        """The most confident face of an RGB uint8 image, or ``None`` when no face is found."""
        img, scale = self._prepare(image)
        with self._lock:
            rects, scores, _ = self.detector.run(img, self.upsample, 0.0)
            if not rects:
                return None
            k = int(np.argmax(scores))
            shape = self.predictor(img, rects[k])
            desc = np.asarray(self.encoder.compute_face_descriptor(img, shape), np.float64)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32) / scale
        return Face(pts, desc, float(scores[k]))

    def descriptor_at(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The descriptor of the face whose 68 landmarks ``points`` are known (no detection; never fails)."""
        img, scale = self._prepare(image)
        p = np.asarray(points, np.float64) * scale
        lo, hi = p.min(0), p.max(0)
        rect = self._dlib.rectangle(int(lo[0]), int(lo[1]), int(np.ceil(hi[0])), int(np.ceil(hi[1])))
        parts = self._dlib.points([self._dlib.point(int(round(x)), int(round(y))) for x, y in p])
        shape = self._dlib.full_object_detection(rect, parts)
        with self._lock:
            return np.asarray(self.encoder.compute_face_descriptor(img, shape), np.float64)


def acd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between 128-D descriptors (..., 128); < 0.6 means "same person" for dlib."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def csim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of descriptors (..., 128). Compressed near 1 for dlib: prefer :func:`acd` to rank."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --- SFace (extra `losses`): cosine similarity of 128-D embeddings of faces aligned from known landmarks --------

#: SFace cosine above which two faces are the same person (OpenCV's threshold for this model).
SFACE_SAME_PERSON = 0.363


class SFaceScorer:
    """SFace embeddings of RGB uint8 images ``(N, H, W, 3)`` at known landmarks ``(N, 68, 2)`` (image pixels):
    the same 5-point alignment as the identity loss (:func:`reenact.losses_offline.align_faces`), no detection,
    so it never fails. Raises :class:`reenact.pretrained.MissingExtraError` when the extra is absent."""

    def __init__(self, device: str = "cpu", batch_size: int = 32):
        from reenact.pretrained import load_sface

        self.device, self.batch_size = device, batch_size
        self.net = load_sface(device)
        # the evaluation embeds the same real targets for every method and K, and each output for two metrics
        self._recent: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()

    def embed(self, images: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(N, 128) float64 unit-norm embeddings."""
        images, points = np.ascontiguousarray(images), np.ascontiguousarray(points, np.float32)
        key = hashlib.sha1(images.tobytes() + points.tobytes() + str(images.shape).encode()).digest()
        if key not in self._recent:
            self._recent[key] = self._embed(images, points)
            if len(self._recent) > 64:
                self._recent.popitem(last=False)
        return self._recent[key]

    def _embed(self, images: np.ndarray, points: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from reenact.losses_offline import align_faces, to_sface_input

        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
                p = torch.as_tensor(np.asarray(points[i:i + self.batch_size], np.float32), device=self.device)
                out.append(F.normalize(self.net(to_sface_input(align_faces(x, p))), dim=1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 128))

    def similarity(self, a: np.ndarray, b: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(N,) cosine between the faces of ``a`` and ``b`` ``(N, H, W, 3)``, both cut at ``points``."""
        return (self.embed(a, points) * self.embed(b, points)).sum(-1)


def sface_scorer(device: str = "cpu") -> tuple[SFaceScorer | None, dict]:
    """(scorer, {"status": "ok"}) or (None, {"status": "unavailable", "reason": ...}) without the extra."""
    from reenact.pretrained import MissingExtraError

    try:
        return SFaceScorer(device), {"status": "ok"}
    except MissingExtraError as e:  # reported as unavailable, never estimated another way
        return None, {"status": "unavailable", "reason": str(e)}
