"""Identity-independent landmark tracks and the audio/landmark training data.

A track ``(T, 68, 2)`` in pixels is brought into a *canonical frame* per frame by a similarity transform fitted on
rigid points (eye corners and nose, which speech does not move): the eye centres end at (-0.5, 0) and (0.5, 0), so
one unit is the inter-ocular distance (as in ``reenact.metrics.landmarks.inter_ocular``) and head rotation, scale
and translation are gone. The clip's *neutral* shape is its mean canonical shape; the audio models see and predict
*displacements* from it, which carry the speech and not the person's face shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reenact.landmarks.parts import LEFT_EYE, MIRROR_PERMUTATION, MOUTH, RIGHT_EYE

from puppeteer.audio import features as F

# Eye corners, nose bridge and nostrils: they move with the head, not with speech or blinks.
RIGID = np.array([36, 39, 42, 45, 27, 28, 29, 30, 31, 32, 33, 34, 35])
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
ANIMATED = np.concatenate([JAW, MOUTH])  # the points the audio-to-landmark model drives (37)
MOUTH_IN_ANIMATED = np.arange(len(JAW), len(ANIMATED))  # positions of the 20 mouth points within ANIMATED


# ------------------------------------------------------------------------------------------- geometry

def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping ``src`` onto ``dst``, batched: ``(..., N, 2)`` and ``(N, 2)`` or
    ``(..., N, 2)`` -> ``(..., 2, 3)`` matrices ``[sR | t]``."""
    src = np.asarray(src, np.float64)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    ms, md = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    s, d = src - ms, dst - md
    # In complex form a 2-D similarity is multiplication by one complex number: the closed-form fit is a ratio.
    zs, zd = s[..., 0] + 1j * s[..., 1], d[..., 0] + 1j * d[..., 1]
    a = (np.conj(zs) * zd).sum(-1) / np.maximum((np.abs(zs) ** 2).sum(-1), 1e-12)
    m = np.zeros(src.shape[:-2] + (2, 3))
    m[..., 0, 0], m[..., 0, 1] = a.real, -a.imag
    m[..., 1, 0], m[..., 1, 1] = a.imag, a.real
    m[..., :, 2] = md[..., 0, :] - np.einsum("...ij,...j->...i", m[..., :, :2], ms[..., 0, :])
    return m


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(..., 2, 3)`` applied to ``(..., N, 2)``."""
    return np.einsum("...ij,...nj->...ni", m[..., :, :2], points) + m[..., None, :, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[..., :, :2])
    out = np.zeros_like(m)
    out[..., :, :2] = a
    out[..., :, 2] = -np.einsum("...ij,...j->...i", a, m[..., :, 2])
    return out


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points, np.float64)
    return p[..., RIGHT_EYE, :].mean(-2), p[..., LEFT_EYE, :].mean(-2)


@dataclass
class CanonicalTrack:
    """A track in the canonical frame. ``points`` (T, 68, 2) canonical (unit inter-ocular distance),
    ``neutral`` (68, 2) the mean canonical shape, ``to_canonical`` (T, 2, 3) pixel -> canonical per frame."""

    points: np.ndarray
    neutral: np.ndarray
    to_canonical: np.ndarray

    @property
    def displacement(self) -> np.ndarray:
        """``points - neutral``, (T, 68, 2) in inter-ocular units."""
        return self.points - self.neutral

    def to_pixels(self, canonical: np.ndarray) -> np.ndarray:
        """Canonical points (T, 68, 2) back into each frame's pixels."""
        return apply_affine(invert_affine(self.to_canonical), canonical).astype(np.float32)


def canonicalize(points: np.ndarray, valid: np.ndarray | None = None) -> CanonicalTrack:
    """Normalise a track ``(T, 68, 2)`` (or one face ``(68, 2)``) to the canonical frame.

    Two passes: eye centres alone fix a coarse frame; the median rigid-point shape in it becomes the clip's rigid
    template; then each frame's rigid points are fitted to that template by least squares (13 points average out
    the landmark jitter that two eye centres would pass on). ``valid`` (T,) marks frames to trust for the template
    and the neutral shape (all by default)."""
    p = np.asarray(points, np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks (T, 68, 2), got {np.shape(points)}")
    v = np.ones(len(p), bool) if valid is None else np.asarray(valid, bool)
    if not v.any():
        v = np.ones(len(p), bool)
    right, left = eye_centres(p)
    pair = np.stack([right, left], -2)  # (T, 2, 2)
    coarse_m = similarity_fit(pair, np.array([[-0.5, 0.0], [0.5, 0.0]]))
    coarse = apply_affine(coarse_m, p)
    template = np.median(coarse[v][:, RIGID], axis=0)
    m = similarity_fit(p[:, RIGID], template)
    canon = apply_affine(m, p)
    neutral = canon[v].mean(0)
    # Re-centre so the neutral's eye centres sit exactly at (+-0.5, 0): the unit stays the inter-ocular distance.
    fix = similarity_fit(np.stack(eye_centres(neutral))[None], np.array([[-0.5, 0.0], [0.5, 0.0]]))[0]
    canon = apply_affine(fix, canon)
    neutral = apply_affine(fix, neutral[None])[0]
    full = np.concatenate([fix[:, :2] @ m[..., :, :2], (fix[:, :2] @ m[..., :, 2:] + fix[:, 2:])], -1)
    return CanonicalTrack(canon.astype(np.float32), neutral.astype(np.float32), full)


def mirror(disp: np.ndarray) -> np.ndarray:
    """Horizontal mirror of canonical displacements/points ``(..., 68, 2)`` (x -> -x, parts swapped)."""
    out = disp[..., MIRROR_PERMUTATION, :].copy()
    out[..., 0] *= -1
    return out


# ------------------------------------------------------------------------------------------- training data

@dataclass
class Clip:
    """One clip with audio: ``disp`` (T, 68, 2) canonical displacements, ``valid`` (T,), ``audio`` 16 kHz mono,
    ``fps``, ``key``, ``logmel`` (n, 80) the un-normalised log-mel of the whole audio."""

    key: str
    disp: np.ndarray
    valid: np.ndarray
    audio: np.ndarray
    fps: float
    logmel: torch.Tensor
    _mel: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.disp)

    @property
    def mel(self) -> torch.Tensor:
        """Normalised features (what the networks take), ``(n, 80)``; computed once."""
        if self._mel is None:
            self._mel = F.normalize(self.logmel)
        return self._mel


