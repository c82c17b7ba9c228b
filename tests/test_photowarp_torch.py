"""The batched torch photo warp and render path (reenact.photowarp_torch, PhotoRenderer backend="torch") against
the numpy/OpenCV path, on CPU: a real portrait, real target landmarks from another clip's frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact import io
from reenact.crop import face_mask
from reenact.geometry import fit_similarity, transform
from reenact.photowarp import PhotoWarp
from reenact.regions import MOUTH, draw_region, region_matrix


@pytest.fixture(scope="module")
def pair(portrait, talking_clip):
    """(photo, its landmarks, (N, 68, 2) targets): a clip's landmarks moved onto the portrait by the similarity of
    its first frame, so the targets differ from the photo's by the clip's expressions and head motion."""
    import cv2

    from reenact.landmarks import create_detector

    det = create_detector("dlib")
    img = io.read_image(portrait)
    if max(img.shape[:2]) > 512:  # keep the CPU test fast
        s = 512 / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    pts = det.detect_one(img).points.astype(np.float32)
    drv = [det.detect_one(f, multiple="largest").points for f in io.read_frames(talking_clip, step=6, max_frames=6)]
    sim = fit_similarity(drv[0], pts)
    targets = np.stack([transform(np.asarray(d, np.float64), sim) for d in drv[1:]]).astype(np.float32)
    return img, pts, targets


def _face(points, shape):
    return face_mask(points, shape[:2]) > 0.5


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy().astype(np.uint8)


def test_identity_at_own_landmarks(pair):
    from reenact.photowarp_torch import TorchPhotoWarp

    img, pts, _ = pair
    out = _hwc(TorchPhotoWarp(img, pts).warp(torch.from_numpy(pts[None])))[0]
    face = _face(pts, img.shape)
    assert np.abs(out.astype(int) - img)[face].mean() < 0.5
    assert np.abs(out.astype(int) - img).max() <= 1


@pytest.mark.parametrize("topology, tol", [("target", 2.0), ("photo", 3.0)])
def test_warp_agrees_with_numpy(pair, topology, tol):
    """Per-target Delaunay (numpy's topology): within 2 gray levels in the face; the fixed photo topology (all
    on the device) moves the interiors of the triangles whose Delaunay differs: within 3."""
    from reenact.photowarp_torch import TorchPhotoWarp

    img, pts, targets = pair
    pw, tw = PhotoWarp(pts), TorchPhotoWarp(img, pts, topology=topology)
    out = _hwc(tw.warp(torch.from_numpy(targets)))
    mads = [np.abs(out[k].astype(int) - pw.warp(img, t))[_face(t, img.shape)].mean() for k, t in enumerate(targets)]
    print(topology, np.round(mads, 3))
    assert np.mean(mads) < tol, mads
    # the mouth crop read through the same map
    ms = region_matrix(targets, MOUTH)
    crops = _hwc(tw.warp_region(torch.from_numpy(targets), torch.from_numpy(ms).double(), MOUTH.size))
    for k, t in enumerate(targets):
        assert np.abs(crops[k].astype(int) - pw.warp_region(img, t, ms[k], MOUTH.size)).mean() < 3.0


def test_masks_and_drawings_match_opencv(pair):
    from reenact.photowarp_torch import draw_region_t, face_mask_t, support_t
    from reenact.renderer import SUPPORT_FEATHER, SUPPORT_GROW, support

    img, pts, targets = pair
    for t in targets[:3]:
        small = (t + 0.5) / 4 - 0.5
        shape = (-(-img.shape[0] // 4), -(-img.shape[1] // 4))
        a, b = face_mask(small, shape), face_mask_t(torch.from_numpy(small[None]), shape)[0].numpy()
        assert np.abs(a - b).mean() < 2e-3
        p = transform(t, region_matrix(t, MOUTH))
        d, dt = draw_region(p, MOUTH), draw_region_t(torch.from_numpy(p[None]), MOUTH)[0].numpy()
        assert (np.abs(d - dt)[:2] > 0.5).sum() <= 0.01 * d[1].sum()  # filled polygons
        assert (np.abs(d - dt)[2] > 0.5).sum() <= 0.1 * d[2].sum()  # 1 px contours (clipping differs)
        s = support(p, MOUTH, MOUTH.size)
        st = support_t(torch.from_numpy(p[None]), MOUTH, MOUTH.size, SUPPORT_GROW, SUPPORT_FEATHER)[0].numpy()
        assert np.abs(s - st).max() < 0.05


@pytest.fixture(scope="module")
def renderer(pair):
    from reenact.config import load_region_config
    from reenact.models.region import RegionEmbedder, RegionGenerator
    from reenact.regions import get_region
    from reenact.renderer import PhotoRenderer, embed

    img, pts, _ = pair
    torch.manual_seed(0)
    m = load_region_config().model
    E = RegionEmbedder(m.size, m.embed_dim, m.e_base).eval()
    G = RegionGenerator(m.size, m.embed_dim, m.g_width, m.g_head).eval()
    spec = get_region(m.region)
    with torch.no_grad():
        psi = G.psi(embed(E, [img], [pts], spec, m.size, "cpu"))
    return PhotoRenderer(img, pts, G, psi, spec, m.size)


def test_renderer_torch_backend_matches_numpy(renderer, pair):
    _, _, targets = pair
    assert renderer.resolve_backend() == "numpy"  # auto on a CPU
    a = renderer.render(targets[:3], backend="numpy")
    b = renderer.render(targets[:3], backend="torch")
    assert b.shape == a.shape and b.dtype == np.uint8
    for k in range(3):
        assert np.abs(a[k].astype(int) - b[k]).mean() < 3.0
    t = renderer.render(torch.from_numpy(targets[:1]), backend="torch", as_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and np.array_equal(t.numpy(), b[:1])


def test_torch_batch_equals_singles(renderer, pair):
    _, _, targets = pair
    batch = renderer.render(targets[:3], batch_size=3, backend="torch")
    singles = np.concatenate([renderer.render(targets[k:k + 1], backend="torch") for k in range(3)])
    assert np.abs(batch.astype(int) - singles).max() <= 1
