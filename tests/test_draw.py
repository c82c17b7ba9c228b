"""Landmark rasterizers: OpenCV and torch draw the same picture, parts in their colours, robust geometry."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reenact.draw import default_thickness, draw_landmarks, draw_overlay, rasterize
from reenact.landmarks.base import FaceLandmarks
from reenact.landmarks.parts import MIRROR_PERMUTATION, PARTS, segments

SIZE = 256


@pytest.fixture(scope="module")
def real_points(portrait) -> np.ndarray:
    """dlib's 68 points on the real portrait, scaled to a SIZE x SIZE image."""
    import dlib

    models = Path(importlib.util.find_spec("face_recognition_models").origin).parent / "models"
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    bgr = cv2.imread(str(portrait))
    assert bgr is not None, portrait
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])  # dlib misreads strided views
    rects = dlib.get_frontal_face_detector()(rgb, 1)
    assert len(rects) == 1
    shape = predictor(rgb, rects[0])
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    h, w = rgb.shape[:2]
    return pts * np.array([SIZE / w, SIZE / h], np.float32)


def torch_image(points: np.ndarray, size=SIZE, thickness=None) -> np.ndarray:
    """rasterize() as an (H, W, 3) float array in [0, 255]."""
    return rasterize(torch.from_numpy(np.asarray(points, np.float32)), size, thickness).permute(1, 2, 0).numpy() * 255


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_opencv_and_torch_agree_on_real_landmarks(real_points):
    a = draw_landmarks(real_points, SIZE).astype(np.float32)
    b = torch_image(real_points)
    assert a.shape == b.shape == (SIZE, SIZE, 3)
    mad = np.abs(a - b).mean(axis=(0, 1))
    assert (mad < 3.0).all(), mad
    assert iou(a.max(-1) > 0, b.max(-1) > 0) > 0.8
    assert iou(a.max(-1) > 127, b.max(-1) > 127) > 0.85
    # same amount of ink: the line widths match (within 10 %)
    assert abs(a.sum() / b.sum() - 1) < 0.1


@pytest.mark.parametrize("size", [128, (200, 320), 512])
def test_agreement_at_other_sizes(real_points, size):
    h, w = (size, size) if isinstance(size, int) else size
    pts = real_points * np.array([w / SIZE, h / SIZE], np.float32)
    a = draw_landmarks(pts, size).astype(np.float32)
    b = torch_image(pts, size)
    assert a.shape == b.shape == (h, w, 3)
    assert (np.abs(a - b).mean(axis=(0, 1)) < 3.0).all()
    assert iou(a.max(-1) > 127, b.max(-1) > 127) > 0.8


def test_default_thickness_scales_with_size():
    assert default_thickness(256) == pytest.approx(3.35)
    assert default_thickness(128) < default_thickness(256) < default_thickness(512)
    assert default_thickness((256, 1024)) == default_thickness(256)  # the shorter side decides
    assert default_thickness(16) >= 1.0


def _part_of_segments() -> list[str]:
    names = []
    for name, (ids, closed, _) in PARTS.items():
        names += [name] * (len(ids) - 1 + int(closed))
    return names


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    u = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(p - (a + u[..., None] * ab), axis=-1)


def _check_part_colours(points: np.ndarray, size: int, thickness: float) -> set[str]:
    """Asserts the colour at segment midpoints that no other part passes near; returns the parts checked."""
    idx, _ = segments()
    part = np.array(_part_of_segments())
    a, b = points[idx[:, 0]], points[idx[:, 1]]
    colours = np.array([c for _, _, c in PARTS.values()], np.float32)
    names = list(PARTS)
    cv_img = draw_landmarks(points, size, thickness).astype(np.float32)
    th_img = torch_image(points, size, thickness)
    checked = set()
    for s, m in enumerate((a + b) / 2):
        # only where no other part is close (where parts overlap, each channel is the max of both colours)
        d = _point_segment_distance(m[None], a, b)
        if (d[part != part[s]] < thickness / 2 + 1.5).any():
            continue
        x, y = np.round(m).astype(int)
        np.testing.assert_allclose(th_img[y, x], PARTS[part[s]][2], atol=2.0)  # full coverage on the line
        pixel = cv_img[y, x]
        assert pixel.max() > 200
        cos = colours @ pixel / (np.linalg.norm(colours, axis=1) * np.linalg.norm(pixel))
        assert names[int(np.argmax(cos))] == part[s]
        checked.add(str(part[s]))
    # nothing is drawn far from every segment
    yy, xx = np.mgrid[:size, :size]
    pix = np.stack([xx, yy], -1).reshape(-1, 1, 2).astype(np.float32)
    far = (_point_segment_distance(pix, a[None], b[None]).min(1) > thickness / 2 + 1.5).reshape(size, size)
    assert th_img[far].max() == 0 and cv_img[far].max() == 0
    return checked


def test_each_part_is_drawn_in_its_colour_where_its_points_are(real_points):
    checked = _check_part_colours(real_points, SIZE, default_thickness(SIZE))
    assert len(checked) >= 6
    # at twice the size with the same line width the closed mouth's lips separate too
    checked |= _check_part_colours(real_points * 2, 2 * SIZE, default_thickness(SIZE))
    assert checked == set(PARTS), f"parts never checked in isolation: {set(PARTS) - checked}"


