"""Landmark-based metrics: landmark distance (LMD), head pose and its error, eye aspect ratio and blinks.

All take 68-point iBUG landmarks ``(..., 68, 2)`` in pixels. Landmarks of generated frames come from a detector
run on the output (dlib in ``reenact.metrics.identity.FaceAnalyzer``), so the metrics measure what is visible in
the image, not what the method was asked to draw.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reenact.landmarks.parts import LEFT_EYE, RIGHT_EYE


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Distance between the eye centres (means of points 36-41 and 42-47), shape ``(...,)``."""
    p = np.asarray(points, np.float64)
    return np.linalg.norm(p[..., RIGHT_EYE, :].mean(-2) - p[..., LEFT_EYE, :].mean(-2), axis=-1)


def lmd(pred: np.ndarray, ref: np.ndarray, idx=None) -> np.ndarray:
    """Landmark distance: mean Euclidean distance between ``pred`` and ``ref`` (..., 68, 2) over the points
    ``idx`` (all by default), divided by the inter-ocular distance of ``ref``. Shape ``(...,)``; a value of
    0.05 means 5% of the eye distance (about 3 px at 256 px crops)."""
    p, r = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if p.shape != r.shape or p.shape[-2:] != (68, 2):
        raise ValueError(f"expected two (..., 68, 2) landmark arrays of one shape, got {p.shape} and {r.shape}")
    d = np.linalg.norm(p - r, axis=-1)
    if idx is not None:
        d = d[..., idx]
    return d.mean(-1) / inter_ocular(r)


# ------------------------------------------------------------------------------------------- head pose

# A generic 3-D face for pose estimation, written down for this project: rounded average adult proportions
# (an outer eye-corner span of 90 mm, eye corners, nose, mouth corners and chin placed from anthropometric
# norms), with the vertical spacing then rounded so that the median dlib landmark layout of frontal-ish
# talking-head frames (``.devdata/prepared``, every 25th frame of 53 clips) reads as zero pitch. It is not any
# one person's face nor a fitted model: absolute angles are good to a few degrees for typical faces, and pose
# *differences* between two images of one person (what the pose error measures) are more accurate still.
# Millimetres; origin at the nose tip; x to the subject's left (image right in a frontal view), y down, z away
# from the camera into the head (the camera's axes for a frontal face, so a frontal face has zero rotation).
POSE_MODEL_POINTS = np.array([
    [0.0, 0.0, 0.0],       # 30 nose tip (pronasale)
    [0.0, -37.0, 20.0],    # 27 nasion (top of the nose bridge)
    [0.0, 14.0, 15.0],     # 33 subnasale (base of the nose)
    [0.0, 89.0, 25.0],     # 8  menton (chin)
    [-45.0, -33.0, 35.0],  # 36 right eye, outer corner (exocanthion)
    [-20.0, -33.0, 22.0],  # 39 right eye, inner corner (endocanthion)
    [20.0, -33.0, 22.0],   # 42 left eye, inner corner
    [45.0, -33.0, 35.0],   # 45 left eye, outer corner
    [-26.0, 40.0, 25.0],   # 48 right mouth corner (cheilion)
    [26.0, 40.0, 25.0],    # 54 left mouth corner
], dtype=np.float64)
POSE_MODEL_INDICES = np.array([30, 27, 33, 8, 36, 39, 42, 45, 48, 54])


