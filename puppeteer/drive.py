"""Driving an avatar with another person's video: track -> smooth -> retarget -> render -> paste back -> mp4.

Two ways in:

- :func:`puppeteer_video` (offline, a driver file): the whole driver is tracked first (keyframe detection with
  fits in between, faces confirmed on every frame, gaps interpolated), smoothed with a One-Euro filter,
  retargeted from a neutral reference frame, rendered in batches, pasted back into the avatar's photo and
  written with the driver's audio: same frame count and frame rate as the driver, audio in sync.
  ``puppeteer.animate`` (:mod:`puppeteer.oneshot`) personalises a model from a portrait first.
- :func:`drive` (streaming, any iterator of RGB frames, e.g. a camera): causal per-frame tracking, One-Euro
  smoothing, the first frame with a face as the reference; yields each output frame as soon as it is made.
  :func:`record_live` writes its frames to a file; :func:`drive_to_file` picks one of the two for a driver.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Literal

import numpy as np

from puppeteer.render_loop import render_video
from puppeteer.retarget import Retargeter, RetargetOptions, choose_reference
from reenact.errors import InputError, NoFaceError
from reenact.options import OutputOptions

if TYPE_CHECKING:  # pragma: no cover
    from reenact.avatar import Avatar
    from reenact.landmarks.base import LandmarkDetector

ImageLike = np.ndarray | str | os.PathLike


# ------------------------------------------------------------------------------------------- helpers

def _detector(detector) -> "LandmarkDetector":
    if detector is None or isinstance(detector, str):
        from reenact.landmarks import create_detector

        return create_detector(detector or "dlib")
    return detector


def _missing_ranges(idx: np.ndarray) -> str:
    """``[5, 6, 7, 12]`` -> ``"5-7, 12"``."""
    if len(idx) == 0:
        return ""
    out, start, prev = [], int(idx[0]), int(idx[0])
    for i in map(int, idx[1:]):
        if i != prev + 1:
            out.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = i
        prev = i
    out.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ", ".join(out)


class _Timed:
    """Iterator wrapper that adds up the seconds spent producing items (decoding, for a video reader)."""

    def __init__(self, it: Iterable):
        self._it = iter(it)
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.seconds += time.perf_counter() - t


class Compositor:
    """Pastes rendered crops back into the avatar's source image ``shot``.

    into: that image (RGB uint8 array or path) at the size it had when the avatar was made. The blend mask is
    the union of the rendered face's mask and the source face's, so a head that moves or turns never leaves
    the photo's own face showing beside it. Only the region the crop covers is blended; the rest of the frame
    keeps the image's pixels exactly.
    """

    def __init__(self, avatar: "Avatar", into: ImageLike, shot: int = 0):
        from reenact import io
        from reenact.crop import face_mask

        if not isinstance(into, (str, os.PathLike)):
            into = io.as_rgb(into, "<into>")  # a gray or RGBA photo, as personalize read it
        image, src = avatar.source_image(into, shot)
        self.image = np.ascontiguousarray(image)
        self.matrix = np.asarray(src.matrix, np.float32)
        self.resolution = avatar.resolution
        self.source_mask = face_mask(src.crop_points, self.resolution)
        # the crop's footprint in the image: blending is done only there
        from reenact.crop import invert, transform_points

        s = self.resolution
        corners = transform_points(np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float32), invert(self.matrix))
        h, w = image.shape[:2]
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        self.roi = (int(max(0, y0)), int(min(h, y1)), int(max(0, x0)), int(min(w, x1)))
        m = self.matrix.copy()
        m[:, 2] += m[:, :2] @ np.array([self.roi[2], self.roi[0]], np.float32)
        self.roi_matrix = m

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def render(self, avatar: "Avatar", points: np.ndarray, batch_size: int | None = None,
               timings: dict[str, float] | None = None) -> list[np.ndarray]:
        """Full frames for ``points`` ``(N, 68, 2)`` in the shot's crop pixels. An avatar that renders at the
        photo's own resolution (``renders_photo``: the photo renderer) is asked for the frames directly, so the
        face is resampled once; a crop avatar's crops are pasted back (:meth:`__call__`). ``timings`` gets the
        seconds of ``render`` and ``paste_back``."""
        from reenact.crop import invert, transform_points

        timings = {} if timings is None else timings
        t = time.perf_counter()
        if avatar.renders_photo:
            frames = list(avatar.render_full_batch(transform_points(points, invert(self.matrix))))
            timings["render"] = timings.get("render", 0.0) + time.perf_counter() - t
            return frames
        crops = avatar.render_batch(points, batch_size=batch_size)
        t2 = time.perf_counter()
        frames = [self(c, p) for c, p in zip(crops, points)]
        timings["render"] = timings.get("render", 0.0) + t2 - t
        timings["paste_back"] = timings.get("paste_back", 0.0) + time.perf_counter() - t2
        return frames

    def __call__(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """One rendered crop ``(S, S, 3)`` and its landmarks ``(68, 2)`` crop pixels -> the full frame."""
        from reenact.crop import face_mask, paste_back

        y0, y1, x0, x1 = self.roi
        out = self.image.copy()
        if y1 > y0 and x1 > x0:
            mask = np.maximum(face_mask(points, self.resolution), self.source_mask)
            out[y0:y1, x0:x1] = paste_back(self.image[y0:y1, x0:x1], crop, self.roi_matrix, mask)
        return out


def check_drive_options(*, keyframe_interval: int = 10, crf: int = OutputOptions.crf,
                        max_frames: int | None = None, batch_size: int | None = None) -> None:
    """Refuse bad driving options before any work (InputError naming the option)."""
    from reenact import validate

    validate.at_least(keyframe_interval, 1, "keyframe_interval")
    validate.crf(crf)
    validate.optional_at_least(max_frames, 1, "max_frames")
    validate.optional_at_least(batch_size, 1, "batch_size")


def source_image(avatar: "Avatar", shot: int = 0) -> Path:
    """The avatar's source image file ``shot`` as recorded in the avatar; InputError when it is not there."""
    if not 0 <= shot < avatar.shots:
        raise IndexError(f"shot {shot} out of range: the avatar has {avatar.shots} source image(s)")
    path = Path(avatar.sources[shot].name)
    if not path.is_file():
        raise InputError(path, "the avatar's source image is not there (pasting back needs it)",
                         "pass the image it was made from (--source IMAGE), or render the face crop only (--crop)")
    return path


