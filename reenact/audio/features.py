"""Audio features: 16 kHz mono log-mel spectrograms (80 bins, 25 ms window, 10 ms hop) and per-video-frame windows.

Everything is torch (``torch.stft``) with a mel filterbank built here (HTK mel scale, triangular filters normalised
to unit area), so no audio library is needed. Mel frame ``i`` is centred on ``i * HOP / SAMPLE_RATE`` seconds
(``center=True``); :func:`frame_windows` cuts, for video frame ``t`` at ``fps``, the ``window`` mel frames centred on
``t / fps`` seconds, so any frame rate lines up with the audio.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16000
N_MELS = 80
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms: 100 mel frames per second
N_FFT = 512
MEL_RATE = SAMPLE_RATE / HOP_LENGTH
LOG_FLOOR = 1e-5  # power floor: -50 dB, below any recording's noise floor, keeps log finite on digital silence


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``, each of unit area (so bins of different width carry
    comparable energy), centres equally spaced on the HTK mel scale between ``fmin`` and ``fmax`` (Nyquist)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (hi - lo))  # unit area ("slaney" normalisation)
    return torch.from_numpy(fb.astype(np.float32))


def resample(audio: np.ndarray, sample_rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a whole mono signal by FFT (exact for the clip lengths used here; no extra
    dependency). Returns float32 ``(round(N * target / sample_rate),)``."""
    audio = np.asarray(audio, np.float32).reshape(-1)
    if sample_rate == target or len(audio) == 0:
        return audio.copy()
    n_out = int(round(len(audio) * target / sample_rate))
    spec = np.fft.rfft(audio.astype(np.float64))
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, np.complex128)
    out_spec[:keep] = spec[:keep]
    return (np.fft.irfft(out_spec, n_out) * (n_out / len(audio))).astype(np.float32)


def log_mel(audio: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS,
            filterbank: torch.Tensor | None = None) -> torch.Tensor:
    """Natural-log mel power spectrogram ``(n_frames, n_mels)`` float32 of mono audio ``(N,)`` in [-1, 1].

    ``n_frames = N // HOP_LENGTH + 1`` (at 16 kHz); frame ``i`` is centred on sample ``i * HOP_LENGTH``. Other
    sample rates are resampled to 16 kHz first."""
    if isinstance(audio, torch.Tensor):
        x = audio.detach().float().reshape(-1).cpu()
    else:
        x = torch.from_numpy(np.asarray(audio, np.float32).reshape(-1).copy())
    if sample_rate != SAMPLE_RATE:
        x = torch.from_numpy(resample(x.numpy(), sample_rate))
    if x.numel() < 2:
        x = torch.nn.functional.pad(x, (0, 2 - x.numel()))
    # Reflect padding needs more samples than half the FFT; short inputs get zeros instead.
    mode = "reflect" if x.numel() > N_FFT // 2 else "constant"
    spec = torch.stft(x, N_FFT, HOP_LENGTH, WIN_LENGTH, window=torch.hann_window(WIN_LENGTH), center=True,
                      pad_mode=mode, return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2  # (F, n_frames)
    fb = mel_filterbank(n_mels) if filterbank is None else filterbank
    mel = fb @ power
    return torch.log(mel + LOG_FLOOR).T.contiguous()


def norm_stats(mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-bin mean ``(n_mels,)``, global deviation ``()``) of a log-mel ``(n, n_mels)``, see :func:`normalize`."""
    mean = mel.mean(0)
    return mean, (mel - mean).std().clamp_min(1e-3)


def normalize(mel: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-utterance normalisation of a log-mel ``(..., n_mels)``: the mean of each bin over time is removed
    (microphone colour and loudness differ between speakers and recordings; mouth shapes do not) and the result
    divided by one global deviation (keeping the relative energy of the bins, which tells vowels apart).
    ``stats`` (from :func:`norm_stats`) default to those of ``mel`` itself."""
    mean, std = norm_stats(mel.reshape(-1, mel.shape[-1])) if stats is None else stats
    return (mel - mean) / std


def features(audio: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Normalised log-mel ``(n_frames, 80)`` of a whole utterance: what the audio models take."""
    return normalize(log_mel(audio, sample_rate))


def frame_centres(num_frames: int, fps: float) -> np.ndarray:
    """Mel-frame index (float) of the centre of each video frame, ``(num_frames,)``."""
    return np.arange(num_frames, dtype=np.float64) / float(fps) * MEL_RATE


def frame_windows(mel: torch.Tensor, num_frames: int, fps: float, window: int = 20,
                  offset: float = 0.0) -> torch.Tensor:
    """For video frames ``t = 0..num_frames-1`` at ``fps``, the ``window`` mel frames centred on ``t / fps``
    (+ ``offset`` video frames): ``(num_frames, window, n_mels)``. ``window=20`` is 0.2 s of context.

    Mel frames outside the utterance are filled with the utterance minimum (silence), so the first and last video
    frames get a window like any other."""
    if mel.ndim != 2:
        raise ValueError(f"mel must be (n_frames, n_mels), got {tuple(mel.shape)}")
    centre = np.rint((np.arange(num_frames) + offset) / float(fps) * MEL_RATE).astype(np.int64)
    idx = (centre - window // 2)[:, None] + np.arange(window)[None]
    n = mel.shape[0]
    out = mel[torch.from_numpy(np.clip(idx, 0, max(n - 1, 0)))]
    outside = torch.from_numpy((idx < 0) | (idx >= n))
    if bool(outside.any()):
        out[outside] = mel.min() if n else 0.0
    return out


def num_video_frames(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames spanned by ``num_samples`` of audio at ``fps`` (the frame count of a video made for it)."""
    return max(1, int(math.floor(num_samples / sample_rate * fps + 0.5)))


def energy(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log RMS energy (dB) of the audio around each video frame (a window of one frame period), ``(num_frames,)``."""
    audio = np.asarray(audio, np.float32).reshape(-1)
    half = max(1, int(round(sample_rate / fps / 2)))
    centres = np.rint(np.arange(num_frames) / fps * sample_rate).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    lo = np.clip(centres - half, 0, len(audio))
    hi = np.clip(centres + half, 0, len(audio))
    ms = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return (10.0 * np.log10(ms + 1e-10)).astype(np.float32)


def has_speech(audio: np.ndarray, fps: float = 25.0, min_peak_db: float = -50.0, min_range_db: float = 10.0) -> bool:
    """Whether a clip's audio can be speech the face makes: not (digitally) silent, and with the pauses of speech
    (the 90th and 10th percentiles of the per-frame energy at least ``min_range_db`` apart). A continuous sound
    (music, a voice-over bed, noise) fails the second test."""
    if len(audio) == 0:
        return False
    e = energy(audio, max(1, int(len(audio) / SAMPLE_RATE * fps)), fps)
    return bool(e.max() >= min_peak_db and np.percentile(e, 90) - np.percentile(e, 10) >= min_range_db)
