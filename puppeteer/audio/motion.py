"""Natural motion for a talking face driven by audio alone: blinks, subtle head motion, brows following speech.

Speech-driven faces look dead without the motion speech does not determine (Vougioukas et al. 2019 measure blink
rate and duration for that reason). :func:`add_natural_motion` adds to a landmark track ``(T, 68, 2)`` in pixels:

- blinks at a human rate (default 17 per minute; gamma-distributed intervals, more regular than a Poisson process
  as real blinks are) lasting 0.15-0.35 s, with a fast close and a slower open;
- head motion: low-frequency noise (sums of slow sinusoids, below ~0.5 Hz) on in-plane rotation (a couple of
  degrees), translation (a few % of the eye distance) and scale (~1 %), a little livelier while speaking;
- brows raised with the speech energy (emphasis), by a few % of the eye distance.

Everything is seeded (same seed, same motion) and scaled by ``strength`` (0: the track comes back unchanged;
1: the defaults). Blinks keep their depth at lower strength and become rarer instead: half-closed blinks look odd.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reenact.landmarks.parts import LEFT_EYE, RIGHT_EYE
from reenact.options import NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, UNIT, option

BROWS = np.arange(17, 27)


@dataclass
class MotionOptions:
    """What :func:`add_natural_motion` adds. Amplitudes are at ``strength=1``."""

    strength: float = option(1.0, "natural motion strength, 0 (none) to 1", flag="--motion", type=UNIT)
    blinks: bool = option(True, "no blinks")
    head: bool = option(True, "no head motion")
    brows: bool = option(True, "no brow raises")
    blink_rate: float = option(17.0, "blinks per minute (adults at rest / talking: ~15-20, Vougioukas et al. "
                                     "2019)", type=NON_NEGATIVE_FLOAT)
    blink_duration: tuple[float, float] = option((0.15, 0.35), "blink length in seconds: min,max (uniform)")
    blink_regularity: float = option(3.0, "gamma shape of the intervals between blinks: 1 = Poisson, higher = "
                                          "more regular", type=POSITIVE_FLOAT)
    head_rotation: float = option(1.5, "degrees, RMS of the in-plane head rotation", type=NON_NEGATIVE_FLOAT)
    head_translation: float = option(0.025, "RMS head translation, in eye distances", type=NON_NEGATIVE_FLOAT)
    head_scale: float = option(0.008, "RMS relative head scale change", type=NON_NEGATIVE_FLOAT)
    head_max_hz: float = option(0.5, "fastest component of the head motion, Hz", type=POSITIVE_FLOAT)
    brow_raise: float = option(0.05, "brow raise in eye distances, at full emphasis", type=NON_NEGATIVE_FLOAT)
    seed: int = option(0, "random seed of the motion")

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"motion strength must be in [0, 1], got {self.strength}")


# ------------------------------------------------------------------------------------------- components

def blink_events(duration_s: float, rng: np.random.Generator, rate_per_min: float = 17.0,
                 duration_range: tuple[float, float] = (0.15, 0.35), regularity: float = 3.0
                 ) -> list[tuple[float, float]]:
    """Blinks as (start, length) in seconds over ``duration_s``. Intervals between blink starts are gamma
    distributed with mean ``60 / rate`` and shape ``regularity``, never shorter than the blink plus 0.3 s."""
    if rate_per_min <= 0:
        return []
    mean = 60.0 / rate_per_min
    events, t = [], float(rng.uniform(0.2, mean))
    while t < duration_s:
        length = float(rng.uniform(*duration_range))
        events.append((t, length))
        t += max(length + 0.3, float(rng.gamma(regularity, mean / regularity)))
    return events


def blink_closure(events: list[tuple[float, float]], num_frames: int, fps: float) -> np.ndarray:
    """Lid closure per frame ``(T,)`` in [0, 1] (1 = shut). Each blink closes in the first 35 % of its length,
    stays shut 10 %, opens in the remaining 55 % (smoothstep ramps)."""
    t = np.arange(num_frames) / fps
    out = np.zeros(num_frames)

    def smooth(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3 - 2 * x)

    for start, length in events:
        close, hold = 0.35 * length, 0.10 * length
        u = t - start
        c = np.where(u < close, smooth(u / close),
                     np.where(u < close + hold, 1.0, 1.0 - smooth((u - close - hold) / (length - close - hold))))
        c[(u < 0) | (u > length)] = 0.0
        out = np.maximum(out, c)
    return out


def slow_noise(num_frames: int, fps: float, rng: np.random.Generator, dims: int, max_hz: float = 0.5,
               components: int = 5) -> np.ndarray:
    """Smooth random signals ``(T, dims)`` with unit RMS: sums of sinusoids of random frequency in
    [0.05, max_hz] Hz (amplitudes ~ 1/f, as natural motion has most energy at low frequencies) and phase."""
    t = np.arange(num_frames) / fps
    out = np.zeros((num_frames, dims))
    for d in range(dims):
        f = rng.uniform(0.05, max_hz, components)
        ph = rng.uniform(0, 2 * np.pi, components)
        # Divided by the analytic RMS (sinusoids of amplitude 1/f each carry (1/f)^2 / 2), not the sample one,
        # so a short track is not blown up to full amplitude.
        out[:, d] = (np.sin(2 * np.pi * f[None] * t[:, None] + ph[None]) / f[None]).sum(1) \
            / np.sqrt(0.5 * np.sum(1.0 / f ** 2))
    return out


def speech_emphasis(audio: np.ndarray | None, num_frames: int, fps: float, sample_rate: int = 16000
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(emphasis, activity) per frame, each in [0, 1]: how far the (0.3 s smoothed) energy rises above the
    speech's median level, and whether someone is speaking. Zeros without audio."""
    from puppeteer.audio.features import energy

    if audio is None or len(audio) == 0:
        return np.zeros(num_frames), np.zeros(num_frames)
    e = energy(audio, num_frames, fps, sample_rate).astype(np.float64)
    k = max(1, int(round(0.3 * fps)))
    e = np.convolve(np.pad(e, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    speech = e > e.max() - 30.0  # within 30 dB of the loudest moment
    if speech.sum() < 3:
        return np.zeros(num_frames), np.zeros(num_frames)
    med, spread = np.median(e[speech]), e[speech].std() + 1e-6
    emphasis = np.clip((e - med) / (2 * spread), 0.0, 1.0) * speech
    act = np.convolve(np.pad(speech.astype(float), (k, k), mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid")
    return emphasis, act


# ------------------------------------------------------------------------------------------- applying

def _eye_centres(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p[:, RIGHT_EYE].mean(1), p[:, LEFT_EYE].mean(1)


def close_eyes(points: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Move the lids of ``points`` (T, 68, 2) together by ``closure`` (T,) in [0, 1]: at 1 the upper lid meets
    the lower one 80 % of the way down (the upper lid does most of a blink's travel)."""
    out = points.copy()
    c = closure[:, None, None]
    for eye in (RIGHT_EYE, LEFT_EYE):
        upper, lower = eye[[1, 2]], eye[[5, 4]]  # p2, p3 above p6, p5
        meet = points[:, upper] + 0.8 * (points[:, lower] - points[:, upper])
        out[:, upper] = points[:, upper] + c * (meet - points[:, upper])
        out[:, lower] = points[:, lower] + c * (meet - points[:, lower])
    return out


def add_natural_motion(points: np.ndarray, fps: float, audio: np.ndarray | None = None,
                       sample_rate: int = 16000, options: MotionOptions | None = None, **overrides) -> np.ndarray:
    """``points`` (T, 68, 2) pixels -> the same track with blinks, head motion and brow movement added
    (float32). ``audio`` (mono, aligned to frame 0) drives the brows and livens the head while speaking;
    ``options`` / keyword overrides (``strength=0.5``, ``seed=3``, ``blinks=False`` ...) pick what and how much."""
    opt = options or MotionOptions()
    if overrides:
        opt = MotionOptions(**{**opt.__dict__, **overrides})
    p = np.asarray(points, np.float64)
    if p.ndim != 3 or p.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks (T, 68, 2), got {np.shape(points)}")
    if opt.strength == 0.0 or len(p) == 0:
        return p.astype(np.float32)
    T, s = len(p), float(opt.strength)
    # One independent stream per component: switching one off leaves the others' motion unchanged.
    r_blink, r_head, r_brow = (np.random.default_rng(x) for x in np.random.SeedSequence(opt.seed).spawn(3))
    right, left = _eye_centres(p)
    iod = np.linalg.norm(left - right, axis=-1)[:, None]          # (T, 1)
    across = (left - right) / np.maximum(iod, 1e-6)                # the eye line, towards the subject's left
    up = np.stack([across[:, 1], -across[:, 0]], -1)               # perpendicular, towards the forehead (y down)
    emphasis, activity = speech_emphasis(audio, T, fps, sample_rate)
    out = p.copy()
    if opt.brows:
        wobble = 0.3 * (slow_noise(T, fps, r_brow, 1, 0.3)[:, 0] * 0.5 + 0.5).clip(0, 1)
        raise_ = opt.brow_raise * s * np.clip(emphasis + wobble * (activity > 0.5), 0, 1)
        out[:, BROWS] += (raise_[:, None] * iod)[:, :, None] * up[:, None, :]
    if opt.blinks:
        events = blink_events(T / fps, r_blink, opt.blink_rate * s, opt.blink_duration, opt.blink_regularity)
        out = close_eyes(out, blink_closure(events, T, fps))
    if opt.head:
        n = slow_noise(T, fps, r_head, 4, opt.head_max_hz)
        lively = 0.8 + 0.4 * activity                             # a bit more motion while speaking
        ang = np.radians(opt.head_rotation * s * n[:, 0] * lively)
        scale = 1.0 + opt.head_scale * s * n[:, 1] * lively
        shift = opt.head_translation * s * n[:, 2:4] * lively[:, None] * iod
        centre = out[:, [27, 28, 29, 30, 33]].mean(1)              # nose: the head turns about it, not the chin
        cos, sin = np.cos(ang) * scale, np.sin(ang) * scale
        rel = out - centre[:, None]
        rot = np.stack([cos[:, None] * rel[..., 0] - sin[:, None] * rel[..., 1],
                        sin[:, None] * rel[..., 0] + cos[:, None] * rel[..., 1]], -1)
        out = rot + centre[:, None] + shift[:, None]
    return out.astype(np.float32)