# ------------------------------------------------------------------------------------------- offline

@dataclass
class DriveResult:
    """What :func:`puppeteer_video` made.

    output: the mp4. frames, fps: as the driver's. size: ``(H, W)`` of the output frames. reference: index of
    the driver's reference frame. missing: indices of driver frames without a face (their landmarks were
    interpolated from the frames around them, held at the ends). audio_seconds: length of the audio written
    (None: the driver has none). timings: seconds per stage (``decode``, ``landmarks``, ``smooth``,
    ``retarget``, ``render``, ``paste_back``, ``encode``, ``audio``). points: ``(T, 68, 2)`` avatar landmarks
    (crop pixels) that were rendered; driver_points: ``(T, 68, 2)`` the driver's track (smoothed if asked).
    """

    output: Path
    frames: int
    fps: float
    size: tuple[int, int]
    reference: int
    missing: np.ndarray
    audio_seconds: float | None
    timings: dict[str, float]
    points: np.ndarray = field(repr=False)
    driver_points: np.ndarray = field(repr=False)

    @property
    def held(self) -> int:
        """How many frames had no face (interpolated or held)."""
        return int(len(self.missing))

    @property
    def seconds(self) -> float:
        return float(sum(self.timings.values()))


def track_driver(driver: str | os.PathLike, detector=None, *, keyframe_interval: int = 10,
                 check_faces: bool = True, max_frames: int | None = None, progress: bool = True,
                 timings: dict[str, float] | None = None):
    """Landmarks of the face in a driver video: a filled (not smoothed) ``FaceTrack`` of every frame.

    Frames without a face are marked (``track.missing``) and interpolated. Raises MediaError for an
    unreadable file, NoFaceError naming the file when no frame has a face.
    """
    from tqdm.auto import tqdm

    from reenact import io
    from reenact.landmarks.track import track_frames
    from reenact.landmarks.live import CheckedDetector

    driver = Path(driver)
    info = io.probe(driver)
    det = _detector(detector)
    if check_faces and not isinstance(det, CheckedDetector):
        det = CheckedDetector(det)
    total = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    frames = _Timed(io.read_frames(driver, max_frames=max_frames))
    t = time.perf_counter()
    with tqdm(total=total or None, desc="landmarks", unit="frame", disable=not progress, leave=False) as bar:
        try:
            track = track_frames(frames, det, fps=info.fps, keyframe_interval=keyframe_interval,
                                 multiple="largest", smooth=False, fill=True, source=str(driver), progress=bar)
        except NoFaceError as exc:
            raise NoFaceError(driver, f"no face found in the driver video ({exc.problem})",
                              "the driver must show one face, roughly frontal") from None
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + frames.seconds
        timings["landmarks"] = timings.get("landmarks", 0.0) + time.perf_counter() - t - frames.seconds
    return track


