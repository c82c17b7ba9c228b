"""Speech-driven faces: audio features, an audio-to-landmark model, a lip-sync expert on landmarks, natural
motion (blinks, head motion, brows) and offline text-to-speech.

Modules (each imports torch or its optional dependency only when used):

- features (16 kHz log-mel, per-video-frame windows, ``has_speech``) are the core's, :mod:`reenact.audio.features`;
- ``data``: the training data, in the core's canonical frame (:mod:`reenact.landmarks.canonical`);
- ``model``: :class:`~puppeteer.audio.model.AudioToLandmarks` (mel windows -> jaw/mouth displacements);
- ``sync_expert``: training the SyncNet-like lip-sync expert (its losses); the network, its loader and the AV
  offset / confidence metric are the core's, :mod:`reenact.models.lipsync`;
- ``motion``: :func:`~puppeteer.audio.motion.add_natural_motion`;
- ``tts``: :func:`~puppeteer.audio.tts.synthesize` (eSpeak NG);
- ``speak``: landmark tracks from speech for a portrait (:func:`~puppeteer.audio.speak.speech_track`) and the
  ``reenact speak`` / ``reenact lipsync`` pipelines;
- ``train``: ``python -m puppeteer.audio.train``; ``config``: :class:`~puppeteer.audio.config.AudioConfig` and
  checkpoints.

Trained weights ship in ``puppeteer/audio/weights/{a2l,sync}`` (see the model card there; the core reads the
expert's from there, :data:`reenact.models.lipsync.DEFAULT_WEIGHTS`).
"""
from pathlib import Path

WEIGHTS = Path(__file__).with_name("weights")

__all__ = ["WEIGHTS"]
