"""Landmark tracks from speech, and the ``reenact speak`` / ``reenact lipsync`` pipelines.

- :class:`SpeechModel`: the trained audio-to-landmark network (shipped weights by default); ``predict`` gives jaw
  and mouth displacements (canonical units) per video frame relative to the *rest* mouth (what the model says
  during the utterance's pauses), so silence leaves a face exactly as it is.
- :func:`speech_track`: a portrait's landmarks + speech -> a ``(T, 68, 2)`` talking track with natural motion.
- :func:`lipsync_track`: a video's own track with the mouth and jaw replaced from new speech.
- :func:`speak` and :func:`lipsync`: personalise a model, render, paste back, write the mp4 with the audio.
  With a photo-renderer avatar (the default model) lipsync uses each video frame as the photo
  (:func:`render_into_frame`: Wav2Lip's setting); with a crop avatar it pastes rendered crops into the frames.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reenact.audio import features as F
from reenact.errors import InputError
from reenact.options import OutputOptions
from reenact.landmarks.canonical import canonicalize

from puppeteer.audio.data import ANIMATED, JAW
from puppeteer.audio.motion import MotionOptions, add_natural_motion
from puppeteer.render_loop import render_video

MOUTH_POINTS = np.arange(48, 68)
FADE_SECONDS = 0.2  # lipsync: the re-voiced face fades out (and in) this long beside frames where it is lost
A2L_WEIGHTS = Path(__file__).with_name("weights") / "a2l"


class SpeechModel:
    """A trained :class:`~puppeteer.audio.model.AudioToLandmarks`. :meth:`load` a checkpoint directory (default:
    the weights shipped in ``puppeteer/audio/weights/a2l``)."""

    def __init__(self, net, window: int = 20, device: str | torch.device = "cpu", gain: float = 1.0):
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.window = window
        self.gain = float(gain)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "SpeechModel":
        """``gain`` comes from the checkpoint (``render_gain``: the factor that gives the predictions the spread
        of real mouth motion; see the model card)."""
        from puppeteer.audio.config import load_audio_checkpoint

        net, cfg, meta = load_audio_checkpoint(path or A2L_WEIGHTS, "a2l")
        return cls(net, cfg.window, device, meta.get("render_gain", 1.0))

    @torch.no_grad()
    def predict(self, audio: np.ndarray, fps: float = 25.0, sample_rate: int = F.SAMPLE_RATE,
                num_frames: int | None = None, calibrated: bool = True) -> np.ndarray:
        """Displacements ``(T, 37, 2)`` of the jaw and mouth (``ANIMATED`` points), in inter-ocular units, from
        the rest mouth. ``T = num_frames`` (default: the audio's duration x fps, rounded). ``calibrated``:
        scaled by the model's rendering gain (False: the least-error prediction)."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        if sample_rate != F.SAMPLE_RATE:
            audio, sample_rate = F.resample(audio, sample_rate), F.SAMPLE_RATE
        T = num_frames or F.num_video_frames(len(audio), fps)
        mel = F.features(audio)
        win = F.frame_windows(mel, T, fps, self.window).to(self.device)
        pred = self.net(win[None])[0].cpu().numpy()
        # Rest = the prediction during the utterance's pauses (>= 35 dB below its loudest frame); with no pause,
        # the prediction for pure silence (windows past the audio's end, filled with its quietest level).
        e = F.energy(audio, T, fps)
        quiet = e < e.max() - 35.0
        if quiet.sum() >= 3:
            rest = np.median(pred[quiet], axis=0)
        else:
            floor = F.frame_windows(mel, 1, fps, self.window, offset=-10 * fps).to(self.device)
            rest = self.net(floor[None].expand(1, 5, -1, -1))[0, 2].cpu().numpy()
        return ((pred - rest) * (self.gain if calibrated else 1.0)).astype(np.float32)


def _to_canonical(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical points (T, 68, 2), per-frame pixel->canonical matrices (T, 2, 3)) of a track."""
    track = canonicalize(points)
    return track.points, track.to_canonical


def _from_canonical(canon: np.ndarray, to_canonical: np.ndarray) -> np.ndarray:
    from reenact.geometry import invert, transform

    return transform(canon, invert(to_canonical)).astype(np.float32)


def _close_crossed_lips(points: np.ndarray) -> np.ndarray:
    """Inner-lip pairs crossed by an over-closing prediction are set to their midpoint (a closed mouth)."""
    from puppeteer.retarget import uncross_lips

    return uncross_lips(points).astype(np.float32)


def speech_track(points: np.ndarray, audio: np.ndarray, fps: float = 25.0, sample_rate: int = F.SAMPLE_RATE,
                 model: SpeechModel | None = None, motion: MotionOptions | None = None,
                 mouth_gain: float = 1.0) -> np.ndarray:
    """A talking track ``(T, 68, 2)`` (pixels of ``points``) for one face ``points`` ``(68, 2)`` (its mouth at
    rest, as in most portraits) and mono ``audio``: jaw and mouth from the audio, then blinks, head motion and
    brows (``motion``; ``MotionOptions(strength=0)`` for none). ``mouth_gain`` scales the mouth motion."""
    pts = np.asarray(points, np.float32)
    if pts.shape != (68, 2):
        raise InputError("<points>", f"expected one face's (68, 2) landmarks, got {pts.shape}")
    model = model or SpeechModel.load()
    disp = model.predict(audio, fps, sample_rate) * mouth_gain
    T = len(disp)
    canon, m = _to_canonical(pts[None])
    track = np.repeat(canon, T, 0)
    track[:, ANIMATED] += disp
    out = _close_crossed_lips(_from_canonical(track, np.repeat(m, T, 0)))
    a16 = audio if sample_rate == F.SAMPLE_RATE else F.resample(audio, sample_rate)
    return add_natural_motion(out, fps, a16, F.SAMPLE_RATE, motion or MotionOptions())


def speech_tracker(model: str | os.PathLike | SpeechModel | None = None):
    """The speech protocol's track renderer (:data:`reenact.metrics.speech.SpeechTracker`): ``track(portrait,
    audio, fps, sample_rate, seed)`` is :func:`speech_track` with the audio-to-landmark ``model`` (a checkpoint,
    a loaded model, or None: the shipped one), loaded once, and natural motion seeded by ``seed``, exactly as
    ``reenact speak`` draws it."""
    m = model if isinstance(model, SpeechModel) else SpeechModel.load(model)

    def track(portrait: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int, seed: int) -> np.ndarray:
        return speech_track(portrait, audio, fps, sample_rate, model=m, motion=MotionOptions(seed=seed))

    return track


def lipsync_track(points: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = F.SAMPLE_RATE,
                  model: SpeechModel | None = None, valid: np.ndarray | None = None,
                  mouth_gain: float = 1.0) -> np.ndarray:
    """A video's track ``(T, 68, 2)`` with the mouth and jaw driven by new ``audio`` (same frame count T; the
    caller loops or trims the video to the audio). Pose, eyes and brows stay the video's own.

    The mouth becomes the video's most closed mouth (its rest shape) plus the predicted displacement; the jaw
    keeps the video's slow motion (a 0.5 s moving average: head turns) plus the predicted, zero-mean jaw motion,
    so the old speech's fast jaw movement is gone."""
    pts = np.asarray(points, np.float32)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise InputError("<points>", f"expected a (T, 68, 2) track, got {pts.shape}")
    T = len(pts)
    model = model or SpeechModel.load()
    disp = model.predict(audio, fps, sample_rate, num_frames=T) * mouth_gain
    track = canonicalize(pts, valid)
    canon = track.points.copy()
    ok = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    gap = canon[:, 66, 1] - canon[:, 62, 1]
    rest = int(np.flatnonzero(ok)[np.argmin(gap[ok])]) if ok.any() else 0
    n_jaw = len(JAW)
    canon[:, MOUTH_POINTS] = canon[rest, MOUTH_POINTS][None] + disp[:, n_jaw:]
    k = max(1, int(round(0.5 * fps)))
    pad = np.pad(canon[:, JAW], ((k // 2, k - 1 - k // 2), (0, 0), (0, 0)), mode="edge")
    slow = np.stack([pad[i:i + T] for i in range(k)]).mean(0)
    canon[:, JAW] = slow + disp[:, :n_jaw] - disp[:, :n_jaw].mean(0)
    return _close_crossed_lips(track.to_pixels(canon))


# ------------------------------------------------------------------------------------------- pipelines

@dataclass
class SpeakResult:
    """What :func:`speak` / :func:`lipsync` made: ``output`` mp4, ``frames``, ``fps``, ``audio_seconds``,
    ``points`` (T, 68, 2) the rendered landmarks (crop pixels for speak, frame pixels for lipsync), ``timings``,
    ``kept`` (lipsync: indices of output frames written as the video had them, for want of a face)."""

    output: Path
    frames: int
    fps: float
    audio_seconds: float
    points: np.ndarray = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def load_speech(audio: str | os.PathLike | None = None, text: str | None = None, voice: str = "en",
                rate: int = 150) -> np.ndarray:
    """Mono 16 kHz float32 speech from an audio/video file, or from ``text`` by eSpeak NG (exactly one)."""
    if (audio is None) == (text is None):
        raise InputError("<speech>", "give exactly one of an audio file or a text")
    if text is not None:
        from puppeteer.audio.tts import synthesize

        samples, _ = synthesize(text, voice=voice, rate=rate, sample_rate=F.SAMPLE_RATE)
    else:
        from reenact import io

        samples = io.read_audio(audio, F.SAMPLE_RATE)
    if len(samples) < F.SAMPLE_RATE // 10:
        raise InputError(audio or "<text>", f"speech too short ({len(samples) / F.SAMPLE_RATE:.2f} s)")
    return samples


def check_speech_options(*, rate: int = 150, steps: int | None = None, crf: int = OutputOptions.crf,
                         mouth_gain: float = 1.0) -> None:
    """Refuse bad options of :func:`speak` / :func:`lipsync` before any work (InputError naming the option)."""
    from reenact import validate

    validate.between(rate, *validate.SPEECH_RATE, "rate", " words per minute")
    validate.optional_at_least(steps, 0, "steps")
    validate.crf(crf)
    validate.at_least(mouth_gain, 0, "mouth_gain")


def speak(portrait: str | os.PathLike | np.ndarray, output: str | os.PathLike, *,
          audio: str | os.PathLike | None = None, text: str | None = None, voice: str = "en", rate: int = 150,
          checkpoint: str | os.PathLike | None = None, avatar=None, steps: int | None = None,
          device: str = "auto", fps: float = 25.0, motion: MotionOptions | None = None, mouth_gain: float = 1.0,
          speech_model: str | os.PathLike | None = None, crop: bool = False, landmarks=None, seed: int = 0,
          crf: int = OutputOptions.crf, progress: bool = True) -> SpeakResult:
    """A talking-head video of the person in ``portrait`` saying ``audio`` (a file) or ``text`` (eSpeak NG).

    Personalises ``checkpoint`` (default: the bundled model) to the portrait (``steps`` fine-tuning steps; or pass
    a ready ``avatar``), predicts jaw and mouth from the speech, adds natural motion, renders, pastes back into
    the portrait (``crop=True``: the face crops only) and writes ``output`` at ``fps`` with the speech muxed:
    ``round(duration x fps)`` frames."""
    from puppeteer.oneshot import personalise_portrait
    from reenact import io, validate

    check_speech_options(rate=rate, steps=steps, crf=crf, mouth_gain=mouth_gain)
    validate.fps(fps)
    output = io.check_writable(output)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    samples = load_speech(audio, text, voice, rate)
    timings["speech"] = time.perf_counter() - t
    t = time.perf_counter()
    if avatar is None:
        avatar = personalise_portrait(portrait, checkpoint=checkpoint, device=device, landmarks=landmarks,
                                      multiple="largest", steps=steps, seed=seed, progress=progress)[1]
    timings["personalize"] = time.perf_counter() - t
    t = time.perf_counter()
    model = SpeechModel.load(speech_model)
    motion = motion or MotionOptions(seed=seed)
    points = speech_track(avatar.source_points[0], samples, fps, F.SAMPLE_RATE, model, motion, mouth_gain)
    points = np.clip(points, -avatar.resolution, 2 * avatar.resolution)
    timings["landmarks"] = time.perf_counter() - t
    comp = None
    if not crop:
        from puppeteer.drive import Compositor

        comp = Compositor(avatar, portrait, 0)
    render_video(avatar, points, output, fps, compositor=comp, audio=samples, audio_rate=F.SAMPLE_RATE, crf=crf,
                 progress=progress, timings=timings)
    return SpeakResult(output, len(points), float(fps), len(samples) / F.SAMPLE_RATE, points, timings)


def pingpong(n_out: int, n_in: int) -> np.ndarray:
    """Indices ``(n_out,)`` into ``n_in`` frames, playing forward then backward as often as needed (a loop
    without the jump back to the start)."""
    if n_in == 1:
        return np.zeros(n_out, np.int64)
    period = 2 * n_in - 2
    k = np.arange(n_out) % period
    return np.where(k < n_in, k, period - k).astype(np.int64)


class _FrameSource:
    """Frames ``0..n-1`` of a video by index, for an output that plays them in :func:`pingpong` order: decoded
    once, front to back, one at a time. Only when the output plays the video backward too (``loops``) are the
    frames kept, in a memory-mapped file that is deleted as soon as it is created (no RAM, nothing left on disk)."""

    def __init__(self, video: Path, n: int, loops: bool):
        from reenact import io

        self.video, self.n, self.loops = video, n, loops
        self._frames = io.read_frames(video, max_frames=n)
        self._decoded = 0
        self._last: np.ndarray | None = None
        self._spool: np.ndarray | None = None

    def __getitem__(self, k: int) -> np.ndarray:
        while self._decoded <= k:
            try:
                frame = next(self._frames)
            except StopIteration:
                raise InputError(self.video, f"ended after {self._decoded} frames, {self.n} were tracked") from None
            if self.loops:
                if self._spool is None:
                    import tempfile

                    self._spool = np.memmap(tempfile.TemporaryFile(), np.uint8, "w+", shape=(self.n, *frame.shape))
                self._spool[self._decoded] = frame
            self._last, self._decoded = frame, self._decoded + 1
        if k == self._decoded - 1:
            return self._last
        return np.asarray(self._spool[k])


def face_weights(found: np.ndarray, fade: int) -> np.ndarray:
    """How much of the re-voiced face each output frame shows, ``(T,)`` in [0, 1]: 0 where no face was found
    (``found`` False), rising linearly to 1 over ``fade`` frames away from such frames, so the face fades out
    and in instead of popping."""
    from scipy.ndimage import distance_transform_edt

    found = np.asarray(found, bool)
    if found.all():
        return np.ones(len(found), np.float32)
    nearest = distance_transform_edt(found)  # frames to the nearest one without a face
    return np.clip(nearest / (fade + 1), 0.0, 1.0).astype(np.float32)


def _frames_at(video: Path, indices: np.ndarray) -> list[np.ndarray]:
    """The frames at ``indices`` (sorted, few), streaming the video up to the last of them."""
    from reenact import io

    wanted = {int(i) for i in indices}
    got = {i: f for i, f in enumerate(io.read_frames(video, max_frames=max(wanted) + 1)) if i in wanted}
    return [got[int(i)] for i in indices]


def render_into_frame(avatar, frame: np.ndarray, frame_points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A photo-renderer avatar's region generator (its ``G`` and ``psi``) applied to another picture of the same
    person: ``frame`` (RGB uint8 ``(H, W, 3)``) is warped at its own resolution from its own landmarks
    ``frame_points`` ``(68, 2)`` to each of ``targets`` ``(N, 68, 2)`` (frame pixels), and G paints the mouth
    (:class:`reenact.renderer.PhotoRenderer` built on the frame). Returns ``(N, H, W, 3)`` uint8: outside the
    face the frame's own pixels. Lipsync's per-frame render: a new photo per frame, so the OpenCV backend
    (the torch backend's per-photo setup costs more than one frame's render)."""
    from reenact.renderer import PhotoRenderer

    base = avatar.base
    renderer = PhotoRenderer(frame, frame_points, avatar.G, avatar.psi, base.spec, base.size, backend="numpy")
    return renderer.render(np.asarray(targets, np.float32).reshape(-1, 68, 2))


class _FrameRenderer:
    """The compositor :func:`lipsync` gives :func:`~puppeteer.render_loop.render_video` for a photo avatar:
    output frame ``i`` is video frame ``idx[i]`` re-rendered from its own tracked landmarks to the lip-synced
    ``points[i]`` (:func:`render_into_frame`), faded with ``weight[i]`` (0: the frame as it is, not rendered).
    ``render_video`` asks for the frames in order, one batch after the other: a cursor counts them."""

    def __init__(self, frames: "_FrameSource", frame_points: np.ndarray, idx: np.ndarray, weight: np.ndarray):
        self.frames, self.frame_points, self.idx, self.weight = frames, frame_points, idx, weight
        self.next = 0

    def render(self, avatar, points: np.ndarray, batch_size: int | None = None,
               timings: dict[str, float] | None = None) -> list[np.ndarray]:
        timings = {} if timings is None else timings
        out = []
        for p in points:
            i, self.next = self.next, self.next + 1
            frame = self.frames[int(self.idx[i])]
            t = time.perf_counter()
            w = float(self.weight[i])
            if w > 0:
                new = render_into_frame(avatar, frame, self.frame_points[int(self.idx[i])], p[None])[0]
                if w < 1:
                    new = np.rint(w * new + (1 - w) * frame.astype(np.float32)).astype(np.uint8)
                frame = new
            timings["render"] = timings.get("render", 0.0) + time.perf_counter() - t
            out.append(frame)
        return out


def lipsync(video: str | os.PathLike, output: str | os.PathLike, *, audio: str | os.PathLike | None = None,
            text: str | None = None, voice: str = "en", rate: int = 150,
            checkpoint: str | os.PathLike | None = None, steps: int | None = None, shots: int = 1,
            device: str = "auto", mouth_gain: float = 1.0, speech_model: str | os.PathLike | None = None,
            detector=None, max_seconds: float = 120.0, seed: int = 0, crf: int = OutputOptions.crf,
            progress: bool = True) -> SpeakResult:
    """Re-voice ``video``: its face says the new ``audio`` (or ``text``). The mouth and jaw come from the speech,
    everything else from the video's own landmarks. A model (``checkpoint``; default: the bundled default, the
    photo renderer) is personalised on ``shots`` frames of the video. With the photo renderer each output frame
    is its video frame warped from its own landmarks to the lip-synced ones, the mouth painted by the mouth
    generator (:func:`render_into_frame`); with a crop model (e.g. ``checkpoint="crop"``) it is rendered in that
    frame's own crop and pasted back into it. The output lasts as long as the speech (the video plays forward
    and backward as needed): ``round(duration x fps)`` frames, speech muxed.

    Only the frames the speech needs are decoded (at most ``max_seconds`` of the video), one at a time. Frames
    where the face is not found (it left the picture, turned away) are written as they are, not re-voiced (the
    face fades out over ``FADE_SECONDS`` before them and in after): a warning names them and ``result.kept``
    lists them.
    """
    from reenact import io, validate
    from reenact.api import Reenactor
    from reenact.crop import CropParams, box_from_points, crop_matrix, face_mask, paste_back, smooth_boxes
    from reenact.crop import transform_points

    from puppeteer.drive import _missing_ranges, track_driver

    check_speech_options(rate=rate, steps=steps, crf=crf, mouth_gain=mouth_gain)
    validate.at_least(shots, 1, "shots")
    validate.positive(max_seconds, "max_seconds")
    video, output = Path(video), io.check_writable(output)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    samples = load_speech(audio, text, voice, rate)
    info = io.probe(video)
    fps = float(info.fps)
    n_out = F.num_video_frames(len(samples), fps)
    track = track_driver(video, detector, max_frames=max(1, min(int(max_seconds * fps), n_out)),
                         progress=progress).smooth()
    n_in = len(track)
    if n_in == 0:
        raise InputError(video, "no frames")
    timings["track"] = time.perf_counter() - t
    idx = pingpong(n_out, n_in)
    valid = track.valid
    lost = np.flatnonzero(~valid[idx])
    if len(lost):
        warnings.warn(f"{video}: no face in {int((~valid).sum())} of {n_in} frames "
                      f"({_missing_ranges(np.flatnonzero(~valid))}); {len(lost)} output frame(s) keep the video's "
                      "own picture there, not re-voiced", stacklevel=2)
    t = time.perf_counter()
    r = Reenactor.load(checkpoint, device)
    ok = np.flatnonzero(valid) if valid.any() else np.arange(n_in)
    pick = ok[np.linspace(0, len(ok) - 1, max(1, shots)).round().astype(int)]
    avatar = r.personalize(_frames_at(video, pick), steps=steps, landmarks=[track.points[i] for i in pick],
                           progress=progress, seed=seed)
    timings["personalize"] = time.perf_counter() - t
    t = time.perf_counter()
    points = lipsync_track(track.points[idx], samples, fps, F.SAMPLE_RATE, SpeechModel.load(speech_model),
                           valid[idx], mouth_gain)
    frames = _FrameSource(video, n_in, loops=n_out > n_in)
    # where the face is lost a pasted face would float where there is none: the frame stays as it is
    weight = face_weights(valid[idx], fade=max(1, round(FADE_SECONDS * fps)))
    if avatar.renders_photo:
        timings["landmarks"] = time.perf_counter() - t
        render_video(avatar, points, output, fps, compositor=_FrameRenderer(frames, track.points, idx, weight),
                     audio=samples, audio_rate=F.SAMPLE_RATE, crf=crf, batch_size=8, progress=progress,
                     timings=timings)
        return SpeakResult(output, n_out, fps, len(samples) / F.SAMPLE_RATE, points, timings, kept=lost)
    S = avatar.resolution
    boxes = smooth_boxes(box_from_points(track.points, CropParams(size=S)), fps)[idx]
    mats = np.stack([crop_matrix(b, S) for b in boxes])
    crop_pts = np.stack([transform_points(p, m) for p, m in zip(points, mats)]).astype(np.float32)
    timings["landmarks"] = time.perf_counter() - t

    def paste(i, c, p):
        frame = frames[int(idx[i])]
        if weight[i] == 0:
            return frame
        out = paste_back(frame, c, mats[i], face_mask(p, S))
        if weight[i] < 1:
            out = np.rint(weight[i] * out + (1 - weight[i]) * frame.astype(np.float32)).astype(np.uint8)
        return out

    render_video(avatar, crop_pts, output, fps, paste=paste, audio=samples, audio_rate=F.SAMPLE_RATE, crf=crf,
                 progress=progress, timings=timings)
    return SpeakResult(output, n_out, fps, len(samples) / F.SAMPLE_RATE, points, timings, kept=lost)
