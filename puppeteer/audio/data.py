"""The audio/landmark training data, in the canonical frame of :mod:`reenact.landmarks.canonical`.

Tracks are brought into the core's canonical frame (``canonicalize``: unit inter-ocular distance, head rotation,
scale and translation gone); the audio models see and predict *displacements* from the clip's neutral shape, which
carry the speech and not the person's face shape. ``RIGID``, ``canonicalize``, ``CanonicalTrack``, ``mirror`` and
``has_speech`` (:mod:`reenact.audio.features`) are importable from here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reenact.audio import features as F
from reenact.audio.features import has_speech
from reenact.landmarks.canonical import RIGID, CanonicalTrack, canonicalize, eye_centres, mirror  # noqa: F401
from reenact.landmarks.parts import MIRROR_PERMUTATION, MOUTH

JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
ANIMATED = np.concatenate([JAW, MOUTH])  # the points the audio-to-landmark model drives (37)
MOUTH_IN_ANIMATED = np.arange(len(JAW), len(ANIMATED))  # positions of the 20 mouth points within ANIMATED

# ------------------------------------------------------------------------------------------- training data

VAL_FRACTION = 0.1  # the project's fixed identity split: PreparedDataset.split(None, VAL_FRACTION)
FEATURES_FORMAT = "reenact-audio-features"


@dataclass
class Clip:
    """One clip with audio: ``disp`` (T, 68, 2) canonical displacements from ``neutral`` (68, 2), ``valid`` (T,)
    frames whose landmarks were detected, ``fps``, ``logmel`` (n, 80) the un-normalised log-mel of the whole audio
    (mel frame 0 at video frame 0), ``speech``: the audio passes :func:`has_speech`, ``held_out``: the identity is
    in the held-out part of the project's fixed split."""

    key: str
    identity: str
    disp: np.ndarray
    valid: np.ndarray
    fps: float
    logmel: torch.Tensor
    neutral: np.ndarray
    speech: bool = True
    held_out: bool = False
    _mel: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.disp)

    @property
    def points(self) -> np.ndarray:
        """The canonical track ``(T, 68, 2)`` (a similarity away from the pixel track: what the sync metric sees)."""
        return (self.neutral + self.disp).astype(np.float32)

    @property
    def mel(self) -> torch.Tensor:
        """Normalised features (what the networks take), ``(n, 80)``; computed once."""
        if self._mel is None:
            self._mel = F.normalize(self.logmel)
        return self._mel


def load_clips(source, indices: list[int] | None = None, progress: bool = False,
               speech_only: bool = True) -> list[Clip]:
    """The clips with audio of a prepared folder (``indices`` restricts to those dataset rows; the audio is
    decoded, which needs PyAV) or of a feature file written by :func:`write_features` (no decoder needed).
    ``speech_only`` drops clips whose audio fails :func:`has_speech` (silent tracks, music beds): they teach
    nothing about lips."""
    if Path(source).is_file():
        if indices is not None:
            raise ValueError("indices select rows of a prepared folder, not of a feature file")
        clips = read_features(source)
    else:
        clips = _load_prepared(source, indices, progress)
    return [c for c in clips if c.speech or not speech_only]


def _load_prepared(root, indices: list[int] | None, progress: bool) -> list[Clip]:
    from tqdm.auto import tqdm

    from reenact.data.dataset import PreparedDataset

    ds = PreparedDataset(root)
    held = set(ds.split(None, VAL_FRACTION)[1])
    rows = range(len(ds)) if indices is None else indices
    rows = [i for i in rows if ds.records[i].has_audio]
    out = []
    for i in tqdm(rows, desc="load clips", disable=not progress):
        m, r = ds.meta(i), ds.records[i]
        valid = np.asarray(m["valid"], bool)
        if valid.sum() < 10:
            continue
        track = canonicalize(m["points"], valid)
        audio = ds.audio(i, F.SAMPLE_RATE)
        fps = float(r.fps)
        out.append(Clip(r.key, r.identity, track.displacement, valid, fps, F.log_mel(audio), track.neutral,
                        has_speech(audio, fps), i in held))
    return out


