"""`reenact` command line: thin subcommands over the Python API.

Each subcommand parses its options and calls the same functions users import; imports are lazy so that
`reenact --help` is instant. The options that are fields of an option dataclass (``FinetuneOptions``,
``RetargetOptions``, ``MotionOptions``, ``EvalOptions``, ``AppConfig``, ``PrepareOptions``, ``OutputOptions``) are
generated from it by :mod:`reenact.options`, name, default and help declared once there; only a command's own
arguments (inputs, outputs, sources) are written here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reenact.options import (AT_LEAST_1, DEVICE, FPS, NON_NEGATIVE, NON_NEGATIVE_FLOAT, PORT, POSITIVE_FLOAT, RATE,
                             OutputOptions, add_options, from_args)


def _cmd_prepare(a):
    from reenact.data.prepare import PrepareOptions, prepare_dataset

    rep = prepare_dataset(a.src, a.out, from_args(PrepareOptions, a), workers=a.workers, limit=a.limit,
                          retry_skipped=a.retry_skipped)
    print(f"prepared {rep.done} clips in {rep.seconds:.1f} s ({rep.already} already done or skipped before), "
          f"skipped {len(rep.skipped)}")
    for key, why in sorted(rep.skipped.items()):
        print(f"  skipped {key}: {why}")
    for key, why in sorted(rep.region_errors.items()):
        print(f"  no region crops for {key} (retried by the next run): {why}")


def _cmd_landmarks(a):
    import numpy as np

    from reenact import io
    from reenact.landmarks import create_detector

    det = create_detector(a.backend)
    src = Path(a.input)
    out = Path(a.output)
    if src.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
        img = io.read_image(src)
        face = det.detect_one(img, multiple="largest" if a.largest else "error", source=str(src))
        with io.atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, face.points)
        if a.annotate:
            from reenact.draw import draw_overlay

            io.write_image(a.annotate, draw_overlay(img, face.points))
        print(f"{src}: 1 face, score {face.score:.2f} -> {out}")
    else:
        from tqdm.auto import tqdm

        from reenact.landmarks.track import track_frames

        info = io.probe(src)
        with tqdm(total=info.num_frames, desc="landmarks", unit="frame") as bar:
            track = track_frames(io.read_frames(src), det, fps=info.fps, source=str(src),
                                 multiple="largest" if a.largest else "error", progress=bar)
        if out.suffix == ".npy":
            with io.atomic_path(out) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, track.points)
        else:
            track.save(out)
        print(f"{src}: {len(track)} frames, no face in {len(track.missing)} (interpolated) -> {out}")


def _cmd_train(a):
    from meta_learning.train import main as train_main

    train_main(a.args)


def _cmd_finetune(a):
    from finetune.personalize import FinetuneOptions
    from reenact.api import Reenactor

    r = Reenactor.load(a.checkpoint, device=a.device)
    lmks = None
    if a.landmarks:
        lmks = [None if f == "-" else f for f in a.landmarks]
    avatar = r.personalize(a.images, landmarks=lmks, multiple="largest" if a.largest else "error",
                           options=from_args(FinetuneOptions, a), g_encoding=a.encoding)
    out = avatar.save(a.output)
    print(f"{avatar} -> {out} ({out.stat().st_size} bytes)")


def _read_track_points(path: Path):
    """(T, 68, 2) float32 landmarks from a .npy ((T, 68, 2) or (68, 2)) or a FaceTrack .npz."""
    import numpy as np

    from reenact import io
    from reenact.errors import InputError

    data = io.load_array(path, "landmarks")
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if "points" not in data:
                raise InputError(path, f"no 'points' array in the .npz (has: {', '.join(data.files)})")
            try:
                pts = data["points"]
            except (ValueError, OSError, EOFError):  # a pickled object array or a damaged member
                raise InputError(path, "the 'points' member is not a plain numeric array") from None
    else:
        pts = data
    if pts.shape == (68, 2):
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (68, 2) or len(pts) == 0:
        raise InputError(path, f"landmarks must be (T, 68, 2) (x, y) pixels, got {pts.shape}")
    pts = pts.astype(np.float32)
    if not np.isfinite(pts).all():
        raise InputError(path, "landmarks contain NaN or infinite values")
    return pts


def _cmd_render(a):
    from puppeteer.drive import Compositor
    from puppeteer.render_loop import render_video
    from reenact import io
    from reenact.api import open_avatar
    from reenact.crop import transform_points
    from reenact.errors import InputError

    pts = _read_track_points(Path(a.landmarks))
    avatar = open_avatar(a.avatar, a.checkpoint, device=a.device)
    comp = None
    if a.full:
        if not 0 <= a.shot < avatar.shots:
            raise InputError(a.avatar, f"--shot {a.shot}: the avatar has {avatar.shots} source image(s)")
        src = Path(a.source) if a.source else Path(avatar.sources[a.shot].name)
        if not src.is_file():
            raise InputError(a.avatar, f"--full needs the source image, and {src} is not a file",
                             "pass it with --source IMAGE")
        comp = Compositor(avatar, io.read_image(src), a.shot)
        pts = transform_points(pts, comp.matrix)  # image pixels -> the source's crop pixels
    render_video(avatar, pts, a.output, a.fps, compositor=comp, crf=a.crf, batch_size=32, progress=a.progress)
    print(f"{len(pts)} frames -> {a.output}")


def _cmd_eval(a):
    from reenact.metrics.evaluate import EvalOptions, results_markdown, run_eval

    rep = run_eval(a.data, a.out, from_args(EvalOptions, a))
    print(results_markdown(rep.results))
    print(f"wrote {', '.join(str(f) for f in rep.files)} in {rep.seconds:.0f} s")


def _drive_options(a):
    from puppeteer.retarget import RetargetOptions
    from reenact.errors import InputError

    try:
        return from_args(RetargetOptions, a)
    except ValueError as e:
        raise InputError("--mode/--parts/--reference/--max-eye-ratio", str(e)) from None


def _driver(a):
    """Shared by `animate` and `puppeteer`: ``(driver, options)`` for ``puppeteer.drive.drive_to_file``: the
    --driver file or the --camera (opened: a missing one fails before the slow part, after bad options), and
    the options of that kind of driving."""
    opts = dict(options=_drive_options(a), shot=getattr(a, "shot", 0), smooth=not a.no_smooth,
                keyframe_interval=a.keyframe_interval, crf=a.crf)
    if a.camera is not None:
        from puppeteer.drive import Camera

        return Camera(a.camera, max_frames=a.max_frames), dict(opts, source=f"camera {a.camera}")
    return a.driver, dict(opts, audio=not a.no_audio, max_frames=a.max_frames)


def _report_drive(a, res) -> None:
    if not hasattr(res, "frames"):  # a LiveDriver: recorded from the camera
        print(f"{res.count} frames from camera {a.camera} -> {a.output} (no face in {len(res.missing)})")
        return
    audio = f", {res.audio_seconds:.2f} s of audio" if res.audio_seconds is not None else ", no audio"
    held = f"; no face in {res.held} frame(s), interpolated" if res.held else ""
    print(f"{res.frames} frames at {res.fps:g} fps ({res.size[1]}x{res.size[0]}{audio}, reference frame "
          f"{res.reference}){held} -> {res.output}")


def _cmd_animate(a):
    from finetune.personalize import FinetuneOptions
    from puppeteer.oneshot import animate
    from reenact.api import Reenactor

    driver, options = _driver(a)
    r = Reenactor.load(a.checkpoint, device=a.device)
    _, res = animate(a.portrait, driver, a.output, reenactor=r, landmarks=a.landmarks or None,
                     multiple="largest" if a.largest else "error", finetune=from_args(FinetuneOptions, a),
                     crop=a.crop, save_avatar=a.save_avatar or None, progress=a.progress, **options)
    _report_drive(a, res)


def _cmd_puppeteer(a):
    from puppeteer.drive import drive_to_file

    driver, options = _driver(a)
    avatar, into = _open_avatar_into(a)
    _report_drive(a, drive_to_file(avatar, driver, a.output, into=into, progress=a.progress, **options))


def _open_avatar_into(a):
    """``(avatar, into)`` for --avatar/--checkpoint/--device/--shot/--crop/--source: the avatar file and the
    source image to paste into (None with --crop)."""
    from puppeteer.drive import source_image
    from reenact import io
    from reenact.api import open_avatar
    from reenact.errors import InputError

    avatar = open_avatar(a.avatar, a.checkpoint, device=a.device)
    if not 0 <= a.shot < avatar.shots:
        raise InputError(a.avatar, f"--shot {a.shot}: the avatar has {avatar.shots} source image(s)")
    into = None
    if not a.crop:
        into = io.read_image(a.source if a.source else source_image(avatar, a.shot))
    return avatar, into


def _cmd_live(a):
    from puppeteer.drive import Camera
    from puppeteer.live import has_display, run_live
    from reenact.errors import InputError

    opts = _drive_options(a)
    if a.show and not has_display():
        print("reenact: no display here (DISPLAY / WAYLAND_DISPLAY not set): --show opens no window",
              file=sys.stderr)
        if not a.output:
            raise InputError("--show", "nothing to show the frames on and no --out file to write them to",
                             "write a file with --out FILE (or run where a display exists)")
        a.show = False
    if not a.show and not a.output:
        raise InputError("reenact live", "no output: give --show (a window) and/or --out FILE")
    source = Camera(a.camera) if a.camera is not None else a.driver
    avatar, into = _open_avatar_into(a)
    live = run_live(avatar, source, out=a.output, show=a.show, overlay=a.overlay, realtime=not a.no_realtime,
                    max_frames=a.max_frames, audio=not a.no_audio, into=into, shot=a.shot, options=opts,
                    smooth=not a.no_smooth, keyframe_interval=a.keyframe_interval, queue_size=a.queue_size,
                    crf=a.crf, progress=a.progress)
    stats = live.run()
    where = f" -> {a.output}" if a.output and stats.written else ""
    print(f"{stats.summary()}; no face in {stats.missing}{where}")


def _add_drive_args(s) -> None:
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--driver", metavar="VIDEO", help="video of the person whose motion drives the avatar")
    src.add_argument("--camera", type=NON_NEGATIVE, metavar="N", help="drive live from OpenCV capture device N")
    s.add_argument("-o", "--output", required=True, help="video to write (.mp4)")
    s.add_argument("--crop", action="store_true", help="write the rendered face crop only (no paste-back)")
    _add_motion_args(s)


def _add_motion_args(s, reference_help: str | None = None,
                     max_frames_help: str = "only the first n driver frames") -> None:
    """Options shared by the commands a driver's motion goes through (puppeteer, animate, live)."""
    _add_options(s, "puppeteer.retarget:RetargetOptions",
                 help={"reference": reference_help} if reference_help else None)
    s.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing of the driver's landmarks")
    s.add_argument("--no-audio", action="store_true", help="do not copy the driver's audio")
    s.add_argument("--keyframe-interval", type=AT_LEAST_1, default=10, help="detect faces every n frames (default 10)")
    s.add_argument("--max-frames", type=AT_LEAST_1, default=None, help=max_frames_help)
    _add_device_arg(s)
    add_options(s, OutputOptions)


