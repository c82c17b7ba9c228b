"""Built-in motion scripts: animate a face's own 68 landmarks with named gestures, no driver video needed.

    from puppeteer.motion_script import motion_script, PRESETS

    track = motion_script(points, seconds=4.0, fps=25.0, seed=0)       # (100, 68, 2), pixels of ``points``
    track = motion_script(points, 2.0, 25.0, script="nod")              # one gesture
    track = motion_script(points, 3.0, 25.0, script=[Gesture("smile", 0.5, 2.0), Gesture("blink", 1.2, 0.3)])
    frames = avatar.render_batch(track)                                  # when ``points`` are crop pixels

A :class:`Script` is a timeline of :class:`Gesture` s (``kind``, ``start``, ``duration``, ``amount``) over a nominal
length, stretched to the ``seconds`` asked for. Gestures (amplitudes at ``amount=1``):

- ``nod``: the head pitches down and back up twice (8 degrees);
- ``turn``: the head turns (yaw) to one side, to the other and back (12 degrees);
- ``tilt``: the head rolls to one side and back (6 degrees, in-plane);
- ``smile``: mouth corners out and up, cheeks and lower lids raised;
- ``brows``: eyebrows raised (7 % of the eye distance), upper lids a little wider;
- ``open``: the jaw drops and the mouth opens (22 % of the eye distance at the chin), then closes;
- ``blink``: both eyes close and reopen (fast close, slower open: ``puppeteer.audio.motion.blink_closure``).

How: the face is brought into its canonical frame (``reenact.landmarks.canonical.canonicalize``: eye centres at
``(-0.5, 0)`` and ``(0.5, 0)``, one unit = the eye distance, y down), expressions are added there as displacement
fields, blinks close the lids (``puppeteer.audio.motion.close_eyes``), then the head is rotated in 3-D with a
generic depth per landmark (:data:`DEPTH`, a rough average face: the nose in front, the jaw contour behind), about
a pivot inside the head, and projected orthographically; the result goes back to the input's pixels. Every
curve is C1-smooth and starts and ends at zero, so a script starts and ends exactly on the face it was given
(scripts chain without jumps) and the face's own shape (its proportions, its resting expression) is kept.

``seed`` adds idle motion (a slight head drift: sums of slow sinusoids, fading in and out at the ends) and
nothing else: the gestures' timing is the script's. Same seed, same track.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from reenact.geometry import invert, transform
from reenact.landmarks.parts import MIRROR_PERMUTATION

KINDS = ("nod", "turn", "tilt", "smile", "brows", "open", "blink")
POSE_KINDS = ("nod", "turn", "tilt")
EXPRESSION_KINDS = ("smile", "brows", "open")

# Peak angles of the pose gestures at amount=1 (degrees).
NOD_DEGREES = 8.0
TURN_DEGREES = 12.0
TILT_DEGREES = 6.0
# Idle head drift (RMS degrees of pitch, yaw, roll at idle=1).
IDLE_DEGREES = (1.2, 1.8, 0.8)
# Rotation centre of the head in canonical units (x, y, z): between the ears, a little below the eyes.
PIVOT = np.array([0.0, 0.5, -0.8])


@dataclass(frozen=True)
class Gesture:
    """One gesture: ``kind`` (one of :data:`KINDS`), ``start`` and ``duration`` in seconds of its script's
    nominal length, ``amount`` (1 = the default amplitude; negative mirrors pose gestures, e.g. a turn that
    starts to the other side)."""

    kind: str
    start: float
    duration: float
    amount: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown gesture {self.kind!r} (known: {', '.join(KINDS)})")
        if self.duration <= 0 or self.start < 0:
            raise ValueError(f"gesture {self.kind!r}: start must be >= 0 and duration > 0, got "
                             f"start={self.start}, duration={self.duration}")


@dataclass(frozen=True)
class Script:
    """A timeline of gestures over ``length`` seconds (stretched to the length a track asks for)."""

    length: float
    gestures: tuple[Gesture, ...] = field(default_factory=tuple)
    description: str = ""

    def __post_init__(self):
        if self.length <= 0:
            raise ValueError(f"script length must be > 0, got {self.length}")
        for g in self.gestures:
            if g.start + g.duration > self.length + 1e-9:
                raise ValueError(f"gesture {g} ends after the script's length {self.length} s")


#: Named scripts. ``demo`` shows every gesture in 4 s (the one ``make demo`` plays).
PRESETS: dict[str, Script] = {
    "demo": Script(4.0, (
        Gesture("nod", 0.10, 1.25),
        Gesture("blink", 0.85, 0.30),
        Gesture("turn", 1.20, 1.50),
        Gesture("smile", 1.40, 1.50),
        Gesture("brows", 2.60, 0.80),
        Gesture("blink", 2.75, 0.30),
        Gesture("open", 3.00, 0.85, 0.6),  # wider: the small model paints a grid for teeth
        Gesture("tilt", 3.00, 0.95),
    ), "nod, blink, turn, smile, raised brows, blink, mouth open-close with a head tilt"),
    "nod": Script(2.0, (Gesture("nod", 0.2, 1.6),), "two nods"),
    "turn": Script(2.0, (Gesture("turn", 0.2, 1.6),), "look to one side, to the other, back"),
    "tilt": Script(2.0, (Gesture("tilt", 0.2, 1.6),), "tilt the head and back"),
    "smile": Script(2.0, (Gesture("smile", 0.2, 1.6),), "smile"),
    "brows": Script(2.0, (Gesture("brows", 0.2, 1.6),), "raise the eyebrows"),
    "open": Script(2.0, (Gesture("open", 0.2, 1.6),), "open the mouth and close it"),
    "blink": Script(2.0, (Gesture("blink", 0.3, 0.3), Gesture("blink", 1.2, 0.3)), "two blinks"),
    "idle": Script(2.0, (), "idle head drift only (set by the seed)"),
}


# ------------------------------------------------------------------------------------------- face model

def _symmetric(left: dict[int, tuple[float, float]], middle: dict[int, tuple[float, float]] | None = None
               ) -> np.ndarray:
    """A (68, 2) field from values on the subject's right (image left) side, mirrored (x negated) onto the other
    side, plus midline points."""
    out = np.zeros((68, 2))
    for i, (x, y) in left.items():
        out[i] = (x, y)
        out[MIRROR_PERMUTATION[i]] = (-x, y)
    for i, (x, y) in (middle or {}).items():
        out[i] = (x, y)
    return out


def _symmetric_depth(left: dict[int, float], middle: dict[int, float]) -> np.ndarray:
    z = np.zeros(68)
    for i, v in left.items():
        z[i] = z[MIRROR_PERMUTATION[i]] = v
    for i, v in middle.items():
        z[i] = v
    return z


#: Depth (towards the camera, eye distances, 0 at the eye centres) of each landmark on an average face; only
#: used to project head rotations, so rough values do.
DEPTH = _symmetric_depth(
    {0: -0.75, 1: -0.70, 2: -0.62, 3: -0.52, 4: -0.40, 5: -0.27, 6: -0.14, 7: -0.03,           # jaw contour
     17: -0.15, 18: -0.02, 19: 0.06, 20: 0.10, 21: 0.12,                                        # brow
     31: 0.22, 32: 0.28,                                                                        # nostrils
     36: -0.10, 37: 0.02, 38: 0.03, 39: 0.00, 40: 0.02, 41: 0.01,                               # eye
     48: 0.12, 49: 0.20, 50: 0.25, 59: 0.20, 58: 0.24, 60: 0.14, 61: 0.22, 67: 0.21},           # lips
    {8: 0.02, 27: 0.12, 28: 0.22, 29: 0.32, 30: 0.45, 33: 0.32, 51: 0.28, 57: 0.26, 62: 0.24, 66: 0.23})

JAW_PROFILE = np.sin(np.pi * np.arange(17) / 16) ** 2  # how much each jaw point follows the chin

#: Expression displacement fields at amount 1, canonical units (x towards image right, y down).
SMILE = _symmetric(
    {48: (-0.08, -0.06), 49: (-0.03, -0.025), 50: (-0.01, -0.01), 59: (-0.04, -0.03), 58: (-0.015, -0.01),
     60: (-0.07, -0.05), 61: (-0.02, -0.015), 67: (-0.02, -0.01),
     3: (-0.01, -0.01), 4: (-0.01, -0.012), 31: (-0.01, -0.005), 40: (0.0, -0.012), 41: (0.0, -0.012)},
    {51: (0.0, -0.005), 62: (0.0, -0.01)})
BROWS_UP = _symmetric({17: (0.0, -0.05), 18: (0.0, -0.065), 19: (0.0, -0.075), 20: (0.0, -0.075),
                       21: (0.0, -0.065), 37: (0.0, -0.012), 38: (0.0, -0.012)})
_D = 0.22
MOUTH_OPEN = _symmetric(
    {48: (0.02, 0.3 * _D), 60: (0.02, 0.3 * _D), 49: (0.0, -0.04 * _D), 50: (0.0, -0.04 * _D),
     61: (0.0, -0.04 * _D), 59: (0.01, 0.7 * _D), 58: (0.0, 0.95 * _D), 67: (0.0, _D)},
    {51: (0.0, -0.04 * _D), 62: (0.0, -0.04 * _D), 57: (0.0, _D), 66: (0.0, _D)})
MOUTH_OPEN[:17, 1] = np.maximum(MOUTH_OPEN[:17, 1], _D * JAW_PROFILE)
FIELDS = {"smile": SMILE, "brows": BROWS_UP, "open": MOUTH_OPEN}


# ------------------------------------------------------------------------------------------- curves

@dataclass
class Curves:
    """Per-frame parameters of a track: ``pitch``, ``yaw``, ``roll`` (radians; pitch > 0 looks down, yaw > 0
    turns the nose towards image right, roll > 0 tilts clockwise on screen), ``smile``, ``brows``, ``open``
    (expression weights, 1 = the gesture's full amplitude) and ``blink`` (lid closure, 1 = shut), each ``(T,)``."""

    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    smile: np.ndarray
    brows: np.ndarray
    open: np.ndarray
    blink: np.ndarray

    def __len__(self) -> int:
        return len(self.pitch)


def smootherstep(x: np.ndarray) -> np.ndarray:
    """0 -> 1 with zero velocity and acceleration at both ends (C2)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def _profile(kind: str, u: np.ndarray) -> np.ndarray:
    """A gesture's shape over its own time ``u`` in [0, 1] (0 outside): every one starts and ends at 0 with
    zero velocity."""
    inside = (u >= 0) & (u <= 1)
    uc = np.clip(u, 0.0, 1.0)
    if kind == "nod":  # down and up, twice
        p = np.sin(2 * np.pi * uc) ** 2
    elif kind == "turn":  # one side, the other, back
        p = np.sin(2 * np.pi * uc) * np.sin(np.pi * uc) / 0.7698  # normalised peak
    elif kind == "tilt":  # to one side and back
        p = np.sin(np.pi * uc) ** 2
    elif kind == "open":  # open (40 %), hold (20 %), close (40 %)
        p = smootherstep(uc / 0.4) * (1 - smootherstep((uc - 0.6) / 0.4))
    else:  # expressions: onset 30 %, hold, offset 30 %
        p = smootherstep(uc / 0.3) * (1 - smootherstep((uc - 0.7) / 0.3))
    return np.where(inside, p, 0.0)


def resolve_script(script: str | Script | Sequence[Gesture]) -> Script:
    """A :class:`Script` from a preset name, a Script, or gestures (their script ends with the last one)."""
    if isinstance(script, Script):
        return script
    if isinstance(script, str):
        if script not in PRESETS:
            raise ValueError(f"unknown motion script {script!r} (presets: {', '.join(PRESETS)})")
        return PRESETS[script]
    gestures = tuple(script)
    if not all(isinstance(g, Gesture) for g in gestures):
        raise TypeError("a motion script is a preset name, a Script or a sequence of Gesture")
    length = max((g.start + g.duration for g in gestures), default=1.0)
    return Script(length, gestures)


def num_frames(seconds: float, fps: float) -> int:
    """Frames of a track: ``round(seconds x fps)``, at least 1."""
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be > 0, got {seconds} and {fps}")
    return max(1, int(round(seconds * fps)))


def script_curves(script: str | Script | Sequence[Gesture] = "demo", seconds: float = 4.0, fps: float = 25.0,
                  seed: int = 0, strength: float = 1.0, idle: float = 1.0, blink_depth: float = 1.0) -> Curves:
    """The parameter curves of ``script`` stretched to ``seconds`` at ``fps``; ``strength`` scales every gesture,
    ``idle`` the seeded head drift (0: none), ``blink_depth`` the lid closure at a blink's peak (1: shut)."""
    if not 0.0 <= blink_depth <= 1.0:
        raise ValueError(f"blink_depth must be in [0, 1], got {blink_depth}")
    from puppeteer.audio.motion import blink_closure, slow_noise

    sc = resolve_script(script)
    T = num_frames(seconds, fps)
    t = np.arange(T) / fps
    stretch = seconds / sc.length
    c = {k: np.zeros(T) for k in ("pitch", "yaw", "roll", "smile", "brows", "open")}
    blinks = []
    for g in sc.gestures:
        start, dur = g.start * stretch, g.duration * stretch
        if g.kind == "blink":
            blinks.append((start, dur))
            continue
        p = _profile(g.kind, (t - start) / dur) * g.amount * strength
        if g.kind == "nod":
            c["pitch"] += np.radians(NOD_DEGREES) * p
        elif g.kind == "turn":
            c["yaw"] += np.radians(TURN_DEGREES) * p
        elif g.kind == "tilt":
            c["roll"] += np.radians(TILT_DEGREES) * p
        else:
            c[g.kind] += p
    blink = np.zeros(T)
    if strength > 0:
        for ev in blinks:
            # each blink shut on at least one frame: its sampled closure is normalised to peak at 1 (a 0.3 s
            # blink's 30 ms full closure falls between 25 fps frames)
            b = blink_closure([ev], T, fps)
            blink = np.maximum(blink, b / b.max() if b.max() > 0.3 else b)
        blink *= blink_depth
    if idle > 0 and T > 1:
        rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
        noise = slow_noise(T, fps, rng, 3, max_hz=0.4)
        # fade in and out (C2) over up to 0.6 s, so the track still starts and ends on the given face
        ramp = min(0.6, seconds / 3)
        env = smootherstep(t / ramp) * smootherstep((t[-1] - t) / ramp)
        for k, (name, deg) in enumerate(zip(("pitch", "yaw", "roll"), IDLE_DEGREES)):
            c[name] += np.radians(deg) * idle * noise[:, k] * env
    return Curves(blink=blink, **c)


# ------------------------------------------------------------------------------------------- applying

def _rotation(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations ``R_roll @ R_yaw @ R_pitch`` in (x right, y down, z towards the camera)."""
    cp, sp, cy, sy, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(pitch), np.zeros_like(pitch)
    # pitch > 0: points in front (z > 0) move down (+y): y' = y cos + z sin
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, sp], -1), np.stack([zero, -sp, cp], -1)], -2)
    # yaw > 0: points in front move towards +x: x' = x cos + z sin
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    # roll > 0: clockwise on screen (y down): x' = x cos - y sin, y' = x sin + y cos
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def apply_curves(points: np.ndarray, curves: Curves) -> np.ndarray:
    """One face ``points`` ``(68, 2)`` (any pixel frame) animated by ``curves`` -> ``(T, 68, 2)`` float32 in the
    same pixels. Frames where every curve is 0 are exactly ``points``."""
    from reenact.landmarks.canonical import canonicalize
    from puppeteer.audio.motion import close_eyes

    pts = np.asarray(points, np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise ValueError(f"expected one face's finite (68, 2) landmarks, got {pts.shape}")
    track = canonicalize(pts)
    neutral = track.points[0].astype(np.float64)
    T = len(curves)
    canon = np.repeat(neutral[None], T, 0)
    for name, fld in FIELDS.items():
        canon += getattr(curves, name)[:, None, None] * fld[None]
    canon = close_eyes(canon, np.asarray(curves.blink, np.float64))
    # 3-D head rotation about PIVOT with the generic depth, projected orthographically
    xyz = np.concatenate([canon, np.broadcast_to(DEPTH[None, :, None], (T, 68, 1))], -1) - PIVOT
    rot = _rotation(curves.pitch, curves.yaw, curves.roll)
    moved = np.einsum("tij,tnj->tni", rot, xyz)[..., :2] + PIVOT[:2]
    still = (np.abs(curves.pitch) + np.abs(curves.yaw) + np.abs(curves.roll)) == 0
    moved[still] = canon[still]  # exact where the head does not move
    back = transform(moved, invert(track.to_canonical[0]))
    changed = np.abs(moved - neutral[None]).reshape(T, -1).max(1) > 0
    out = np.where(changed[:, None, None], back, pts[None])
    return out.astype(np.float32)


def motion_script(points: np.ndarray, seconds: float = 4.0, fps: float = 25.0, seed: int = 0,
                  script: str | Script | Sequence[Gesture] = "demo", strength: float = 1.0,
                  idle: float = 1.0, blink_depth: float = 1.0) -> np.ndarray:
    """Animate one face: ``points`` ``(68, 2)`` landmarks (crop or image pixels; best with a neutral, frontal
    face) -> ``(T, 68, 2)`` float32 in the same pixels, ``T = round(seconds x fps)``.

    script: a preset name (:data:`PRESETS`; default ``"demo"``: every gesture in turn), a :class:`Script`, or a
    list of :class:`Gesture`; its timeline is stretched to ``seconds``. strength: scales every gesture (0: only
    the idle drift). idle: scales the seeded idle head drift (0: none; then ``seed`` changes nothing).
    blink_depth: lid closure at the peak of a blink (1: the lids meet; the bundled warp-guided model renders
    closures above ~0.6 with folded lids, see ``reenact.demo``).
    The first and last frames equal ``points``; the track is smooth (C1) in time; deterministic for a seed.
    """
    return apply_curves(points, script_curves(script, seconds, fps, seed, strength, idle, blink_depth))


__all__ = ["Gesture", "Script", "Curves", "PRESETS", "KINDS", "DEPTH", "motion_script", "script_curves",
           "apply_curves", "resolve_script", "num_frames", "smootherstep"]