def write_features(root, path, progress: bool = False) -> Path:
    """Write every clip with audio of the prepared folder ``root`` to one compressed ``.npz`` that training reads
    without an audio decoder (``python -m puppeteer.audio.train --data FILE``): per clip the key, identity, fps,
    speech and held-out flags, the canonical displacements (float16, inter-ocular units: 2e-4 rounding against
    ~0.015 of landmark jitter), the neutral shape, the valid mask and the log-mel (float16: 8e-3 rounding of
    natural-log power, far below the training's noise augmentation), tracks and features concatenated over clips
    with offsets. Returns the path."""
    import json

    from reenact import io
    from reenact.errors import InputError

    clips = load_clips(root, progress=progress, speech_only=False)
    if not clips:
        raise InputError(root, "no clip with audio and landmarks to write")
    meta = {"format": FEATURES_FORMAT, "version": 1, "source": str(root), "sample_rate": F.SAMPLE_RATE,
            "hop_length": F.HOP_LENGTH, "n_mels": F.N_MELS, "val_fraction": VAL_FRACTION}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "key": np.array([c.key for c in clips]),
        "identity": np.array([c.identity for c in clips]),
        "fps": np.array([c.fps for c in clips], np.float64),
        "speech": np.array([c.speech for c in clips], bool),
        "held_out": np.array([c.held_out for c in clips], bool),
        "frame_offsets": np.cumsum([0] + [c.num_frames for c in clips]),
        "disp": np.concatenate([c.disp for c in clips]).astype(np.float16),
        "valid": np.concatenate([c.valid for c in clips]).astype(bool),
        "neutral": np.stack([c.neutral for c in clips]).astype(np.float32),
        "mel_offsets": np.cumsum([0] + [len(c.logmel) for c in clips]),
        "logmel": torch.cat([c.logmel for c in clips]).numpy().astype(np.float16),
    }
    path = Path(path)
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def read_features(path) -> list[Clip]:
    """The clips of a feature file written by :func:`write_features`."""
    import json

    from reenact.errors import InputError

    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(path, f"not a readable feature file ({e})") from e
    with z:
        try:
            meta = json.loads(str(z["meta"]))
        except KeyError:
            meta = {}
        if meta.get("format") != FEATURES_FORMAT:
            raise InputError(path, "not an audio feature file", "write one with --export-features")
        fo, mo = z["frame_offsets"], z["mel_offsets"]
        # each z[name] decompresses the whole array again: read every one once, not once per clip
        disp, valid, logmel = z["disp"], z["valid"], z["logmel"]
        identity, fps, neutral, speech, held = z["identity"], z["fps"], z["neutral"], z["speech"], z["held_out"]
        out = []
        for i, key in enumerate(z["key"].tolist()):
            out.append(Clip(key, str(identity[i]), disp[fo[i]:fo[i + 1]].astype(np.float32),
                            valid[fo[i]:fo[i + 1]].copy(), float(fps[i]),
                            torch.from_numpy(logmel[mo[i]:mo[i + 1]].astype(np.float32)),
                            neutral[i].copy(), bool(speech[i]), bool(held[i])))
    return out


