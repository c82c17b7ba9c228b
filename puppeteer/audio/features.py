"""Moved to the core: :mod:`reenact.audio.features` (the lip-sync network and the metrics need it too). This name
stays for the speech stage's modules that still import it from here."""
from reenact.audio.features import (  # noqa: F401
    SAMPLE_RATE, N_MELS, WIN_LENGTH, HOP_LENGTH, N_FFT, MEL_RATE, LOG_FLOOR, hz_to_mel, mel_to_hz,
    mel_filterbank, resample, log_mel, norm_stats, normalize, features, frame_centres, frame_windows,
    num_video_frames, energy)
