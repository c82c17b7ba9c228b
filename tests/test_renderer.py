"""The photo renderer: photo-space warp, region crops in prepared sets, region networks, trainer, avatar."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact import io
from reenact.photowarp import PhotoWarp
from reenact.regions import MOUTH, crop_region, draw_region, opening, region_matrix

TINY = ["model.g_width=8", "model.e_base=8", "model.d_base=8", "model.embed_dim=32"]


@pytest.fixture(scope="module")
def photo(portrait):
    from reenact.landmarks import create_detector

    img = io.read_image(portrait)
    return img, create_detector("dlib").detect_one(img).points.astype(np.float32)


def _face_box(points, shape):
    lo, hi = points.min(0).astype(int), points.max(0).astype(int)
    return slice(max(lo[1], 0), min(hi[1], shape[0])), slice(max(lo[0], 0), min(hi[0], shape[1]))


def _laplacian_var(img):
    import cv2

    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_photowarp_at_own_landmarks_returns_the_photo(photo):
    img, pts = photo
    out = PhotoWarp(pts).warp(img, pts)
    box = _face_box(pts, img.shape)
    assert np.abs(out[box].astype(int) - img[box]).mean() < 1.0
    assert out.shape == img.shape


def test_photowarp_union_mask_leaves_no_second_outline_when_the_head_moves(photo):
    """A head moved sideways by 0.3 of the face's width: near the face the warp is the photo shifted. Where the photo's
    face was and the target's is not, the "target" mask keeps the photo's own face (a second jaw beside the moved
    one); the "union" mask warps it too, so it matches the shifted photo there."""
    from reenact.crop import face_mask

    img, pts = photo
    H, W = img.shape[:2]
    dx = int(round(0.3 * float(pts[:, 0].max() - pts[:, 0].min())))
    dst = pts + np.float32([dx, 0])
    shifted = np.empty_like(img)
    shifted[:, dx:], shifted[:, :dx] = img[:, :-dx], img[:, :1]
    # the strip the face leaves: inside the photo's face mask, outside the target's
    strip = (face_mask(pts, (H, W)) > 0.9) & (face_mask(dst, (H, W)) < 0.1)
    assert strip.sum() > 200
    err = {}
    for mask in ("target", "union"):
        out = PhotoWarp(pts, mask=mask).warp(img, dst)
        err[mask] = np.abs(out.astype(int) - shifted)[strip].mean()
    # measured on lp_s5: 28.3 gray levels with the target mask, 0.19 with the union
    assert err["target"] > 10 and err["union"] < 2, err
    with pytest.raises(ValueError, match="face mask"):
        PhotoWarp(pts, mask="hull")


def test_photowarp_moves_the_mouth_and_leaves_the_far_photo(photo):
    img, pts = photo
    dst = pts.copy()
    dst[[65, 66, 67, 56, 57, 58], 1] += 0.1 * np.linalg.norm(pts[45] - pts[36])  # open the jaw a little
    warp = PhotoWarp(pts)
    out = warp.warp(img, dst)
    x0, y0, x1, y1 = warp.roi(dst, *img.shape[:2])
    changed = np.abs(out.astype(int) - img).sum(-1) > 0
    assert changed[y0:y1, x0:x1].any()
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()  # nothing changes outside the outer anchor ring
    # the mouth region read through the warp equals the warped photo's crop (one resampling vs two)
    m = region_matrix(dst, MOUTH)
    direct = warp.warp_region(img, dst, m, MOUTH.size)
    twice = crop_region(out, m, MOUTH.size)
    assert np.abs(direct.astype(int) - twice).mean() < 6


def test_region_crop_and_drawing(photo):
    img, pts = photo
    m = region_matrix(pts, MOUTH)
    crop = crop_region(img, m, MOUTH.size)
    assert crop.shape == (128, 128, 3)
    inner = pts[48:68] @ m[:, :2].T + m[:, 2]
    assert (inner > 8).all() and (inner < 120).all()  # the whole mouth is inside the crop
    d = draw_region(inner if False else (pts @ m[:, :2].T + m[:, 2]), MOUTH)
    assert d.shape == (3, 128, 128) and d[1].sum() > d[0].sum() > 0 or d[0].sum() == 0


def test_prepare_writes_region_crops_and_resumes(prepared_dir):
    from reenact.data.format import read_index
    from reenact.data.region_episodes import RegionClips
    from reenact.data.regions import prepare_regions, read_region_index

    keys = [r.key for r in read_index(prepared_dir)]
    index = read_region_index(prepared_dir, "mouth")
    assert sorted(index) == sorted(keys)
    assert prepare_regions(prepared_dir, ("mouth",), progress=False) == {"mouth": {}}  # nothing left to do
    assert read_region_index(prepared_dir, "mouth") == index
    clips = RegionClips(prepared_dir, "mouth")
    for c in range(len(clips)):
        assert clips.frames[c].shape[1:] == (128, 128, 3)
        assert len(clips.frames[c]) == len(clips.points[c]) == len(clips.openings[c])
        # the stored points lie on the mouth of the stored crop
        p = clips.points[c][0] @ clips.matrices[c][0][:, :2].T + clips.matrices[c][0][:, 2]
        assert np.all((p[48:68] > 0) & (p[48:68] < 128))


def test_region_generator_overfits_one_episode(prepared_dir):
    from reenact.data.region_episodes import RegionClips, RegionEpisodeOptions, RegionEpisodes, batch_to
    from reenact.models.region import RegionEmbedder, RegionGenerator

    torch.manual_seed(0)
    clips = RegionClips(prepared_dir, "mouth")
    ep = RegionEpisodes(clips, list(range(len(clips))), 1, options=RegionEpisodeOptions(augment=False, hard=1.0))
    b = batch_to(torch.utils.data.default_collate([ep[0]]), "cpu")
    tgt, warped, src = b["tgt"], b["warped"], b["src"]
    E, G = RegionEmbedder(128, 32, 8), RegionGenerator(128, 32, 8)
    opt = torch.optim.Adam(list(E.parameters()) + list(G.parameters()), lr=2e-3)
    losses = []
    for _ in range(50):
        out = G(warped, b["tgt_draw"], G.psi(E(src, b["src_draw"], b["shots"])))
        loss = (out.image - tgt).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.fixture(scope="module")
def region_checkpoint(tmp_path_factory, prepared_dir):
    from meta_learning.region_train import RegionTrainer
    from reenact.config import load_region_config

    out = tmp_path_factory.mktemp("region_run")
    cfg = load_region_config([f"data.root={prepared_dir}", f"train.out_dir={out}", "train.steps=4",
                              "train.batch_size=2", "data.num_workers=0", "data.val_fraction=0",
                              "train.val_every=4", "train.log_every=2", "train.device=cpu", *TINY])
    RegionTrainer(cfg).fit()
    return out / "best"


def test_region_checkpoint_loads_as_a_photo_renderer(region_checkpoint, photo, tmp_path):
    from reenact.api import Reenactor

    img, pts = photo
    r = Reenactor.load(region_checkpoint, device="cpu")
    assert r.renderer == "photo"
    avatar = r.personalize([img], steps=0, landmarks=[pts], progress=False)
    dst = np.stack([pts, pts + np.float32([3, -2])])
    full = avatar.render_full_batch(dst, img)
    assert full.shape == (2,) + img.shape and full.dtype == np.uint8
    crops = avatar.render_batch(avatar.source_points)
    assert crops.shape == (1, 256, 256, 3)
    # paste-back at the photo's own landmarks keeps the photo's sharpness (no 256 px round trip)
    box = _face_box(pts, img.shape)
    ratio = _laplacian_var(full[0][box]) / _laplacian_var(img[box])
    assert 0.95 <= ratio <= 1.05, ratio
    path = avatar.save(tmp_path / "me.safetensors")
    again = r.load_avatar(path)
    assert np.array_equal(again.render_full_batch(dst), full)


def test_region_finetuning_lowers_its_loss_and_round_trips(region_checkpoint, photo, tmp_path):
    from reenact.api import Reenactor

    img, pts = photo
    r = Reenactor.load(region_checkpoint, device="cpu")
    avatar = r.personalize([img], steps=12, landmarks=[pts], progress=False)
    assert avatar.mode == "FT" and len(avatar.history) == 12
    first = np.mean([h["pyramid"] for h in avatar.history[:3]])
    last = np.mean([h["pyramid"] for h in avatar.history[-3:]])
    assert last < first
    out = avatar.render_full(pts + np.float32([1, 1]))
    again = r.load_avatar(avatar.save(tmp_path / "ft.safetensors"))
    assert np.array_equal(again.render_full(pts + np.float32([1, 1])), out)


def test_mouth_opening_in_iod(photo):
    img, pts = photo
    closed = pts.copy()
    closed[[65, 66, 67]] = closed[[63, 62, 61]]
    assert opening(closed) == pytest.approx(0.0, abs=1e-6)
    opened = pts.copy()
    iod = np.linalg.norm(pts[45] - pts[36])
    opened[[65, 66, 67], 1] = opened[[63, 62, 61], 1] + 0.2 * iod
    opened[[65, 66, 67], 0] = opened[[63, 62, 61], 0]
    assert opening(opened) == pytest.approx(0.2, rel=1e-4)


def test_pipelines_render_photo_avatars_at_the_photos_resolution(region_checkpoint, photo, speech_clip, tmp_path):
    """puppeteer_video into the photo asks a photo avatar for whole frames (one resampling of the face), and the
    output has the photo's size."""
    from puppeteer import puppeteer_video
    from reenact.api import Reenactor

    img, pts = photo
    avatar = Reenactor.load(region_checkpoint, device="cpu").personalize([img], steps=0, landmarks=[pts],
                                                                         progress=False)
    calls = []
    real = avatar.render_full_batch
    avatar.render_full_batch = lambda p, *a, **k: calls.append(len(p)) or real(p, *a, **k)
    res = puppeteer_video(avatar, speech_clip, tmp_path / "out.mp4", into=img, max_frames=6, progress=False)
    assert sum(calls) == 6
    frames = list(io.read_frames(res.output))
    assert len(frames) == 6 and frames[0].shape == img.shape


def test_region_config_refuses_an_unknown_best_by():
    from reenact.config import load_region_config

    assert load_region_config(["train.best_by=score"]).train.best_by == "score"
    with pytest.raises(ValueError, match="best_by"):
        load_region_config(["train.best_by=psnr"])
