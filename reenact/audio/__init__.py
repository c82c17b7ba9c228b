"""Audio in the core: what the metrics and the lip-sync network (:mod:`reenact.models.lipsync`) need, no stage.

- ``features``: 16 kHz log-mel (80 bins, 25 ms / 10 ms) in torch, per-video-frame windows at any fps, per-frame
  energy and :func:`~reenact.audio.features.has_speech` (is a clip's audio speech-like).

The speech stage (``puppeteer.audio``) builds its models and pipelines on these.
"""
