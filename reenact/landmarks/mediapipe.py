"""MediaPipe backend (optional extra): FaceMesh's 478 points mapped to the 68 iBUG points.

MediaPipe's legacy ``solutions.face_mesh`` ships its models inside the wheel, so it works offline. It is not a
default dependency: mediapipe 0.10.21 (the last release with ``solutions``) requires ``numpy<2``, which the rest
of the project does not pin. Install it in an environment of its own if you need it.

The 68 points are read off the mesh with :data:`IBUG68_FROM_MESH`: one face-mesh vertex per iBUG point, or the
mean of two vertices where no single vertex sits at the iBUG position. The table was derived from the
FaceMesh topology (canonical face model, Kartynnik et al. 2019) by matching each iBUG point's definition
(eye corners, lid midpoints, lip corners and Cupid's bow, nostril wings, ...), then checked by projecting
MediaPipe's canonical face model and comparing it with dlib's 68-point fits on real portraits after a
similarity alignment: mean error 3 % of the inter-ocular distance over the 51 inner points. The table is
mirror-consistent: mirroring a face maps each entry onto the entry of its mirrored iBUG point.

The jaw differs by construction: iBUG's points 0-16 follow the *visible* cheek/jaw silhouette, while the
mesh's face oval is a fixed set of vertices on the 3D face surface. The jaw entries are the oval vertices
whose direction from the nose matches iBUG's spacing; they agree with iBUG on frontal faces (~0.1-0.2
inter-ocular distances, the mesh oval lies slightly outside) and drift apart under strong yaw.
"""
from __future__ import annotations

import numpy as np

from reenact.landmarks.base import FaceLandmarks, LandmarkDetector
from reenact.landmarks.face_alignment import BackendUnavailable

INSTALL_HINT = ("install the optional extra with `pip install \"mediapipe==0.10.21\"` (it needs numpy<2, so use "
                "a separate environment: the rest of reenact runs on numpy 2)")
OFFLINE_HINT = "The default 'dlib' landmark backend needs no extra package"

NUM_MESH_POINTS = 478  # 468 face-mesh vertices + 10 iris points (refine_landmarks=True)

# iBUG index -> face-mesh vertex, or a pair of vertices to average. "Right" = the subject's right (image left).
IBUG68_FROM_MESH: tuple[int | tuple[int, int], ...] = (
    # jaw 0-16, subject's right ear -> chin -> left ear (face-oval vertices)
    (127, 162), (234, 127), 93, 132, 58, 172, 150, 176, 152, 400, 379, 397, 288, 361, 323, (454, 356), (356, 389),
    # right brow 17-21 (outer -> inner), left brow 22-26 (inner -> outer): upper brow contour
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    # nose bridge 27-30 (nasion -> tip), nostrils 31-35 (right wing -> subnasale -> left wing)
    (168, 6), 197, 5, 1,
    98, 97, 2, 326, 327,
    # right eye 36-41: outer corner, upper lid x2, inner corner, lower lid x2 (lid margins)
    33, 160, 158, 133, 153, 144,
    # left eye 42-47: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # outer lips 48-59: right corner, upper lip to left corner, lower lip back
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67: right inner corner, upper inner lip, left inner corner, lower inner lip
    78, 82, 13, 312, 308, 317, 14, 87,
)


def _gather_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(68, 2)`` vertex indices for the two averaged vertices (equal where the table has one)."""
    first = np.array([m[0] if isinstance(m, tuple) else m for m in IBUG68_FROM_MESH], np.int64)
    second = np.array([m[1] if isinstance(m, tuple) else m for m in IBUG68_FROM_MESH], np.int64)
    return first, second


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """iBUG-68 points from face-mesh points.

    mesh: ``(..., 468 or 478, D)`` face-mesh coordinates in FaceMesh order (any ``D``, e.g. 2 or 3).
    Returns ``(..., 68, D)`` float32.
    """
    mesh = np.asarray(mesh, np.float32)
    if mesh.ndim < 2 or mesh.shape[-2] not in (468, NUM_MESH_POINTS):
        raise ValueError(f"mesh must be (..., 468 or {NUM_MESH_POINTS}, D), got {mesh.shape}")
    first, second = _gather_tables()
    return 0.5 * (mesh[..., first, :] + mesh[..., second, :])


class MediaPipeDetector(LandmarkDetector):
    """MediaPipe FaceMesh (with iris refinement) mapped to iBUG-68; see the module doc for the mapping.

    max_faces: most faces reported per image. min_detection_confidence: FaceMesh's face detector threshold.
    FaceMesh reports no per-face confidence: ``score`` is 1.0; ``box`` is the extent of the full mesh.
    Raises BackendUnavailable when mediapipe (with its legacy ``solutions`` API) is not importable.
    """

    name = "mediapipe"

    def __init__(self, max_faces: int = 4, min_detection_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as e:
            raise BackendUnavailable(f"landmark backend 'mediapipe': mediapipe with its `solutions.face_mesh` "
                                     f"API is not importable ({e}); {INSTALL_HINT}. {OFFLINE_HINT}.") from e
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                                        min_detection_confidence=min_detection_confidence)

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got "
                             f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        faces = []
        for landmarks in result.multi_face_landmarks or []:
            # MediaPipe normalises by the image size with 0 and 1 at the image borders; our pixel centres
            # are at integer coordinates, hence the half-pixel shift.
            mesh = np.array([(p.x * w - 0.5, p.y * h - 0.5) for p in landmarks.landmark], np.float32)
            box = np.concatenate([mesh.min(0), mesh.max(0)])
            faces.append(FaceLandmarks(mesh_to_ibug68(mesh), box, 1.0))
        return faces

    def close(self) -> None:
        """Release MediaPipe's graph (also done when the detector is garbage collected)."""
        self._mesh.close()


__all__ = ["IBUG68_FROM_MESH", "MediaPipeDetector", "mesh_to_ibug68"]