def _add_device_arg(s) -> None:
    s.add_argument("--device", type=DEVICE, default="auto", help="auto (default), cpu, cuda, cuda:N")


def _add_finetune_args(s, only=None) -> None:
    _add_options(s, "finetune.personalize:FinetuneOptions", only=only)


def _add_options(s: "_Parser", where: str, **kw) -> None:
    """``add_options(s, module:Class, **kw)`` when ``s`` parses: a command's dataclass (and the stage that defines
    it, torch included) is imported only when that command runs, so ``reenact --help`` stays instant."""
    def add(parser):
        import importlib

        module, name = where.split(":")
        add_options(parser, getattr(importlib.import_module(module), name), **kw)

    s.pending.append(add)


def _speech_args(a) -> dict:
    return {"audio": a.audio, "text": a.text, "voice": a.voice, "rate": a.rate, "checkpoint": a.checkpoint,
            "steps": a.steps, "device": a.device, "mouth_gain": a.mouth_gain, "speech_model": a.speech_model,
            "seed": a.seed, "crf": a.crf, "progress": a.progress}


def _cmd_speak(a):
    from puppeteer.audio.motion import MotionOptions
    from puppeteer.audio.speak import speak

    kw = _speech_args(a)
    motion = from_args(MotionOptions, a)  # --seed seeds the motion too
    r = speak(a.portrait, a.output, fps=a.fps, motion=motion, crop=a.crop, landmarks=a.landmarks, **kw)
    print(f"wrote {r.output}: {r.frames} frames at {r.fps:g} fps, {r.audio_seconds:.2f} s of speech")


