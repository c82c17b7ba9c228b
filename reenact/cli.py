"""`reenact` command line: thin subcommands over the Python API.

Each subcommand parses its options and calls the same functions users import; imports are lazy so that
`reenact --help` is instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_prepare(a):
    from reenact.data.prepare import PrepareOptions, prepare_dataset

    opts = PrepareOptions(size=a.size, frame_step=a.frame_step, crf=a.crf, crop_scale=a.crop_scale,
                          keyframe_interval=a.keyframe_interval, min_frames=a.min_frames,
                          keep_audio=not a.no_audio, max_seconds=a.max_seconds, backend=a.backend)
    rep = prepare_dataset(a.src, a.out, opts, workers=a.workers, limit=a.limit, retry_skipped=a.retry_skipped)
    print(f"prepared {rep.done} clips in {rep.seconds:.1f} s ({rep.already} already done or skipped before), "
          f"skipped {len(rep.skipped)}")
    for key, why in sorted(rep.skipped.items()):
        print(f"  skipped {key}: {why}")


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


def build_parser() -> argparse.ArgumentParser:
    from reenact import __version__

    p = argparse.ArgumentParser(prog="reenact", description="Few-shot, landmark-driven face reenactment.")
    p.add_argument("--version", action="version", version=f"reenact {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("prepare", help="turn a tree of talking-head videos into a training set",
                       description="SRC/<identity>/[<video>/]<clip>.mp4 -> face crops, landmarks and audio in OUT. "
                                   "Resumable: a rerun skips finished clips.")
    s.add_argument("src")
    s.add_argument("out")
    s.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    s.add_argument("--frame-step", type=int, default=2, help="store every n-th crop (default 2)")
    s.add_argument("--crf", type=int, default=20, help="H.264 quality of stored crops (default 20)")
    s.add_argument("--crop-scale", type=float, default=1.8, help="crop side / landmark extent (default 1.8)")
    s.add_argument("--keyframe-interval", type=int, default=10, help="detect faces every n frames (default 10)")
    s.add_argument("--min-frames", type=int, default=16, help="skip clips with fewer face frames (default 16)")
    s.add_argument("--max-seconds", type=float, default=0.0, help="only the first seconds of each clip")
    s.add_argument("--no-audio", action="store_true", help="do not keep the audio track")
    s.add_argument("--backend", default="dlib", help="landmark backend (default dlib)")
    s.add_argument("--workers", type=int, default=None, help="parallel workers (default: all cores)")
    s.add_argument("--limit", type=int, default=None, help="only the first n clips")
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
    return p


def main(argv: list[str] | None = None) -> int:
    from reenact.errors import ReenactError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ReenactError, FileNotFoundError) as e:
        print(f"reenact: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reenact: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