class Batcher:
    """Random training windows, drawn and assembled on ``device``: ``length`` consecutive frames of a clip (chosen
    in proportion to its length), with audio augmentation (additive noise at a random SNR, a sub-frame time
    jitter, frequency masking) and a random horizontal mirror of the landmarks.

    All clips' raw log-mel and displacement tracks go to the device once, concatenated (with per-clip offsets,
    so no padding), and a batch is a few tensor operations: random numbers from a seeded ``torch.Generator`` on
    the device (a seed gives the same batches on a device type), windows gathered by indexing. The windows are
    those of :func:`features.frame_windows` on the normalised features (mel frames past the audio's ends:
    silence).

    ``sample(n)`` -> dict of tensors on ``device``: ``mel`` (n, L + 2*pad, W, 80) windows for frames
    ``t - pad .. t + L + pad``, ``disp`` (n, L, 68, 2), ``valid`` (n, L) float, where ``pad`` extra audio frames on
    each side feed offsets."""

    STATS_FRAMES = 128  # mel frames per clip (evenly spread) that give the statistics of a noisy version
    NOISE_P = 0.7  # share of noisy samples
    SNR_DB = (10.0, 40.0)
    JITTER = 0.25  # video frames either way
    MASK_P, MASK_START, MASK_WIDTH = 0.5, (0, 70), (3, 10)
    MIRROR_P = 0.5

    def __init__(self, clips: list[Clip], length: int, window: int = 20, pad: int = 0, seed: int = 0,
                 augment: bool = True, device: str | torch.device = "cpu"):
        self.clips = [c for c in clips if c.num_frames >= length]
        if not self.clips:
            raise ValueError(f"no clip has {length} frames")
        self.length, self.window, self.pad, self.augment = length, window, pad, augment
        self.device = dev = torch.device(device)
        cs = self.clips

        def t(x, dtype=torch.float32):
            return torch.as_tensor(np.asarray(x), dtype=dtype, device=dev)

        nf = np.array([c.num_frames for c in cs])
        nm = np.array([len(c.logmel) for c in cs])
        self.frames, self.frame_start = t(nf, torch.long), t(np.cumsum(nf) - nf, torch.long)
        self.mel_len, self.mel_start = t(nm, torch.long), t(np.cumsum(nm) - nm, torch.long)
        self.fps = t([c.fps for c in cs], torch.float64)
        self.logmel = torch.cat([c.logmel.float() for c in cs]).to(dev)  # (M, 80) raw, all clips
        self.disp = t(np.concatenate([c.disp for c in cs]))  # (sum T, 68, 2)
        self.valid = t(np.concatenate([c.valid for c in cs]))  # (sum T,)
        stats = [F.norm_stats(c.logmel.float()) for c in cs]
        self.mean = torch.stack([s[0] for s in stats]).to(dev)  # (C, 80) the clean utterance's statistics
        self.std = torch.stack([s[1] for s in stats]).to(dev)  # (C,)
        self.floor = t([float(c.logmel.min()) for c in cs])  # raw silence past the ends
        self.norm_floor = t([float(((c.logmel - m) / s).min()) for c, (m, s) in zip(cs, stats)])
        pick = [np.round(np.linspace(0, len(c.logmel) - 1, self.STATS_FRAMES)).astype(int) for c in cs]
        self.stats_mel = torch.stack([c.logmel[torch.from_numpy(p)].float() for c, p in zip(cs, pick)]).to(dev)
        self.log_power = t([float(torch.log(c.logmel[::8].exp().mean())) for c in cs])  # noise level reference
        self.p = t((nf - length + 1) / (nf - length + 1).sum())
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(int(seed))
        self._steps = torch.arange(length + 2 * pad, device=dev)
        self._taps = torch.arange(window, device=dev)
        # Mel frames from the first window's start to the last one's end, whatever the jitter and frame rate.
        reach = int(np.ceil((length + 2 * pad) / float(self.fps.min()) * F.MEL_RATE)) + window + 2
        self._span = torch.arange(reach, device=dev)
        self._sample_index = torch.arange(0, device=dev)
        self._bins = torch.arange(self.logmel.shape[1], device=dev)
        self._mirror = torch.as_tensor(MIRROR_PERMUTATION, device=dev)
        self._flip_x = torch.tensor([-1.0, 1.0], device=dev)

    def _rand(self, n: int, lo: float = 0.0, hi: float = 1.0, dtype=torch.float32) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.gen, device=self.device, dtype=dtype)

    def _randint(self, n: int, lo_hi: tuple[int, int]) -> torch.Tensor:
        return torch.randint(lo_hi[0], lo_hi[1], (n,), generator=self.gen, device=self.device)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        L, P, aug = self.length, self.pad, self.augment
        if len(self._sample_index) < n:
            self._sample_index = torch.arange(n, device=self.device)
        ci = torch.multinomial(self.p, n, replacement=True, generator=self.gen)  # (n,) clip of each sample
        t0 = (self._rand(n, dtype=torch.float64) * (self.frames[ci] - L + 1)).long()  # first target frame
        jitter = self._rand(n, -self.JITTER, self.JITTER, torch.float64) if aug else torch.zeros(
            n, dtype=torch.float64, device=self.device)
        # Mel windows as frame_windows cuts them, for video frames t0 - P .. t0 + L + P - 1 (+ jitter); float64 so
        # the rounding to mel frames matches numpy's exactly. The windows overlap (a video frame is 4 mel frames
        # at 25 fps, a window 20), so every elementwise step works on each sample's span of mel frames and the
        # windows are cut from it at the end: a few times fewer numbers to touch.
        frame = (t0 - P)[:, None] + self._steps[None] + jitter[:, None]
        centre = torch.round(frame / self.fps[ci, None] * F.MEL_RATE).long()  # (n, S), non-decreasing
        first = centre[:, :1] - self.window // 2
        rows = first + self._span  # (n, span) mel frames of the sample's windows
        n_mel = self.mel_len[ci, None]
        outside = ((rows < 0) | (rows >= n_mel))[..., None]
        raw = self.logmel[self.mel_start[ci, None] + torch.minimum(rows.clamp_min(0), n_mel - 1)]
        raw = torch.where(outside, self.floor[ci].view(-1, 1, 1), raw)  # (n, span, 80)
        mean, std = self.mean[ci], self.std[ci]
        noisy = torch.zeros(n, dtype=torch.bool, device=self.device)
        if aug:
            # Additive white noise at a random SNR, in the mel power domain (the filters have unit area, so white
            # noise adds the same power to every bin): the same as noising the waveform, without a new STFT. The
            # noisy utterance's statistics come from STATS_FRAMES of its frames. Clean samples add exp(-inf) = 0.
            noisy = self._rand(n) < self.NOISE_P
            log_c = self.log_power[ci] - self._rand(n, *self.SNR_DB) * (np.log(10.0) / 10.0)
            log_c = torch.where(noisy, log_c, torch.full_like(log_c, float("-inf"))).view(-1, 1, 1)
            sm = torch.logaddexp(self.stats_mel[ci], log_c)  # (n, K, 80)
            sm_mean = sm.mean(1)
            sm_std = (sm - sm_mean[:, None]).flatten(1).std(1).clamp_min(1e-3)
            mean = torch.where(noisy[:, None], sm_mean, mean)
            std = torch.where(noisy, sm_std, std)
            raw = torch.logaddexp(raw, log_c)
        mel = (raw - mean[:, None]) / std.view(-1, 1, 1)
        # Clean windows past the audio's ends hold the normalised utterance's minimum, as at inference.
        mel = torch.where(outside & ~noisy.view(-1, 1, 1), self.norm_floor[ci].view(-1, 1, 1), mel)
        if aug:
            f0, fw = self._randint(n, self.MASK_START), self._randint(n, self.MASK_WIDTH)
            band = ((self._rand(n) < self.MASK_P)[:, None] & (self._bins >= f0[:, None])
                    & (self._bins < (f0 + fw)[:, None]))  # (n, 80)
            mel = mel.masked_fill(band[:, None, :], 0.0)
        pos = (centre - centre[:, :1])[..., None] + self._taps  # (n, S, W) positions in the span
        mel = mel[self._sample_index[:n].view(-1, 1, 1), pos]  # (n, S, W, 80)
        rows = (self.frame_start[ci] + t0)[:, None] + self._steps[None, :L]  # (n, L)
        disp, valid = self.disp[rows], self.valid[rows]
        if aug:
            flip = self._rand(n) < self.MIRROR_P
            disp = torch.where(flip.view(-1, 1, 1, 1), disp[:, :, self._mirror] * self._flip_x, disp)
        return {"mel": mel, "disp": disp, "valid": valid}