def _camera(width: float, height: float) -> np.ndarray:
    f = float(max(width, height))  # ~53 degrees field of view: a webcam/phone; pose is insensitive to it
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def head_pose(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of each face ``points`` ((68, 2) or (N, 68, 2)) in an image of
    ``image_size`` (H, W), from ``cv2.solvePnP`` against :data:`POSE_MODEL_POINTS`. Returns (3,) or (N, 3).
    Signs: yaw > 0 when the nose turns towards the image's left, pitch > 0 when it turns down, roll > 0 clockwise
    in the image. Rotation order R = Rz(roll) Ry(yaw) Rx(pitch)."""
    pts = np.asarray(points, np.float64)
    single = pts.ndim == 2
    pts = pts.reshape(-1, 68, 2)
    h, w = image_size
    cam = _camera(w, h)
    out = np.zeros((len(pts), 3))
    for i, p in enumerate(pts):
        img_pts = np.ascontiguousarray(p[POSE_MODEL_INDICES])
        # Start from a frontal pose at a plausible distance so the iterative solver lands on the face-forward
        # solution (a flat-ish point set also fits a mirror pose behind the camera).
        iod = np.linalg.norm(img_pts[7] - img_pts[4]) or 1.0
        z = cam[0, 0] * 90.0 / iod
        t0 = np.array([[(img_pts[0, 0] - cam[0, 2]) * z / cam[0, 0]], [(img_pts[0, 1] - cam[1, 2]) * z / cam[1, 1]],
                       [z]])
        ok, rvec, _ = cv2.solvePnP(POSE_MODEL_POINTS, img_pts, cam, None, rvec=np.zeros((3, 1)), tvec=t0,
                                   useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            out[i] = np.nan
            continue
        out[i] = rotation_to_euler(cv2.Rodrigues(rvec)[0])
    return out[0] if single else out


def rotation_to_euler(R: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of a rotation matrix R = Rz(roll) Ry(yaw) Rx(pitch)."""
    yaw = np.arcsin(np.clip(-R[2, 0], -1, 1))
    pitch = np.arctan2(R[2, 1], R[2, 2])
    roll = np.arctan2(R[1, 0], R[0, 0])
    return np.degrees([yaw, pitch, roll])


def euler_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of :func:`rotation_to_euler` (degrees)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_error(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean absolute difference of (yaw, pitch, roll) in degrees, ``(...,)``, from two ``(..., 3)`` poses."""
    return np.abs(np.asarray(pred, np.float64) - np.asarray(ref, np.float64)).mean(-1)


# ------------------------------------------------------------------------------------------- eyes, blinks

def eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """Eye aspect ratio (Soukupova & Cech 2016), the mean of both eyes: ``(|p2-p6| + |p3-p5|) / (2 |p1-p4|)``
    with p1..p6 an eye's six points from the outer corner. About 0.25-0.35 open, below ~0.15 closed. ``(...,)``."""
    p = np.asarray(points, np.float64)
    ears = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        e = p[..., eye, :]
        v = np.linalg.norm(e[..., 1, :] - e[..., 5, :], axis=-1) + np.linalg.norm(e[..., 2, :] - e[..., 4, :], axis=-1)
        ears.append(v / (2.0 * np.linalg.norm(e[..., 0, :] - e[..., 3, :], axis=-1)))
    return (ears[0] + ears[1]) / 2


@dataclass(frozen=True)
class Blinks:
    """Blinks found in an EAR track: ``events`` (start, end) frame ranges (end exclusive), ``rate_per_min``,
    ``mean_duration_s`` (nan without blinks), the ``threshold`` used."""

    events: list[tuple[int, int]]
    rate_per_min: float
    mean_duration_s: float
    threshold: float


def detect_blinks(ear: np.ndarray, fps: float, threshold: float = 0.2, relative: float | None = None,
                  min_frames: int = 2) -> Blinks:
    """Blinks: runs of at least ``min_frames`` consecutive frames with EAR below the threshold.

    threshold: absolute EAR threshold (0.2 suits most faces at frontal pose). relative: if given, the threshold
    is ``relative`` x the median EAR of the track instead (e.g. 0.75), which adapts to people with narrow eyes
    and to landmark detectors with a different EAR scale.
    """
    ear = np.asarray(ear, np.float64)
    if relative is not None:
        threshold = float(relative * np.nanmedian(ear))
    closed = np.nan_to_num(ear, nan=np.inf) < threshold
    events, start = [], None
    for i, c in enumerate(np.append(closed, False)):
        if c and start is None:
            start = i
        elif not c and start is not None:
            if i - start >= min_frames:
                events.append((start, i))
            start = None
    minutes = len(ear) / fps / 60.0
    rate = len(events) / minutes if minutes > 0 else float("nan")
    dur = float(np.mean([(b - a) / fps for a, b in events])) if events else float("nan")
    return Blinks(events, float(rate), dur, float(threshold))
