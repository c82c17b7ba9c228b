"""Speech-driven faces: audio features, an audio-to-landmark model, a lip-sync expert on landmarks, natural
motion (blinks, head motion, brows) and offline text-to-speech.

Modules (each imports torch or its optional dependency only when used):

- ``features``: 16 kHz log-mel (80 bins, 25 ms / 10 ms) in torch, and per-video-frame windows at any fps;
- ``data``: canonical (identity-independent) landmark tracks and the training data;
- ``model``: :class:`~puppeteer.audio.model.AudioToLandmarks` (mel windows -> jaw/mouth displacements);
- ``sync_expert``: the SyncNet-like lip-sync expert, its losses and the AV offset / confidence metric;
- ``motion``: :func:`~puppeteer.audio.motion.add_natural_motion`;
- ``tts``: :func:`~puppeteer.audio.tts.synthesize` (eSpeak NG);
- ``speak``: landmark tracks from speech for a portrait (:func:`~puppeteer.audio.speak.speech_track`) and the
  ``reenact speak`` / ``reenact lipsync`` pipelines;
- ``train``: ``python -m puppeteer.audio.train``; ``config``: :class:`~puppeteer.audio.config.AudioConfig` and
  checkpoints.

Trained weights ship in ``puppeteer/audio/weights/{a2l,sync}`` (see the model card there).
"""
from pathlib import Path

WEIGHTS = Path(__file__).with_name("weights")

__all__ = ["WEIGHTS"]
