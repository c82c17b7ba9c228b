"""The classical warp reference: identity, exact shifts, agreement with a pure-OpenCV piecewise-affine warp on
real frames, batching and bf16 autocast."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact.crop import face_mask
from reenact.warp import (border_points, delaunay, static, triangle_index_map, warp_images, warp_opencv,
                          warp_to_landmarks)


@pytest.fixture(scope="module")
def clip(prepared_dir):
    """Stored 64 px crops of the first prepared clip and their landmarks."""
    from reenact.data.dataset import PreparedDataset

    ds = PreparedDataset(prepared_dir)
    m = ds.meta(0)
    return ds.frames(0), m["points"][m["frame_ids"]].astype(np.float32)


def _as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize("kind", ["tps", "pa"])
def test_warp_at_own_landmarks_is_identity(clip, kind):
    frames, pts = clip
    src = _as_tensor(frames[0])
    p = torch.from_numpy(pts[:1])
    out = warp_to_landmarks(src, p, p, kind)
    assert out.shape == src.shape and out.dtype == src.dtype
    assert (out - src).abs().max() < 0.05  # gray levels of 255: float32 rounding of the solve


@pytest.mark.parametrize("kind", ["tps", "pa"])
def test_shifted_landmarks_shift_the_face(clip, kind):
    """All 68 points moved by (4, 2) px: inside the face the output is the source moved by (4, 2)."""
    frames, pts = clip
    img = frames[0]
    shift = np.array([4, 2], np.float32)
    out = warp_images(img[None], pts[:1], pts[:1] + shift, kind)[0].astype(np.float64)
    # the inner face (eyes to mouth), well away from the fixed border where the warp has to bend
    inner = pts[0][17:68]
    x0, y0 = np.ceil(inner.min(0) + shift).astype(int)
    x1, y1 = np.floor(inner.max(0) + shift).astype(int)
    got = out[y0:y1, x0:x1]
    want = img[y0 - 2:y1 - 2, x0 - 4:x1 - 4].astype(np.float64)
    tol = 0.6 if kind == "pa" else 2.0  # PA is exact on a pure shift; TPS bends slightly toward the border
    assert np.abs(got - want).mean() < tol


def test_torch_warps_match_opencv_piecewise_affine_on_real_frames(clip):
    """Source frame -> landmarks of other frames of the same clip, compared inside the target face."""
    frames, pts = clip
    n = len(frames)
    diffs = {"pa": [], "tps": [], "static": []}
    for a, b in [(0, n // 2), (0, n - 1), (n // 3, n - 5)]:
        ref = warp_opencv(frames[a], pts[a], pts[b]).astype(np.float64)
        mask = face_mask(pts[b], frames.shape[1], grow=0.0, feather=0.0) > 0.5
        for kind in ("pa", "tps"):
            out = warp_images(frames[a][None], pts[a][None], pts[b][None], kind)[0].astype(np.float64)
            diffs[kind].append(np.abs(out - ref).mean(-1)[mask].mean())
        diffs["static"].append(np.abs(frames[a] - ref).mean(-1)[mask].mean())
    assert max(diffs["pa"]) < 2.0, diffs  # measured ~0.0: the same warp computed two ways
    # TPS is a different interpolant (measured 0.6-5 gray levels from PA at 256 px): closer than no warp at all
    assert np.mean(diffs["tps"]) < np.mean(diffs["static"]), diffs


def test_batch_equals_single_and_static_is_the_source(clip):
    frames, pts = clip
    idx = [0, 5, 9]
    src = torch.stack([_as_tensor(frames[0])[0]] * 3)
    sp = torch.from_numpy(np.stack([pts[0]] * 3))
    dp = torch.from_numpy(pts[idx])
    batch = warp_to_landmarks(src, sp, dp, "pa")
    for j in range(3):
        one = warp_to_landmarks(src[j:j + 1], sp[j:j + 1], dp[j:j + 1], "pa")
        assert torch.allclose(batch[j:j + 1], one, atol=1e-4)
    assert torch.equal(static(src, sp, dp), src)


def test_tps_is_solved_in_float32_under_bf16_autocast(clip):
    frames, pts = clip
    src = _as_tensor(frames[0])
    sp, dp = torch.from_numpy(pts[:1]), torch.from_numpy(pts[7:8])
    ref = warp_to_landmarks(src, sp, dp, "tps")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = warp_to_landmarks(src, sp, dp, "tps")
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 1e-3


def test_triangulation_tiles_the_crop_even_with_points_outside(clip):
    _, pts = clip
    p = pts[0].copy()
    p[8, 1] = 70.0  # chin below a 64 px crop
    p[62] = p[66]   # a closed mouth: two coincident points
    tris = delaunay(p, 64, 64)
    assert len(tris) > 100 and tris.max() < 68 + 8
    idx = triangle_index_map(np.concatenate([p, border_points(64, 64)]), tris, 64, 64)
    assert (idx >= 0).all()
    out = warp_images(np.zeros((1, 64, 64, 3), np.uint8) + 128, pts[:1], p[None], "pa")
    assert (out == 128).all()  # a flat image stays flat: no holes, no NaN


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="B, P, 2"):
        warp_to_landmarks(torch.zeros(2, 3, 8, 8), torch.zeros(1, 68, 2), torch.zeros(2, 68, 2))
    with pytest.raises(ValueError, match="unknown warp kind"):
        warp_to_landmarks(torch.zeros(1, 3, 8, 8), torch.zeros(1, 68, 2), torch.zeros(1, 68, 2), "bogus")
