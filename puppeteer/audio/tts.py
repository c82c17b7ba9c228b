"""Offline text-to-speech with eSpeak NG: ``synthesize(text) -> (float32 samples, sample_rate)``.

Two ways to reach eSpeak NG, tried in this order:

1. the pip package ``espeakng-loader`` (``pip install 'reenact[tts]'``), which ships ``libespeak-ng`` and its
   voice data; the C API is called through ctypes (synchronous mode, samples collected by a callback);
2. an ``espeak-ng`` executable on the PATH (Debian/Ubuntu: ``apt-get install espeak-ng``), asked for a wav on
   stdout.

Nothing is downloaded: without either, :class:`TTSUnavailableError` says how to install one. The voice is robotic
(formant synthesis) but the timing of its syllables is natural enough to drive a mouth.
"""
from __future__ import annotations

import ctypes
import importlib.util
import io
import shutil
import subprocess
import threading
import wave

import numpy as np

from reenact.errors import InputError, ReenactError
from reenact.validate import SPEECH_RATE, between

# espeak-ng's speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_INITIALIZE_DONT_EXIT = 0x8000
_PARAM_RATE, _PARAM_PITCH = 1, 3
_EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class TTSUnavailableError(ReenactError, RuntimeError):
    """No eSpeak NG on this machine (a ReenactError: the command line reports it without a traceback)."""


class _Library:
    """libespeak-ng through ctypes. The library keeps process-wide state (one voice, one callback), so there is
    one instance per process and a lock around each synthesis."""

    _instance: "_Library | None" = None
    _create_lock = threading.Lock()

    def __init__(self):
        import espeakng_loader  # noqa: PLC0415  (optional dependency)

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        data = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise TTSUnavailableError(f"{data}: espeak_Initialize failed (voice data missing or unreadable)")
        self.lib, self.sample_rate = lib, int(rate)
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds a raw pointer to it
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> "_Library":
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, n, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise InputError(voice, "unknown eSpeak NG voice", "try 'en', 'en-us', 'de', 'fr', 'es' ...")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self._chunks = []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with error {err}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def _binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def available() -> str | None:
    """Which backend :func:`synthesize` would use: ``"espeakng-loader"``, ``"espeak-ng"`` (executable) or None."""
    if importlib.util.find_spec("espeakng_loader") is not None:
        return "espeakng-loader"
    return "espeak-ng" if _binary() else None


def _synth_binary(exe: str, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    # "--" ends the options: a text starting with "-" is said, not taken for an option
    proc = subprocess.run([exe, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "--stdout", "--", text],
                          capture_output=True, timeout=300)
    if proc.returncode != 0 or not proc.stdout:
        raise InputError(voice, f"{exe} failed: {proc.stderr.decode(errors='replace').strip()}",
                         "check the voice name (espeak-ng --voices)")
    with wave.open(io.BytesIO(proc.stdout)) as w:
        sr, n = w.getframerate(), w.getnframes()
        raw = w.readframes(n if 0 < n < 2 ** 31 - 1 else 2 ** 31 - 1)  # piped wavs may carry a bogus length
    return np.frombuffer(raw, np.int16), sr


def synthesize(text: str, voice: str = "en", rate: int = 150, pitch: int = 50,
               sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Speak ``text``: returns (mono float32 samples in [-1, 1], sample rate). ``rate`` in words per minute
    (80-450; 150 is an unhurried speaker), ``pitch`` 0-100. ``sample_rate`` resamples the result (eSpeak NG
    itself makes 22050 Hz). Raises :class:`TTSUnavailableError` when eSpeak NG is not installed."""
    if not text or not text.strip():
        raise InputError("<text>", "nothing to say (empty text)")
    between(rate, *SPEECH_RATE, "rate", " words per minute")
    backend = available()
    if backend is None:
        raise TTSUnavailableError("text-to-speech needs eSpeak NG: `pip install 'reenact[tts]'` (espeakng-loader) "
                                  "or `apt-get install espeak-ng`")
    if backend == "espeakng-loader":
        lib = _Library.get()
        pcm, sr = lib.synth(text, voice, rate, pitch), lib.sample_rate
    else:
        pcm, sr = _synth_binary(_binary(), text, voice, rate, pitch)
    audio = pcm.astype(np.float32) / 32768.0
    if sample_rate is not None and sample_rate != sr:
        from reenact.audio.features import resample

        audio, sr = resample(audio, sr, sample_rate), sample_rate
    return audio, sr