def _given_track(track, driver: Path, info, max_frames: int | None):
    """A precomputed driver track checked against the driver (frame size, length), cut to ``max_frames``."""
    from reenact.landmarks.track import FaceTrack

    n = len(track) if max_frames is None else min(len(track), max_frames)
    if tuple(track.size) != (info.height, info.width):
        raise InputError(driver, f"the given track is of {track.size[1]}x{track.size[0]} frames, the driver is "
                                 f"{info.width}x{info.height}", "track this driver (track_driver)")
    wanted = info.num_frames if max_frames is None else min(max_frames, info.num_frames)
    if n == 0 or n < wanted - 1:  # one frame of slack: demuxers may count the last frame differently
        raise InputError(driver, f"the given track has {len(track)} frames, the driver {info.num_frames}",
                         "track this driver (track_driver)")
    if n == len(track):
        return track
    return FaceTrack(track.points[:n], track.boxes[:n], track.scores[:n], track.valid[:n], track.fps,
                     track.size, track.filled[:n])


def puppeteer_video(avatar: "Avatar", driver: str | os.PathLike, output: str | os.PathLike, *,
                    into: ImageLike | None = None, shot: int = 0, options: RetargetOptions = RetargetOptions(),
                    smooth: bool = True, detector=None, keyframe_interval: int = 10, check_faces: bool = True,
                    audio: bool = True, crf: int = OutputOptions.crf, batch_size: int | None = None,
                    max_frames: int | None = None, progress: bool = True, track=None) -> DriveResult:
    """Drive ``avatar`` with the face in the ``driver`` video and write ``output`` (mp4).

    into: ``None`` writes the rendered face crops (S x S); an image (array or path: the avatar's source image
        ``shot``, same size) pastes each face back into it (full-frame output).
    options: retargeting (relative / absolute, which parts follow, the reference frame).
    smooth: One-Euro filtering of the driver's track (no jitter); ``False`` keeps the raw detections.
    detector: a ``LandmarkDetector`` or backend name (default dlib). keyframe_interval: detection every n
        frames, shape fits in between. check_faces: confirm the face in every fitted frame (catches a face that
        vanishes between keyframes; ~6 ms a frame).
    audio: copy the driver's audio (if any), trimmed to the video. crf: H.264 quality. batch_size: frames
        rendered at once. max_frames: only the first n driver frames. progress: tqdm bars.
    track: the driver's landmarks precomputed by :func:`track_driver` (a ``FaceTrack``, filled, not smoothed;
        e.g. ``FaceTrack.load``): nothing is decoded or detected then (``detector``, ``keyframe_interval``
        and ``check_faces`` are unused) and the ``decode``/``landmarks`` timings are 0.

    Frames without a face are interpolated from their neighbours (held at the ends), counted in
    ``result.missing`` and reported with a warning. Raises NoFaceError naming the driver when it has no face
    at all, MediaError for unreadable media; nothing is written then.
    """
    from reenact import io

    check_drive_options(keyframe_interval=keyframe_interval, crf=crf, max_frames=max_frames, batch_size=batch_size)
    driver, output = Path(driver), io.check_writable(output)
    timings: dict[str, float] = {}
    info = io.probe(driver)
    comp = Compositor(avatar, into, shot) if into is not None else None
    if track is None:
        track = track_driver(driver, detector, keyframe_interval=keyframe_interval, check_faces=check_faces,
                             max_frames=max_frames, progress=progress, timings=timings)
    else:
        track = _given_track(track, driver, info, max_frames)
        timings.update(decode=0.0, landmarks=0.0)
    n = len(track)
    missing = track.missing
    if len(missing):
        warnings.warn(f"{driver}: no face in {len(missing)} of {n} frames ({_missing_ranges(missing)}); their "
                      "landmarks were interpolated from the frames around them", stacklevel=2)
    t = time.perf_counter()
    if smooth:
        track = track.smooth()
    timings["smooth"] = time.perf_counter() - t

    t = time.perf_counter()
    if options.reference is not None:
        if options.reference >= n:
            raise InputError(driver, f"reference frame {options.reference} is past its {n} frames")
        ref = options.reference
    else:
        ref = choose_reference(track.points, track.valid, track.fps, options.reference_window)
    points = Retargeter(avatar.source_points[shot], track.points[ref], options)(track.points)
    timings["retarget"] = time.perf_counter() - t

    samples, rate = None, None
    t = time.perf_counter()
    if audio and info.has_audio:
        rate = int(info.audio_rate or 16000)
        samples = io.read_audio(driver, sample_rate=rate)[:int(round(n * rate / info.fps))]
    timings["audio"] = time.perf_counter() - t

    render_video(avatar, points, output, info.fps, compositor=comp, audio=samples, audio_rate=rate or 16000, crf=crf, batch_size=batch_size, progress=progress,
                 timings=timings)
    size = comp.size if comp is not None else (avatar.resolution, avatar.resolution)
    return DriveResult(output=output, frames=n, fps=float(info.fps), size=size, reference=int(ref),
                       missing=missing, audio_seconds=None if samples is None else len(samples) / rate,
                       timings=timings, points=points, driver_points=track.points)


