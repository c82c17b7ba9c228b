"""`make demo`: animate a portrait that ships with a dependency (scikit-image's astronaut), offline.

1. The landmark pipeline: ``out/astronaut_landmarks.png`` (the photo with its 68 landmarks and box),
   ``out/astronaut_crop.png`` (the 256 px face crop the model sees) and ``out/astronaut_drawing.png`` (its
   Zakharov-style landmark image).
2. ``out/demo.mp4``: the bundled default model (``Reenactor.load()``) personalised to the photo (feed-forward by
   default), first saying a sentence (eSpeak NG text-to-speech -> audio-to-landmark model -> head motion and
   brows, ``puppeteer.audio.speak.speech_track``), then playing a built-in motion script
   (``puppeteer.motion_script``: nods, a head turn, a smile, raised brows, blinks, the mouth opening and closing)
   from where the speech left off, silent; its blinks stop at :data:`BLINK_DEPTH` (what the model renders
   well). Every frame is pasted back into the full 512 x 512 photo; the speech is muxed as AAC.
   ``out/demo_strip.png``: ten frames of it side by side.

Nothing is downloaded and no ``../shared`` data is read. About 3 s of speech + 4 s of motion at 25 fps: a couple
of minutes on 2 CPU cores. ``--no-video`` stops after step 1.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SENTENCE = "Hello from orbit! I was animated offline."
TAIL_SILENCE_S = 0.3  # after the sentence, so the mouth is closed when the motion script starts
# Lid closure at the peak of the motion script's blinks. The bundled warp-guided model renders a closure up to
# ~0.6 as narrowing eyes; beyond that its thin-plate-spline warp folds the lids (0.7-0.9: bulging, smeared lids)
# and a full closure renders the eyes open again (measured on the astronaut, 256 px). For the same reason the
# speech part has no blinks (3 s without one is natural).
BLINK_DEPTH = 0.6


@dataclass
class DemoResult:
    """What :func:`make_video` wrote: ``video`` (mp4), ``strip`` (png), frame counts of the two parts, ``fps``,
    ``audio_seconds`` (speech incl. its tail silence), ``timings`` (seconds per stage)."""

    video: Path
    strip: Path
    speech_frames: int
    motion_frames: int
    fps: float
    audio_seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.speech_frames + self.motion_frames


def make_video(image: np.ndarray, points: np.ndarray, out: Path, *, checkpoint=None, device: str = "auto",
               text: str = SENTENCE, voice: str = "en", rate: int = 150, script: str = "demo",
               motion_seconds: float = 4.0, fps: float = 25.0, steps: int = 0, seed: int = 0,
               progress: bool = True) -> DemoResult:
    """Personalise the model to ``image`` (``points``: its face's 68 landmarks), render the speech part and the
    motion-script part, paste them back into ``image`` and write ``out/demo.mp4`` (+ ``out/demo_strip.png``)."""
    from reenact.audio import features as F
    from puppeteer.audio.motion import MotionOptions
    from puppeteer.audio.speak import SpeechModel, load_speech, speech_track
    from puppeteer.drive import Compositor
    from puppeteer.motion_script import motion_script
    from puppeteer.render_loop import render_video
    from reenact.api import Reenactor
    from reenact.crop import CropParams, box_from_points, crop_image, crop_matrix

    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - t0
        return now

    t = time.perf_counter()
    reenactor = Reenactor.load(checkpoint, device)
    t = lap("load model", t)
    avatar = reenactor.personalize([image], steps=steps, landmarks=[points], progress=progress, seed=seed)
    t = lap("personalize", t)

    # (a) speech: TTS, a short tail of silence, the whole clip a whole number of frames long
    sr = F.SAMPLE_RATE
    speech = load_speech(text=text, voice=voice, rate=rate)
    n_speech = F.num_video_frames(len(speech) + int(TAIL_SILENCE_S * sr), fps)
    speech = np.pad(speech, (0, max(0, int(round(n_speech * sr / fps)) - len(speech))))
    t = lap("speech synthesis", t)
    speech_pts = speech_track(avatar.source_points[0], speech, fps, sr, SpeechModel.load(),
                              MotionOptions(seed=seed, blinks=False))
    S = avatar.resolution
    speech_pts = np.clip(speech_pts, -S, 2 * S)[:n_speech]
    # (b) the motion script, starting from the last speech frame (its first frame is that frame: dropped)
    motion_pts = motion_script(speech_pts[-1], motion_seconds + 1 / fps, fps, seed, script,
                               blink_depth=BLINK_DEPTH)[1:]
    points_all = np.concatenate([speech_pts, motion_pts]).astype(np.float32)
    n_motion = len(motion_pts)
    audio = np.concatenate([speech, np.zeros(int(round(n_motion * sr / fps)), np.float32)])
    t = lap("landmarks", t)

    out.mkdir(parents=True, exist_ok=True)
    video = out / "demo.mp4"
    comp = Compositor(avatar, image, 0)
    keep = set(np.linspace(0, len(points_all) - 1, 10).round().astype(int).tolist())
    kept: dict[int, np.ndarray] = {}

    def keep_some(i, frame, p):
        if i in keep:
            kept[i] = frame
        return frame

    render_video(avatar, points_all, video, fps, compositor=comp, paste=keep_some, audio=audio, audio_rate=sr,
                 batch_size=64 if avatar.base.device.type == "cuda" else 8, progress=progress, timings=timings)

    # ten frames, each in a 192 px crop around the face (for a README gallery)
    m = crop_matrix(box_from_points(np.asarray(points, np.float32), CropParams(size=192)), 192)
    tiles = [crop_image(kept[i], m, 192) for i in sorted(kept)]
    strip = np.concatenate([np.concatenate(tiles[:5], 1), np.concatenate(tiles[5:], 1)], 0)
    strip_path = _write_synthetic_image(out / "demo_strip.png", strip, avatar)
    return DemoResult(video, strip_path, n_speech, n_motion, float(fps), len(speech) / sr, timings)


def _write_synthetic_image(path: Path, image: np.ndarray, avatar) -> Path:
    """Write a rendered image, stamped as synthetic."""
    from reenact import io
    from reenact.provenance import Provenance

    return io.write_image(path, image, provenance=Provenance.of(avatar, operation="demo"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reenact.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out", help="output folder (default: out)")
    ap.add_argument("--checkpoint", default=None, help="model checkpoint (default: the bundled model)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    ap.add_argument("--text", default=SENTENCE, help=f"the sentence to say (default: {SENTENCE!r})")
    ap.add_argument("--voice", default="en", help="eSpeak NG voice (default: en)")
    ap.add_argument("--rate", type=int, default=150, help="speaking rate, words per minute (default: 150)")
    ap.add_argument("--script", default="demo", help="motion script preset (puppeteer.motion_script.PRESETS)")
    ap.add_argument("--motion-seconds", type=float, default=4.0, help="length of the motion part (default: 4)")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate (default: 25)")
    ap.add_argument("--steps", type=int, default=0,
                    help="fine-tuning steps (default: 0, the feed-forward avatar; each step costs seconds on CPU)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the natural motion (default: 0)")
    ap.add_argument("--no-video", action="store_true", help="only the landmark images")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)

    from skimage import data

    from reenact import io
    from reenact.crop import CropParams, box_from_points, crop_image, crop_matrix, transform_points
    from reenact.draw import draw_landmarks, draw_overlay
    from reenact.landmarks import create_detector

    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    image = data.astronaut()  # RGB uint8, 512x512, shipped inside scikit-image
    t0 = time.perf_counter()
    face = create_detector("dlib").detect_one(image, source="skimage.data.astronaut()")
    dt = time.perf_counter() - t0
    m = crop_matrix(box_from_points(face.points, CropParams(size=256)), 256)
    crop = crop_image(image, m, 256)
    paths = [
        io.write_image(out / "astronaut_landmarks.png", draw_overlay(image, face)),
        io.write_image(out / "astronaut_crop.png", crop),
        io.write_image(out / "astronaut_drawing.png", draw_landmarks(transform_points(face.points, m), 256)),
    ]
    print(f"68 landmarks found in {dt * 1000:.0f} ms (dlib, offline; detector score {face.score:.2f})")
    for p in paths:
        print(p)
    if a.no_video:
        return 0

    from reenact.errors import ReenactError

    try:
        r = make_video(image, face.points, out, checkpoint=a.checkpoint, device=a.device, text=a.text,
                       voice=a.voice, rate=a.rate, script=a.script, motion_seconds=a.motion_seconds, fps=a.fps,
                       steps=a.steps, seed=a.seed, progress=not a.quiet)
    except ReenactError as exc:  # no model bundled, no TTS, ...: one line, no traceback
        print(f"error: {exc}")
        return 1
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items())
    print(f"{r.frames} frames at {r.fps:g} fps: {r.speech_frames} speaking {a.text!r} "
          f"({r.audio_seconds:.2f} s of eSpeak NG speech), then {r.motion_frames} of the {a.script!r} motion script")
    print(f"{stages}; demo total {time.perf_counter() - t_start:.1f} s")
    print(r.strip)
    print(r.video)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