def test_points_outside_the_image(real_points):
    shift = np.array([100.0, 0.0], np.float32)
    moved = real_points - shift                      # face partly beyond the left border
    full = torch_image(real_points)
    part = torch_image(moved)
    # translation by whole pixels is exact for the torch rasterizer ...
    np.testing.assert_allclose(part[:, : SIZE - 100], full[:, 100:], atol=1e-3)
    # ... and close for OpenCV (fixed-point coordinates, its own clipping)
    cv_full, cv_part = draw_landmarks(real_points, SIZE), draw_landmarks(moved, SIZE)
    assert np.abs(cv_part[:, : SIZE - 100].astype(int) - cv_full[:, 100:]).mean() < 0.5
    far = real_points + np.array([1e6, -1e6], np.float32)
    assert draw_landmarks(far, SIZE).max() == 0
    assert torch_image(far).max() == 0
    # one point thrown far away: its two segments cross the image, nothing crashes
    wild = real_points.copy()
    wild[8] = (-1e7, 3e6)
    assert draw_landmarks(wild, SIZE).shape == (SIZE, SIZE, 3)
    assert torch_image(wild).shape == (SIZE, SIZE, 3)
    with pytest.raises(ValueError):
        rasterize(torch.full((68, 2), float("nan")), SIZE)


def test_batch_dims_and_dtypes(real_points):
    rng = np.random.default_rng(0)
    base = torch.from_numpy(real_points)
    batch = torch.stack([base + torch.from_numpy(rng.normal(0, 3, (68, 2)).astype(np.float32)) for _ in range(6)])
    out = rasterize(batch.view(2, 3, 68, 2).double(), (64, 96), thickness=2.0)
    assert out.shape == (2, 3, 3, 64, 96) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    for i in range(6):
        single = rasterize(batch[i], (64, 96), thickness=2.0)
        torch.testing.assert_close(out.view(6, 3, 64, 96)[i], single)
    assert rasterize(torch.zeros(0, 68, 2), 32).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError):
        rasterize(torch.zeros(5, 2), 32)


def test_autocast_and_gradients(real_points):
    pts = torch.from_numpy(real_points * 0.25)
    ref = rasterize(pts, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = rasterize(pts.bfloat16().float(), 64)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, rasterize(pts.bfloat16().float(), 64))
    leaf = pts.clone().requires_grad_(True)
    rasterize(leaf, 64).sum().backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    assert ref.shape == (3, 64, 64)


def _asymmetric_segment_mask(points: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Pixels near segments whose mirror image is not itself a segment (parts.PARTS need not be symmetric)."""
    idx, _ = segments()
    pairs = {tuple(sorted(p)) for p in idx.tolist()}
    lonely = [p for p in pairs if tuple(sorted((MIRROR_PERMUTATION[p[0]], MIRROR_PERMUTATION[p[1]]))) not in pairs]
    yy, xx = np.mgrid[:size, :size]
    pix = np.stack([xx, yy], -1).astype(np.float32)
    mask = np.zeros((size, size), bool)
    for i, j in lonely:
        for p in (points, np.stack([size - 1 - points[:, 0], points[:, 1]], 1)):
            mask |= _point_segment_distance(pix, p[i], p[j]) < margin
    return mask


def test_mirrored_face_draws_the_flipped_image(real_points):
    mirrored = np.stack([SIZE - 1 - real_points[:, 0], real_points[:, 1]], 1)[MIRROR_PERMUTATION]
    ignore = _asymmetric_segment_mask(real_points, SIZE, default_thickness(SIZE) / 2 + 1.5)
    keep = ~ignore
    # torch: the coverage (max over channels, every part colour has a 255 channel) is exactly mirrored
    drawn = torch_image(mirrored)
    flipped = torch_image(real_points)[:, ::-1]
    np.testing.assert_allclose(drawn.max(-1)[keep], flipped.max(-1)[keep], atol=0.5)
    # ... while the colours of the subject's left and right parts swap
    for right, left in (("right_eye", "left_eye"), ("right_brow", "left_brow")):
        ids = list(PARTS[right][0])
        x, y = np.round((mirrored[ids[1]] + mirrored[ids[2]]) / 2).astype(int)
        np.testing.assert_allclose(drawn[y, x], PARTS[right][2], atol=2)
        np.testing.assert_allclose(flipped[y, x], PARTS[left][2], atol=2)
    # OpenCV: the union masks match
    cv_drawn = draw_landmarks(mirrored, SIZE).max(-1)
    cv_flipped = draw_landmarks(real_points, SIZE)[:, ::-1].max(-1)
    assert iou((cv_drawn > 127) & keep, (cv_flipped > 127) & keep) > 0.9


def test_draw_overlay(real_points, portrait):
    image = cv2.resize(cv2.imread(str(portrait))[:, :, ::-1], (SIZE, SIZE))
    before = image.copy()
    face = FaceLandmarks(real_points, np.array([60, 60, 200, 220], np.float32), 1.0)
    out = draw_overlay(image, face)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # input untouched
    changed = np.abs(out.astype(int) - image).sum(-1) > 0
    x, y = np.round(real_points).astype(int).T
    assert changed[y, x].mean() > 0.9          # every landmark is marked
    assert changed[60, 130] and changed[140, 200]  # box edges
    assert changed.mean() < 0.3                # the portrait is still visible
    both = draw_overlay(image, [real_points, real_points + 20], points=False, box=False)
    assert both.shape == image.shape
    with pytest.raises(ValueError):
        draw_overlay(image[..., 0], real_points)