def _cmd_lipsync(a):
    from puppeteer.audio.speak import lipsync

    kw = _speech_args(a)
    r = lipsync(a.video, a.output, shots=a.shots, max_seconds=a.max_seconds, **kw)
    kept = f"; no face in {len(r.kept)} frame(s), kept as the video has them" if len(r.kept) else ""
    print(f"wrote {r.output}: {r.frames} frames at {r.fps:g} fps, {r.audio_seconds:.2f} s of speech{kept}")


def _cmd_train_audio(a):
    from puppeteer.audio.train import main as train_audio

    rc = train_audio(a.args)
    if rc:
        raise SystemExit(rc)


def _add_speech_args(s) -> None:
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", metavar="FILE", help="speech to say (wav, mp3, m4a, or a video's audio track)")
    src.add_argument("--text", help="text to say, synthesised offline by eSpeak NG (pip install 'reenact[tts]')")
    s.add_argument("-o", "--output", required=True, help="video to write (.mp4)")
    s.add_argument("--voice", default="en", help="eSpeak NG voice for --text (default en)")
    s.add_argument("--rate", type=RATE, default=150, help="speaking rate for --text, words per minute (default 150)")
    s.add_argument("--checkpoint", help="meta-learned checkpoint, or a bundled model: photo (the default), crop")
    _add_finetune_args(s, only=("steps", "seed"))
    s.add_argument("--speech-model", metavar="DIR", help="audio-to-landmark checkpoint (default: the shipped one)")
    s.add_argument("--mouth-gain", type=NON_NEGATIVE_FLOAT, default=1.0, help="scale of the mouth motion (default 1)")
    _add_device_arg(s)
    add_options(s, OutputOptions)


def _cmd_verify(a):
    import json

    from reenact.provenance.verify import verify

    v = verify(a.file, max_frames=a.max_frames)
    print(json.dumps(v.as_dict(), indent=2) if a.json else v.describe())
    if not v.found:
        raise SystemExit(1)


def _cmd_app(a):
    from reenact.app import AppConfig, launch

    launch(from_args(AppConfig, a), host=a.host, port=a.port, share=a.share)


def _provenance_scope(a):
    """Commands that write synthetic media stamp everything they write; ``--no-watermark`` is recorded."""
    import contextlib

    if not hasattr(a, "watermark"):
        return contextlib.nullcontext()
    from reenact.provenance import Provenance, using

    return using(Provenance(watermark=a.watermark, operation=a.command,
                            watermark_off_reason=None if a.watermark else "--no-watermark"))


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (command, option, problem) with exit status 2, instead of the usage text first.
    ``pending``: functions adding arguments, called with the parser when it first parses (see _add_options)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: list = []

    def parse_known_args(self, args=None, namespace=None):
        while self.pending:
            self.pending.pop(0)(self)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from reenact import __version__

    p = _Parser(prog="reenact", description="Few-shot, landmark-driven face reenactment.")
    p.add_argument("--version", action="version", version=f"reenact {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("prepare", help="turn a tree of talking-head videos into a training set",
                       description="SRC/<identity>/[<video>/]<clip>.mp4 -> face crops, landmarks and audio in OUT. "
                                   "Resumable: a rerun skips finished clips.")
    s.add_argument("src")
    s.add_argument("out")
    _add_options(s, "reenact.data.prepare:PrepareOptions")
    s.add_argument("--workers", type=AT_LEAST_1, default=None, help="parallel workers (default: all cores)")
    s.add_argument("--limit", type=AT_LEAST_1, default=None, help="only the first n clips")
    s.add_argument("--retry-skipped", action="store_true", help="try clips skipped by an earlier run again")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("landmarks", help="68-point landmarks of an image or a video",
                       description="Image -> (68,2) .npy; video -> a smoothed track (.npz, or .npy of (T,68,2)).")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--backend", default="dlib")
    s.add_argument("--largest", action="store_true", help="with several faces, take the largest")
    s.add_argument("--annotate", help="also write the image with its landmarks drawn (images only)")
    s.set_defaults(func=_cmd_landmarks)

    s = sub.add_parser("train", help="meta-learning (stage 1); same as python -m meta_learning.train",
                       description="Options: --preset NAME then dotted overrides, e.g. data.root=DIR train.steps=1000")
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("finetune", help="personalise a model to a person from 1..K images (an avatar file)",
                       description="Few-shot personalisation (Zakharov et al. 2019, stage 2): detect and crop the "
                                   "face in each image, embed them, fine-tune for --steps (0: feed-forward), "
                                   "save a small .safetensors avatar.")
    s.add_argument("images", nargs="+", help="images of one person (photos, paintings, drawings)")
    s.add_argument("-o", "--output", required=True, help="avatar file to write (.safetensors)")
    s.add_argument("--checkpoint", help="meta-learned checkpoint (run folder, checkpoints folder or step folder), "
                                        "or a bundled model: photo (the default), crop")
    s.add_argument("--landmarks", nargs="+", metavar="F.npy",
                   help="a (68, 2) landmarks .npy per image, '-' to detect that one (for faces the detector misses)")
    s.add_argument("--largest", action="store_true", help="with several faces in an image, take the largest")
    _add_device_arg(s)
    s.add_argument("--encoding", default="delta-int8", choices=["delta-int8", "delta-fp16", "fp16"],
                   help="storage of the fine-tuned generator (default delta-int8, the smallest)")
    _add_finetune_args(s)
    s.set_defaults(func=_cmd_finetune)

    s = sub.add_parser("render", help="render an avatar from a landmark sequence to a video",
                       description="LANDMARKS: (T, 68, 2) .npy (or a track .npz from `reenact landmarks`) in crop "
                                   "pixels, or with --full in the source image's pixels (the face is then pasted "
                                   "back into the source image).")
    s.add_argument("avatar", help="avatar file from `reenact finetune`")
    s.add_argument("landmarks", help="(T, 68, 2) landmarks .npy / track .npz")
    s.add_argument("-o", "--output", required=True, help="video to write (.mp4)")
    s.add_argument("--fps", type=FPS, default=25.0, help="frame rate (default 25)")
    s.add_argument("--full", action="store_true", help="full-image coordinates; paste back into the source image")
    s.add_argument("--source", help="with --full: the source image (default: the path recorded in the avatar)")
    s.add_argument("--shot", type=NON_NEGATIVE, default=0, help="with --full: which source image (default 0)")
    s.add_argument("--checkpoint", help="base model (default: the one recorded in the avatar, else the bundled one)")
    _add_device_arg(s)
    add_options(s, OutputOptions)
    s.set_defaults(func=_cmd_render)

    s = sub.add_parser("eval", help="evaluate methods by self-, cross-reenactment or speech on a prepared dataset",
                       description="Self: render later frames of held-out clips from their own landmarks and "
                                   "compare with the real frames. Cross: drive one person with another's motion. "
                                   "Speech: drive each held-out clip's first frame with the clip's own audio "
                                   "(mouth distance to the real track, AV sync, blinks; rendered too with "
                                   "--checkpoint). Writes results.json, results.md and grid images to --out.")
    s.add_argument("--data", required=True, help="prepared dataset folder (from `reenact prepare`)")
    _add_options(s, "reenact.metrics.evaluate:EvalOptions")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=_cmd_eval)

    s = sub.add_parser("animate", help="one shot: personalise to a portrait, then drive it with a video",
                       description="Personalise a model to the face in PORTRAIT (--steps of fine-tuning, 0: "
                                   "feed-forward), then drive it with the face in --driver: identity-preserving "
                                   "retargeting, smoothed, pasted back into the portrait, with the driver's "
                                   "audio, frame count and frame rate.")
    s.add_argument("portrait", help="photo (or painting) of the person to animate")
    _add_drive_args(s)
    s.add_argument("--checkpoint", help="meta-learned checkpoint, or a bundled model: photo (the default), crop")
    _add_finetune_args(s, only=("steps", "seed"))
    s.add_argument("--landmarks", metavar="F.npy", help="the portrait's (68, 2) landmarks, if detection fails")
    s.add_argument("--largest", action="store_true", help="with several faces in the portrait, take the largest")
    s.add_argument("--save-avatar", metavar="F.safetensors", help="also save the avatar")
    s.set_defaults(func=_cmd_animate)

    s = sub.add_parser("puppeteer", help="drive an avatar file with another person's video",
                       description="Drive AVATAR (from `reenact finetune`) with the face in --driver: "
                                   "identity-preserving retargeting, smoothed, pasted back into the avatar's "
                                   "source image (or --crop), with the driver's audio, frame count and frame rate.")
    s.add_argument("avatar", help="avatar file (.safetensors)")
    _add_drive_args(s)
    s.add_argument("--checkpoint", help="base model (default: the one recorded in the avatar, else the bundled one)")
    s.add_argument("--source", help="the avatar's source image to paste into (default: the path it recorded)")
    s.add_argument("--shot", type=NON_NEGATIVE, default=0, help="which source image of the avatar (default 0)")
    s.set_defaults(func=_cmd_puppeteer)

    s = sub.add_parser("live", help="drive an avatar in real time from a camera or a video, to a window or a file",
                       description="Frames in -> landmarks -> retarget -> render -> paste back -> out, each stage on "
                                   "its own thread. A driver file plays at its own frame rate, as a camera would; "
                                   "frames a stage cannot keep up with are dropped (--no-realtime renders every "
                                   "one). The bar shows fps, latency and drops; Ctrl-C (or q / Esc in the window) "
                                   "stops and keeps the file.")
    s.add_argument("avatar", help="avatar file (.safetensors)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=NON_NEGATIVE, metavar="N", help="OpenCV capture device N")
    src.add_argument("--driver", metavar="VIDEO", help="a video played at its own frame rate")
    s.add_argument("--out", "-o", dest="output", help="video to write (.mp4): one frame per input frame, with the driver's audio")
    s.add_argument("--show", action="store_true", help="show the frames in a window (where a display exists)")
    s.add_argument("--overlay", action="store_true", help="draw fps and latency in the window")
    s.add_argument("--no-realtime", action="store_true", help="render every input frame (no dropping)")
    s.add_argument("--queue-size", type=AT_LEAST_1, default=2, help="frames waiting between two stages (default 2)")
    s.add_argument("--crop", action="store_true", help="the rendered face crop only (no paste-back)")
    s.add_argument("--source", help="the avatar's source image to paste into (default: the path it recorded)")
    s.add_argument("--shot", type=NON_NEGATIVE, default=0, help="which source image of the avatar (default 0)")
    s.add_argument("--checkpoint", help="base model (default: the one recorded in the avatar, else the bundled one)")
    _add_motion_args(s, reference_help="neutral frame: the first with a face at or after this index (default 0)",
                     max_frames_help="stop after n input frames")
    s.set_defaults(func=_cmd_live)

    s = sub.add_parser("speak", help="make a portrait say an audio file or a text",
                       description="Personalise a model to the face in PORTRAIT, predict mouth and jaw from the "
                                   "speech (--audio, or --text by offline TTS), add blinks, head motion and brows, "
                                   "render, paste back into the portrait and write the video with the speech.")
    s.add_argument("portrait", help="photo (or painting) of the person")
    _add_speech_args(s)
    s.add_argument("--fps", type=FPS, default=25.0, help="frame rate (default 25)")
    _add_options(s, "puppeteer.audio.motion:MotionOptions", exclude=("seed",))  # --seed seeds the motion too
    s.add_argument("--crop", action="store_true", help="write the rendered face crop only (no paste-back)")
    s.add_argument("--landmarks", metavar="F.npy", help="the portrait's (68, 2) landmarks, if detection fails")
    s.set_defaults(func=_cmd_speak)

    s = sub.add_parser("lipsync", help="re-voice a video: its face says new speech",
                       description="Mouth and jaw from the new speech (--audio or --text), everything else from the "
                                   "video's own landmarks; a model personalised on frames of the video renders each "
                                   "frame: the default photo renderer warps the frame itself and paints the mouth, "
                                   "the crop model (--checkpoint crop) renders its face crop, pasted back. The video "
                                   "plays forward and backward to the speech's length.")
    s.add_argument("video", help="video of one talking face")
    _add_speech_args(s)
    s.add_argument("--shots", type=AT_LEAST_1, default=1, help="video frames to personalise on (default 1)")
    s.add_argument("--max-seconds", type=POSITIVE_FLOAT, default=120.0, help="use at most this much of the video")
    s.set_defaults(func=_cmd_lipsync)

    s = sub.add_parser("train-audio", help="train the speech models; same as python -m puppeteer.audio.train",
                       description="Options: --data DIR --out DIR [--what both|sync|a2l] [key=value ...]")
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(func=_cmd_train_audio)

    s = sub.add_parser("verify", help="provenance of an image or video: metadata, C2PA manifest, watermark",
                       description="Reports the provenance record in the container, the C2PA manifest (and whether "
                                   "the file changed since it was signed) and reenact's invisible watermark. Exit "
                                   "status 0 when any of them is found, 1 when none is.")
    s.add_argument("file", help="image or video to check")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--max-frames", type=AT_LEAST_1, default=64,
                   help="video frames examined for the watermark (default 64)")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("app", help="the web app: animate, personalise, puppeteer in a browser page",
                       description="Starts a Gradio app on http://127.0.0.1:7860 (local only unless --host says "
                                   "otherwise). One job runs at a time (CPU, or the GPU when there is one); others "
                                   "wait in a queue.")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=PORT, default=7860)
    s.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    _add_options(s, "reenact.app.handlers:AppConfig")
    s.set_defaults(func=_cmd_app)
    return p


