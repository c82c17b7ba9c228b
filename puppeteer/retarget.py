"""Retargeting: another person's landmark motion onto an avatar's face, keeping the avatar's face geometry.

Everything here is numpy on ``(68, 2)`` / ``(T, 68, 2)`` float pixel landmarks in iBUG order; nothing renders.

**Relative mode** (default, cross-identity). The driver's motion is measured against the driver's own
reference frame and applied to the avatar's neutral landmarks (its source crop's points), so the avatar keeps
its jaw width, eye distance and nose:

1. *Normalise.* Each driver frame is mapped onto the driver's reference frame by the least-squares similarity
   (rotation, uniform scale, translation) of its rigid points: eye corners, nose and the face contour at the
   ears. What is left after this map is expression; the map itself is the head pose.
2. *Per-part deltas* (in the reference's coordinates, carried into the avatar's by the similarity ``S`` that
   maps the driver's reference face onto the avatar's, fitted on the same rigid points):

   - ``expression``: the brows move by the driver's brow deltas, scaled by ``S`` (face size ratio).
   - ``mouth``: outer and inner lips move by the driver's lip deltas, rotated by ``S`` and scaled by the ratio
     of the avatar's and driver's mouth widths (a wide mouth opens proportionally). The deltas are taken
     between closed mouths (:func:`close_mouth` of the reference and of the avatar), so the mouth opens as
     much as the driver's whatever it does in the driver's reference frame and in the avatar's photo (a
     talking driver may have no closed-mouth frame in its first second; a smiling photo shows teeth). They
     are taken relative to the upper lip's centre, which is fixed to the upper jaw: a whole-mouth shift
     against the nose is what nodding or turning looks like in 2D, not speech, and copying it would change
     the avatar's proportions. The jaw follows the mouth: the driver's chin drop (the jaw points' motion
     along the face's vertical, fitted to a profile that is 1 at the chin and 0 at the ears) moves the
     avatar's jaw points along its own vertical by that profile, so the jaw opens but never changes width.
     Inner lips never cross (crossing pairs, which detectors produce on pressed lips, meet in the middle, in
     the inputs and in the result).
   - ``eyes``: the lid openings, as ratios of eye width, are compared with the reference's: the avatar's lid
     gap is scaled by the driver's relative opening (0 = closed: blinks), per eye, about the avatar's own lid
     midline, so narrow eyes stay narrow.
   - the nose and eye corners are never moved except by the pose.
3. *Pose* (``pose``): the driver's similarity from its reference to the frame, conjugated by ``S``: the same
   rotation and scale about the avatar's face centre, and the driver's translation scaled into the avatar's
   crop.

**Absolute mode** (same person, e.g. self-reenactment): the driver's landmarks are mapped into the avatar's
crop by ``S`` only; the driver's face geometry comes with them.

Limits of 68 points: there are no pupils, so **gaze is out of scope** (the eyes follow lids only); out-of-plane
head rotation (yaw, pitch) is not a similarity, so relative mode transfers in-plane rotation, scale and
translation of the head, not turning or nodding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

from reenact.geometry import compose, fit_similarity, invert, similarity_params, transform
from reenact.options import NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, option

#: Points that do not move with expression: nose bridge, nostrils' base, the four eye corners and the face
#: contour at the ears (the jaw's hinge, which opening the mouth does not move). The contour points' lever arm
#: makes the head's rotation and scale several times less noisy than the eyes and nose alone: measured on a
#: real clip, the retargeted track then has less jitter than the driver's instead of 4 % more.
RIGID = np.array([0, 1, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])
BROWS = np.arange(17, 27)
MOUTH = np.arange(48, 68)
JAW = np.arange(0, 17)
#: Inner-lip (upper, lower) pairs that must not cross.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
#: Centre of the upper lip (outer contour): the mouth's anchor on the upper jaw.
UPPER_LIP = np.array([50, 51, 52])
#: Per eye: (outer-or-inner corner, other corner), then the (upper, lower) lid pairs. Corners are ordered so that
#: the corner vector points to the image's right in an upright face (subject's right eye is on the image's left).
EYES = (((36, 39), ((37, 41), (38, 40))),
        ((42, 45), ((43, 47), (44, 46))))
#: How much each jaw point follows the chin drop: 1 at the chin, 0 at the ears; symmetric, so the jaw's width
#: (any pair j, 16 - j) is unchanged by the drop.
JAW_PROFILE = (np.sin(np.pi * np.arange(17) / 16) ** 2).astype(np.float64)

PARTS = ("pose", "expression", "mouth", "eyes")
Mode = Literal["relative", "absolute"]


def parse_parts(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"pose,mouth"`` (or an iterable) -> ``("pose", "mouth")``; ``"all"`` -> every part."""
    items = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    return PARTS if items == ["all"] else tuple(items)


