"""`make demo`: the landmark pipeline on a portrait that ships with a dependency (scikit-image's astronaut).

Writes ``out/astronaut_landmarks.png`` (the photo with its 68 landmarks and box), ``out/astronaut_drawing.png``
(the Zakharov-style landmark image of the 256 px face crop the model sees) and ``out/astronaut_crop.png``, then
prints their paths. Offline; later versions animate the portrait with the bundled model.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reenact.demo", description=__doc__)
    ap.add_argument("--out", default="out", help="output folder (default: out)")
    a = ap.parse_args(argv)

    from skimage import data

    from reenact import io
    from reenact.crop import CropParams, box_from_points, crop_image, crop_matrix, transform_points
    from reenact.draw import draw_landmarks, draw_overlay
    from reenact.landmarks import create_detector

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