# ----------------------------------------------------------------------------------------- streaming

class LiveDriver:
    """Iterator of output frames driven by an iterator of input frames; made by :func:`drive`.

    Each ``next()`` pulls exactly one input frame, tracks it, retargets, renders (and pastes back) and returns
    the output frame: RGB uint8 ``(S, S, 3)``, or the size of the source image with ``into``.

    Attributes while running: ``count`` (frames made), ``missing`` (indices of input frames without a face:
    the last good pose is held, or the avatar's neutral face before the first one), ``reference`` (index of
    the reference frame; None until a face was seen, or when ``reference_points`` were given), ``points`` (the last ``(68, 2)`` avatar landmarks).
    """

    def __init__(self, avatar: "Avatar", frames: Iterable[np.ndarray], *, into: ImageLike | None = None,
                 shot: int = 0, options: RetargetOptions = RetargetOptions(), smooth: bool = True,
                 fps: float = 25.0, detector=None, keyframe_interval: int = 10,
                 reference_points: np.ndarray | None = None, multiple: Literal["error", "largest"] = "largest",
                 source: str = "<stream>"):
        from reenact.landmarks.live import LiveTracker

        if not 0 <= shot < avatar.shots:
            raise IndexError(f"shot {shot} out of range: the avatar has {avatar.shots} source image(s)")
        self.avatar, self.shot, self.options, self.source = avatar, shot, options, source
        self._frames = iter(frames)
        self._comp = Compositor(avatar, into, shot) if into is not None else None
        self._tracker = LiveTracker(_detector(detector), fps=fps, keyframe_interval=keyframe_interval,
                                    smooth=smooth, multiple=multiple, source=source)
        self._neutral = np.asarray(avatar.source_points[shot], np.float32)
        self._retarget = (Retargeter(self._neutral, reference_points, options)
                          if reference_points is not None else None)
        self._first_reference = options.reference or 0
        self.count = 0
        self.missing: list[int] = []
        self.reference: int | None = None
        self.points = self._neutral

    def __iter__(self) -> "LiveDriver":
        return self

    def __next__(self) -> np.ndarray:
        return self.render(self.pose(next(self._frames)))

    def pose(self, frame: np.ndarray) -> np.ndarray:
        """Track one input frame and retarget: the avatar's ``(68, 2)`` landmarks (crop pixels) for it. The
        first half of ``next()``; :func:`puppeteer.live.run_live` runs it and :meth:`render` on two threads."""
        a = np.asarray(frame)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"{self.source} (frame {self.count})",
                             f"expected an RGB uint8 (H, W, 3) frame, got {a.dtype} {a.shape}")
        t = self.count
        self.count += 1
        pts = self._tracker(a)
        if pts is None:
            self.missing.append(t)
        else:
            if self._retarget is None and t >= self._first_reference:
                self._retarget = Retargeter(self._neutral, pts, self.options)
                self.reference = t
            if self._retarget is not None:
                self.points = self._retarget(pts)
        return self.points

    def render(self, points: np.ndarray) -> np.ndarray:
        """The output frame for the avatar's ``(68, 2)`` landmarks (pasted back with ``into``)."""
        if self._comp is not None:
            return self._comp.render(self.avatar, points[None])[0]
        return self.avatar.render_batch(points[None])[0]