@dataclass(frozen=True)
class RetargetOptions:
    """How driver motion becomes avatar landmarks.

    mode: ``"relative"`` (cross-identity, the avatar keeps its face geometry) or ``"absolute"`` (same person:
        the driver's landmarks, moved into the avatar's crop by a similarity only).
    parts: which of ``pose`` (head rotation / scale / translation), ``expression`` (brows), ``mouth`` (lips and
        jaw) and ``eyes`` (lids, blinks) follow the driver in relative mode; the others keep the avatar's
        neutral shape. Gaze is not available: 68 landmarks have no pupils.
    reference: index of the driver's reference frame; ``None`` picks the frame with the mouth most closed and
        eyes most open within the first ``reference_window`` seconds (offline), or the first frame with a face
        (streaming).
    max_eye_ratio: cap on how much wider than the avatar's own the eyes may open (driver opening / reference).
    """

    mode: Mode = option("relative", "relative (default): the driver's motion on the avatar's own face; absolute: "
                                    "the driver's landmarks as they are (same person)", show_default=False)
    parts: tuple[str, ...] = option(PARTS, "what follows the driver in relative mode: comma list of pose, "
                                           "expression, mouth, eyes (default all; gaze is not available from 68 "
                                           "landmarks)", type=parse_parts, show_default=False)
    reference: int | None = option(None, "driver frame taken as neutral (default: mouth most closed, eyes most "
                                         "open in the first reference-window seconds)", type=NON_NEGATIVE)
    reference_window: float = option(1.0, "seconds searched for the reference frame", type=NON_NEGATIVE_FLOAT)
    max_eye_ratio: float = option(1.5, "cap on how much wider than the avatar's own the eyes may open",
                                  type=POSITIVE_FLOAT)

    def __post_init__(self):
        if self.mode not in ("relative", "absolute"):
            raise ValueError(f"mode must be 'relative' or 'absolute', got {self.mode!r}")
        parts = tuple(self.parts)
        if "gaze" in parts:
            raise ValueError("gaze cannot be retargeted: the 68 iBUG landmarks have no pupils (the eyes follow "
                             f"the lids only); choose parts from {', '.join(PARTS)}")
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown part(s) {', '.join(map(repr, unknown))}; choose from {', '.join(PARTS)}")
        object.__setattr__(self, "parts", parts)
        if self.reference is not None and self.reference < 0:
            raise ValueError(f"reference must be a frame index >= 0, got {self.reference}")
        if not self.max_eye_ratio > 0:
            raise ValueError(f"max_eye_ratio must be > 0, got {self.max_eye_ratio}")

    parse_parts = staticmethod(parse_parts)


# ----------------------------------------------------------------------------------------------- measures

def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(..., 2)`` of the subject's right (image left) and left eye."""
    p = np.asarray(points, np.float64)
    return p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2)