# Files a command writes, by option: checked (not a folder, a folder that can be written) before any work.
_OUTPUT_OPTIONS = ("output", "save_avatar", "annotate")


def _check_outputs(a) -> None:
    from reenact import io

    for name in _OUTPUT_OPTIONS:
        if getattr(a, name, None):
            io.check_writable(getattr(a, name))


def _os_error_message(e: OSError) -> str:
    """``path: problem`` for an OS error (permission, a folder where a file was expected, a full disk...)."""
    where = getattr(e, "filename", None)
    what = getattr(e, "strerror", None) or str(e)
    return f"{where}: {what}" if where else what


def _media_error(e: Exception) -> bool:
    av = sys.modules.get("av")  # only loaded when a command touched media
    return av is not None and isinstance(e, av.error.FFmpegError)


def main(argv: list[str] | None = None) -> int:
    from reenact.errors import ReenactError
    from reenact.interrupt import EXIT_TERMINATED, Terminated, sigterm_as_interrupt

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (2), --help and --version (0)
        return e.code if isinstance(e.code, int) else 2
    try:
        # SIGTERM (timeout, docker stop, systemd) takes Ctrl-C's way out: the writers delete their temp files
        with sigterm_as_interrupt(), _provenance_scope(args):
            _check_outputs(args)
            args.func(args)
    except (ReenactError, FileNotFoundError) as e:
        print(f"reenact: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"reenact: error: {_os_error_message(e)}", file=sys.stderr)
        return 2
    except Terminated:
        print("reenact: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("reenact: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not _media_error(e):
            raise
        print(f"reenact: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
