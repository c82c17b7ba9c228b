"""finetune.shots: source images as users pass them (paths, or arrays in the layouts files have), and the
errors for what cannot be a picture of a face."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from finetune.shots import load_shots
from reenact import io
from reenact.errors import InputError


@pytest.fixture(scope="module")
def detector():
    from reenact.landmarks import create_detector

    return create_detector("dlib")


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_gray_and_rgba_arrays_are_accepted_like_the_same_pictures_as_files(portrait, detector, tmp_path, mode):
    rgb = io.read_image(portrait)
    if mode == "L":
        arr = np.asarray(Image.fromarray(rgb).convert("L"))
    else:
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[:40] = 90  # a translucent band at the top: composited on white, as files are
        arr = np.dstack([rgb, alpha])
    Image.fromarray(arr, mode).save(tmp_path / "p.png")
    from_file, from_array = load_shots(str(tmp_path / "p.png"), 64, detector=detector)[0], \
        load_shots(arr, 64, detector=detector)[0]
    assert from_array.name == "<image 0>" and from_array.size == from_file.size
    assert np.array_equal(from_array.crop, from_file.crop)
    assert np.allclose(from_array.points, from_file.points)


def test_no_image_and_an_empty_array_are_input_errors(tiny_checkpoint, portrait, tmp_path):
    from reenact.api import Reenactor

    r = Reenactor.load(tiny_checkpoint, device="cpu")
    with pytest.raises(InputError, match=r"^<images>: no images given \(None\)"):
        r.personalize(None, steps=0)
    with pytest.raises(InputError, match=r"^<image 0>: empty image \(0x0 pixels\)"):
        r.personalize(np.zeros((0, 0, 3), np.uint8), steps=0)
    with pytest.raises(InputError, match=r"^<image 0>: image is 2000x3 pixels: too small to find a face in"):
        r.personalize(np.zeros((3, 2000, 3), np.uint8), steps=0)
    avatar = r.personalize(io.read_image(portrait), steps=0, progress=False)
    with pytest.raises(InputError, match=rf"^{tmp_path}: is a folder"):  # not the hidden temp file's name
        avatar.save(tmp_path)