def eye_distance(points: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, ``(...,)`` pixels: the face's size that expression does not change."""
    r, l_ = eye_centres(points)
    return np.linalg.norm(l_ - r, axis=-1)


def down_axis(points: np.ndarray) -> np.ndarray:
    """Unit vector ``(..., 2)`` pointing from the brows to the chin, perpendicular to the eye line."""
    r, l_ = eye_centres(points)
    e = (l_ - r) / np.maximum(np.linalg.norm(l_ - r, axis=-1, keepdims=True), 1e-9)
    return np.stack([-e[..., 1], e[..., 0]], -1)


def _perp(u: np.ndarray) -> np.ndarray:
    return np.stack([-u[..., 1], u[..., 0]], -1)


def eye_openness(points: np.ndarray) -> np.ndarray:
    """Lid gap of each eye as a fraction of its width, ``(..., 2)`` (subject's right, left): ~0.3 open, ~0.05
    closed. The gap is measured across the corner line, averaged over the two lid pairs."""
    p = np.asarray(points, np.float64)
    out = []
    for (c0, c1), pairs in EYES:
        v = p[..., c1, :] - p[..., c0, :]
        width = np.maximum(np.linalg.norm(v, axis=-1), 1e-9)
        n = _perp(v / width[..., None])
        gap = np.mean([((p[..., lo, :] - p[..., up, :]) * n).sum(-1) for up, lo in pairs], 0)
        out.append(gap / width)
    return np.stack(out, -1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over the eye distance, ``(...,)``: 0 closed, ~0.3-0.5 wide open. The gap is measured along
    the face's vertical and is 0 where the detector crossed the lips. Similarity-invariant."""
    p = np.asarray(points, np.float64)
    down = down_axis(p)
    gap = np.mean([np.maximum(((p[..., lo, :] - p[..., up, :]) * down).sum(-1), 0) for up, lo in INNER_LIP_PAIRS], 0)
    return gap / np.maximum(eye_distance(p), 1e-9)


def uncross_lips(points: np.ndarray, down: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``(..., 68, 2)`` landmarks where inner-lip pairs whose lower point lies above the upper one
    (along ``down``, default each face's own vertical) are both moved to their midpoint: a closed mouth."""
    p = np.array(points, np.float64)
    down = down_axis(p) if down is None else np.broadcast_to(np.asarray(down, np.float64), p.shape[:-2] + (2,))
    for up, lo in INNER_LIP_PAIRS:
        bad = ((p[..., lo, :] - p[..., up, :]) * down).sum(-1) < 0
        if bad.any():
            mid = (p[..., up, :][bad] + p[..., lo, :][bad]) / 2
            p[..., up, :][bad] = mid
            p[..., lo, :][bad] = mid
    return p


def mouth_width(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return np.linalg.norm(p[..., 54, :] - p[..., 48, :], axis=-1)


OUTER_LOWER_LIP = np.arange(55, 60)


def close_mouth(points: np.ndarray) -> np.ndarray:
    """A copy of ``(..., 68, 2)`` landmarks with the mouth closed the way a jaw closes it: the inner lower lip
    meets the upper one, the outer lower lip and the chin rise by the mean inner-lip gap (the chin with
    :data:`JAW_PROFILE`, 0 at the ears). The upper lip and the mouth corners stay. Lips must not be crossed
    (see :func:`uncross_lips`)."""
    p = np.array(points, np.float64)
    down = down_axis(p)[..., None, :]                                         # (..., 1, 2)
    gaps = [((p[..., lo, :] - p[..., up, :]) * down[..., 0, :]).sum(-1) for up, lo in INNER_LIP_PAIRS]
    for (up, lo), g in zip(INNER_LIP_PAIRS, gaps):
        p[..., lo, :] -= g[..., None] * down[..., 0, :]
    g = np.mean(gaps, 0)[..., None, None]
    p[..., OUTER_LOWER_LIP, :] -= g * down
    p[..., JAW, :] -= g * JAW_PROFILE[:, None] * down
    return p


def choose_reference(points: np.ndarray, valid: np.ndarray | None = None, fps: float = 25.0,
                     window: float = 1.0) -> int:
    """The driver's reference frame: among the valid frames of the first ``window`` seconds, the one whose
    mouth is most closed and eyes most open (a neutral face, so deltas from it mean "open the mouth", "close
    the eyes"). Falls back to the first valid frame when none is valid in the window.

    points: ``(T, 68, 2)``; valid: ``(T,)`` bool (frames where the face was really found), default all.
    """
    pts = np.asarray(points)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2) or len(pts) == 0:
        raise ValueError(f"points must be (T, 68, 2) with T >= 1, got {pts.shape}")
    ok = np.ones(len(pts), bool) if valid is None else np.asarray(valid, bool)
    if not ok.any():
        raise ValueError("no valid frame to take as the reference")
    n = max(1, int(round(window * fps)))
    cand = np.flatnonzero(ok[:n])
    if len(cand) == 0:
        return int(np.flatnonzero(ok)[0])
    # both terms are ratios of similar size (~0.3 for an open eye, up to ~0.5 for an open mouth)
    score = eye_openness(pts[cand]).mean(-1) - mouth_opening(pts[cand])
    return int(cand[int(np.argmax(score))])


# --------------------------------------------------------------------------------------------- retargeter

class Retargeter:
    """Maps driver landmarks (driver frame pixels) to avatar landmarks (avatar crop pixels), one frame or a
    whole track at a time. Stateless per frame, so the same object serves offline tracks and live streams.

    avatar_points: ``(68, 2)`` the avatar's neutral landmarks in its crop (``avatar.source_points[shot]``).
    reference_points: ``(68, 2)`` the driver's reference frame. options: :class:`RetargetOptions`.
    """

    def __init__(self, avatar_points: np.ndarray, reference_points: np.ndarray,
                 options: RetargetOptions = RetargetOptions()):
        a = np.asarray(avatar_points, np.float64)
        r = np.asarray(reference_points, np.float64)
        for name, p in (("avatar_points", a), ("reference_points", r)):
            if p.shape != (68, 2) or not np.isfinite(p).all():
                raise ValueError(f"{name} must be finite (68, 2) landmarks, got {p.shape}")
        a, r = uncross_lips(a), uncross_lips(r)
        self.avatar, self.reference, self.options = a, r, options
        # mouth and jaw deltas are taken between closed mouths, so the opening transfers in proportion whatever
        # the mouth does in the driver's reference frame and in the avatar's photo
        self.avatar_closed, self.reference_closed = close_mouth(a), close_mouth(r)
        #: driver reference -> avatar crop (the only map absolute mode uses)
        self.to_avatar = fit_similarity(r[RIGID], a[RIGID])
        self.from_avatar = invert(self.to_avatar)
        scale, angle, _ = similarity_params(self.to_avatar)
        c, s = np.cos(angle), np.sin(angle)
        self.rotation = np.array([[c, -s], [s, c]])
        self.face_scale = float(scale)
        self.mouth_scale = float(mouth_width(a) / max(float(mouth_width(r)), 1e-9))
        self.down_reference = down_axis(r)
        self.down_avatar = down_axis(a)
        self.eyes_reference = np.maximum(eye_openness(r), 0.05)  # a half-closed reference must not blow up ratios

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``(68, 2)`` or ``(T, 68, 2)`` driver landmarks -> the same shape of avatar crop landmarks, float32."""
        d = np.asarray(points, np.float64)
        single = d.ndim == 2
        if single:
            d = d[None]
        if d.ndim != 3 or d.shape[1:] != (68, 2):
            raise ValueError(f"driver points must be (68, 2) or (T, 68, 2), got {np.asarray(points).shape}")
        out = self._absolute(d) if self.options.mode == "absolute" else self._relative(d)
        out = out.astype(np.float32)
        return out[0] if single else out

    def _absolute(self, d: np.ndarray) -> np.ndarray:
        return transform(d, self.to_avatar)

    def _relative(self, d: np.ndarray) -> np.ndarray:
        parts, a, r = self.options.parts, self.avatar, self.reference
        # frame -> reference pose; what remains of the frame after it is expression
        d = uncross_lips(d)
        norm = fit_similarity(d[:, RIGID], r[RIGID])
        normed = transform(d, norm)
        delta = normed - r
        out = np.broadcast_to(a, d.shape).copy()
        if "expression" in parts:
            out[:, BROWS] += self.face_scale * delta[:, BROWS] @ self.rotation.T
        if "mouth" in parts:
            delta = normed - self.reference_closed
            anchor = delta[:, UPPER_LIP].mean(1, keepdims=True)
            mouth = delta[:, MOUTH] - anchor
            out[:, MOUTH] = self.avatar_closed[MOUTH] + self.mouth_scale * mouth @ self.rotation.T
            drop = (delta[:, JAW] - anchor) @ self.down_reference            # (T, 17) along the face's vertical
            chin = drop @ JAW_PROFILE / (JAW_PROFILE @ JAW_PROFILE)          # least-squares fit to the profile
            out[:, JAW] = (self.avatar_closed[JAW]
                           + (self.face_scale * chin)[:, None, None] * JAW_PROFILE[None, :, None] * self.down_avatar)
            out = uncross_lips(out, self.down_avatar)
        if "eyes" in parts:
            self._lids(out, eye_openness(d))
        if "pose" in parts:
            # the driver's reference -> frame similarity, carried into the avatar's frame: S . P . S^-1
            pose = compose(self.to_avatar, compose(invert(norm), self.from_avatar))
            out = transform(out, pose)
        return out

    def _lids(self, out: np.ndarray, openness: np.ndarray) -> None:
        ratio = np.clip(openness / self.eyes_reference, 0.0, self.options.max_eye_ratio)  # (T, 2)
        a = self.avatar
        for e, ((c0, c1), pairs) in enumerate(EYES):
            v = a[c1] - a[c0]
            n = _perp(v / max(float(np.linalg.norm(v)), 1e-9))
            for up, lo in pairs:
                half = max(float((a[lo] - a[up]) @ n), 0.0) / 2
                shift = ((1 - ratio[:, e]) * half)[:, None] * n   # > 0: lids move towards the midline
                out[:, up] += shift
                out[:, lo] -= shift


def retarget(avatar_points: np.ndarray, driver_points: np.ndarray, options: RetargetOptions = RetargetOptions(),
             valid: np.ndarray | None = None, fps: float = 25.0) -> tuple[np.ndarray, int]:
    """Retarget a whole driver track: ``(T, 68, 2)`` driver pixels -> ``((T, 68, 2)`` avatar crop pixels,
    the reference frame index)``. The reference is ``options.reference`` or :func:`choose_reference`."""
    pts = np.asarray(driver_points)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2) or len(pts) == 0:
        raise ValueError(f"driver points must be (T, 68, 2) with T >= 1, got {pts.shape}")
    if options.reference is not None:
        if options.reference >= len(pts):
            raise ValueError(f"reference frame {options.reference} is past the driver's {len(pts)} frames")
        ref = options.reference
    else:
        ref = choose_reference(pts, valid, fps, options.reference_window)
    return Retargeter(avatar_points, pts[ref], options)(pts), ref
