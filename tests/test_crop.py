import numpy as np

from reenact import io
from reenact.crop import (CropParams, box_from_points, crop_image, crop_matrix, face_mask, invert, paste_back,
                          smooth_boxes, transform_points)
from reenact.landmarks import create_detector


def test_crop_then_paste_back_restores_the_frame(portrait):
    img = io.read_image(portrait)
    face = create_detector().detect_one(img)
    box = box_from_points(face.points, CropParams(size=256))
    m = crop_matrix(box, 256)
    crop = crop_image(img, m, 256)
    assert crop.shape == (256, 256, 3)
    # The landmarks in the crop are centred and the face fills a sensible part of it.
    pc = transform_points(face.points, m)
    assert 64 < pc[:, 0].mean() < 192 and 64 < pc[:, 1].mean() < 200
    span = pc.max(0) - pc.min(0)
    assert 100 < span.max() < 160  # 256 / 1.8 = 142
    # Round trip: points go back exactly; pixels come back close inside the face.
    back_pts = transform_points(pc, invert(m))
    assert np.abs(back_pts - face.points).max() < 1e-3
    mask = face_mask(pc, 256)
    pasted = paste_back(img, crop, m, mask)
    assert pasted.shape == img.shape
    x0, y0 = face.points.min(0).astype(int)
    x1, y1 = face.points.max(0).astype(int)
    diff = np.abs(pasted[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1].astype(int)).mean()
    assert diff < 6.0, diff  # resampling twice only
    # A different crop (a black square) pasted back changes the face and leaves the far corners untouched.
    changed = paste_back(img, np.zeros_like(crop), m, mask)
    assert changed[y0:y1, x0:x1].mean() < 0.5 * img[y0:y1, x0:x1].mean()
    assert (changed[:5, :5] == img[:5, :5]).all()


def test_smooth_boxes_removes_jitter_and_keeps_trend():
    t = np.arange(100, dtype=np.float32)
    rng = np.random.default_rng(0)
    boxes = np.stack([100 + t, 100 + 0 * t, 200 + 0 * t], 1) + rng.normal(0, 2, (100, 3))
    sm = smooth_boxes(boxes, fps=25)
    assert np.abs(np.diff(sm, 2, axis=0)).mean() < 0.2 * np.abs(np.diff(boxes, 2, axis=0)).mean()
    assert abs(sm[50, 0] - 150) < 2