def drive(avatar: "Avatar", frames: Iterable[np.ndarray], **options) -> LiveDriver:
    """Drive ``avatar`` with a stream of RGB uint8 frames (a camera, a video being decoded, any iterator),
    lazily: the returned :class:`LiveDriver` yields one output frame per input frame, as it is made.

    Options (keywords): ``into`` (paste back into the avatar's source image; default: face crops), ``shot``,
    ``options`` (:class:`RetargetOptions`; the reference is the first frame with a face, at or after
    ``options.reference``), ``reference_points`` (a ``(68, 2)`` neutral driver face given up front),
    ``smooth`` (One-Euro), ``fps`` (of the input, for the filter), ``detector``, ``keyframe_interval``,
    ``multiple``, ``source`` (name used in errors).
    """
    return LiveDriver(avatar, frames, **options)


# -------------------------------------------------------------------------------------------- camera

class Camera:
    """Frames of an OpenCV capture device as RGB uint8 arrays: ``for frame in Camera(0): ...``.

    Opens the device at once: InputError when there is none (no camera, wrong index, no permission).
    ``fps`` is the device's frame rate (25 when it does not say). ``max_frames`` stops after n frames.
    """

    def __init__(self, index: int = 0, max_frames: int | None = None):
        import cv2

        self.index, self.max_frames = int(index), max_frames
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(self.index)
        if not self._cap.isOpened():
            self._cap.release()
            raise InputError(f"camera {self.index}", "no video capture device (OpenCV cannot open it)",
                             "connect a camera, check its index and permissions, or drive from a file with "
                             "--driver VIDEO")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 240.0 else 25.0

    def __iter__(self) -> Iterator[np.ndarray]:
        n = 0
        try:
            while self.max_frames is None or n < self.max_frames:
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    break
                n += 1
                yield self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        finally:
            self.close()

    def close(self) -> None:
        self._cap.release()


def record_live(avatar: "Avatar", frames: Iterable[np.ndarray], output: str | os.PathLike, fps: float,
                crf: int = OutputOptions.crf, progress: bool = True, **options) -> LiveDriver:
    """Run :func:`drive` over ``frames`` and write the output frames to ``output`` (no audio). Ctrl-C (and SIGTERM
    under the CLI, which raises the same KeyboardInterrupt) stops recording and keeps what was recorded. Returns the finished :class:`LiveDriver` (counts, missing)."""
    from tqdm.auto import tqdm

    from reenact import io
    from reenact.provenance import Provenance

    io.check_writable(output)
    live = drive(avatar, frames, fps=fps, **options)
    # encoded on a writer thread while the next frame is tracked and rendered (``puppeteer.live.run_live`` also
    # puts tracking and rendering on threads of their own and drops the frames it cannot keep up with)
    with io.BackgroundWriter(io.VideoWriter(output, fps, crf=crf, provenance=Provenance.of(avatar))) as writer, \
            tqdm(desc="live", unit="frame", disable=not progress, leave=False) as bar:
        try:
            for frame in live:
                writer.write(frame)
                bar.update(1)
        except KeyboardInterrupt:
            pass
    return live


def drive_to_file(avatar: "Avatar", driver: str | os.PathLike | Iterable[np.ndarray], output: str | os.PathLike,
                  **options) -> DriveResult | LiveDriver:
    """Drive ``avatar`` by ``driver`` into the video ``output``: a video file goes to :func:`puppeteer_video`
    (returns its ``DriveResult``), any other iterable of RGB frames (a :class:`Camera`) to :func:`record_live`
    at ``options["fps"]`` or ``driver.fps`` (25 when it has none; returns the ``LiveDriver``)."""
    if isinstance(driver, (str, os.PathLike)):
        return puppeteer_video(avatar, driver, output, **options)
    fps = options.pop("fps", getattr(driver, "fps", 25.0))
    return record_live(avatar, driver, output, fps, **options)