def has_speech(audio: np.ndarray, fps: float = 25.0, min_peak_db: float = -50.0, min_range_db: float = 10.0) -> bool:
    """Whether a clip's audio can be speech the face makes: not (digitally) silent, and with the pauses of speech
    (the 90th and 10th percentiles of the per-frame energy at least ``min_range_db`` apart). A continuous sound
    (music, a voice-over bed, noise) fails the second test."""
    if len(audio) == 0:
        return False
    e = F.energy(audio, max(1, int(len(audio) / F.SAMPLE_RATE * fps)), fps)
    return bool(e.max() >= min_peak_db and np.percentile(e, 90) - np.percentile(e, 10) >= min_range_db)


def load_clips(root, indices: list[int] | None = None, progress: bool = False,
               speech_only: bool = True) -> list[Clip]:
    """The clips with audio of a prepared folder (``indices`` restricts to those dataset rows). ``speech_only``
    drops clips whose audio fails :func:`has_speech` (silent tracks, music beds): they teach nothing about
    lips."""
    from tqdm.auto import tqdm

    from reenact.data.dataset import PreparedDataset

    ds = PreparedDataset(root)
    rows = range(len(ds)) if indices is None else indices
    rows = [i for i in rows if ds.records[i].has_audio]
    out = []
    for i in tqdm(rows, desc="load clips", disable=not progress):
        m = ds.meta(i)
        valid = np.asarray(m["valid"], bool)
        if valid.sum() < 10:
            continue
        track = canonicalize(m["points"], valid)
        audio = ds.audio(i, F.SAMPLE_RATE)
        if speech_only and not has_speech(audio, float(ds.records[i].fps)):
            continue
        out.append(Clip(ds.records[i].key, track.displacement, valid, audio, float(ds.records[i].fps),
                        F.log_mel(audio)))
    return out


class Batcher:
    """Random training windows: ``length`` consecutive frames of a clip (chosen in proportion to its length),
    with audio augmentation (additive noise at a random SNR, a sub-frame time jitter, frequency masking) and a
    random horizontal mirror of the landmarks.

    ``sample(n)`` -> dict of tensors: ``mel`` (n, L + 2*pad, W, 80) windows for frames ``t - pad .. t + L + pad``,
    ``disp`` (n, L, 68, 2), ``valid`` (n, L) float, where ``pad`` extra audio frames on each side feed offsets."""

    def __init__(self, clips: list[Clip], length: int, window: int = 20, pad: int = 0, seed: int = 0,
                 augment: bool = True):
        self.clips = [c for c in clips if c.num_frames >= length]
        if not self.clips:
            raise ValueError(f"no clip has {length} frames")
        self.length, self.window, self.pad, self.augment = length, window, pad, augment
        self.rng = np.random.default_rng(seed)
        w = np.array([c.num_frames - length + 1 for c in self.clips], np.float64)
        self.p = w / w.sum()

    def _windows(self, clip: Clip, n: int, offset: float) -> torch.Tensor:
        if not self.augment or self.rng.random() < 0.3:
            return F.frame_windows(clip.mel, n, clip.fps, self.window, offset=offset)
        # Additive white noise at a random SNR, in the mel power domain (the filters have unit area, so white
        # noise adds the same power to every bin): the same as noising the waveform, without a new STFT. The
        # utterance statistics of the noisy version come from every 8th frame: cheap and close enough.
        c = float(clip.logmel[::8].exp().mean()) * 10 ** (-self.rng.uniform(10, 40) / 10)
        stats = F.norm_stats(torch.log(clip.logmel[::8].exp() + c))
        raw = F.frame_windows(clip.logmel, n, clip.fps, self.window, offset=offset)
        return F.normalize(torch.log(raw.exp() + c), stats)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        mels, disps, valids = [], [], []
        L, P = self.length, self.pad
        for _ in range(n):
            c = self.clips[self.rng.choice(len(self.clips), p=self.p)]
            t0 = int(self.rng.integers(0, c.num_frames - L + 1))
            jitter = self.rng.uniform(-0.25, 0.25) if self.augment else 0.0
            win = self._windows(c, L + 2 * P, t0 - P + jitter)
            if self.augment and self.rng.random() < 0.5:
                f0, fw = int(self.rng.integers(0, 70)), int(self.rng.integers(3, 10))
                win[..., f0:f0 + fw] = 0.0
            d = c.disp[t0:t0 + L]
            if self.augment and self.rng.random() < 0.5:
                d = mirror(d)
            mels.append(win)
            disps.append(torch.from_numpy(np.ascontiguousarray(d, np.float32)))
            valids.append(torch.from_numpy(c.valid[t0:t0 + L].astype(np.float32)))
        return {"mel": torch.stack(mels), "disp": torch.stack(disps), "valid": torch.stack(valids)}
