"""The user-facing API (`reenact.Reenactor`, `reenact.Avatar`) and the `finetune` / `render` commands, on CPU
with a briefly meta-learned `tiny` model and a real portrait."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from reenact import io
from reenact.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def r(tiny_checkpoint):
    from reenact import Reenactor

    return Reenactor.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def photo(portrait) -> np.ndarray:
    return io.read_image(portrait)


@pytest.fixture(scope="module")
def avatar_ft(r, portrait):
    return r.personalize([portrait], steps=8, progress=False)


def test_import_is_light():
    code = ("import sys, reenact; from reenact import Reenactor; import reenact.api; "
            "print(sorted(m for m in ('torch', 'finetune', 'cv2', 'dlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_bundled_default_model_is_explained(tmp_path, monkeypatch):
    import reenact.api
    from reenact import Reenactor

    monkeypatch.setattr(reenact.api, "DEFAULT_WEIGHTS", tmp_path / "missing")  # a package without weights
    with pytest.raises(CheckpointError, match=r"no default model is bundled.*Reenactor\.load\('runs/"):
        Reenactor.load()


def test_the_default_model_is_the_photo_renderer_and_the_crop_model_has_a_name():
    from reenact import Reenactor
    from reenact.api import BUNDLED, CROP_WEIGHTS, PHOTO_WEIGHTS, default_checkpoint

    assert default_checkpoint() == PHOTO_WEIGHTS == BUNDLED["default"] == BUNDLED["photo"]
    assert BUNDLED["crop"] == CROP_WEIGHTS and (CROP_WEIGHTS / "meta.json").exists()
    assert Reenactor.load(None, "cpu").renderer == Reenactor.load("default", "cpu").renderer == "photo"
    crop = Reenactor.load("crop", "cpu")
    assert crop.renderer == "crop" and crop.resolution == 256


def test_personalize_without_steps_takes_the_models_default(portrait):
    """The photo model is feed-forward unless asked (fine-tuning it on one photo loses its mouth gain); the crop
    model keeps the paper's 100 steps."""
    from finetune.personalize import FinetuneOptions
    from reenact import Reenactor

    photo = Reenactor.load("photo", "cpu")
    assert FinetuneOptions().steps is None
    assert photo.finetune_steps == 0 and Reenactor.load("crop", "cpu").finetune_steps == 100
    a = photo.personalize([portrait], progress=False)
    assert (a.mode, a.steps) == ("FF", 0)
    b = photo.personalize([portrait], steps=2, progress=False)
    assert (b.mode, b.steps) == ("FT", 2)


def test_an_avatar_of_a_bundled_model_opens_on_it_by_its_hash(portrait, tmp_path):
    """An avatar file whose recorded base folder is gone opens on the bundled model with its weights' hash (a
    crop avatar is not given to the photo default)."""
    from finetune.avatar import read_avatar_file
    from reenact import Reenactor
    from reenact.api import open_avatar
    from safetensors.torch import save_file

    a = Reenactor.load("crop", "cpu").personalize([portrait], steps=0, progress=False)
    meta, tensors = read_avatar_file(a.save(tmp_path / "crop.safetensors"))
    meta["base_checkpoint"] = str(tmp_path / "moved" / "default")
    save_file(tensors, str(tmp_path / "moved.safetensors"), metadata=meta)
    b = open_avatar(tmp_path / "moved.safetensors", device="cpu")
    assert b.base_hash == a.base_hash and b.base.resolution == 256


def test_base_hash_is_stored_once_and_deterministic(r, tiny_checkpoint):
    from reenact.checkpoint import weights_hash
    from reenact.checkpoint import load_checkpoint

    meta = json.loads((tiny_checkpoint / "meta.json").read_text())
    assert meta["weights_sha256"] == r.base_hash
    assert weights_hash(load_checkpoint(tiny_checkpoint, train_state=False).weights) == r.base_hash


@pytest.mark.parametrize("steps", [0, 8])
def test_save_load_round_trip_renders_identically(r, portrait, avatar_ft, tmp_path, steps):
    from reenact import Avatar

    a = avatar_ft if steps else r.personalize(portrait, steps=0, progress=False)
    path = a.save(tmp_path / "me.safetensors")
    b = Avatar.load(path, r)
    c = r.load_avatar(path)
    rng = np.random.default_rng(0)
    drive = a.source_points[0][None] + rng.normal(0, 0.5, (5, 68, 2)).astype(np.float32)
    ref = a.render_batch(drive)
    assert ref.shape == (5, r.resolution, r.resolution, 3) and ref.dtype == np.uint8
    np.testing.assert_array_equal(b.render_batch(drive), ref)
    # one frame alone against the same frame in a batch of 5: oneDNN may pick another convolution algorithm for
    # another batch size, so a rounding step of 1 grey level is allowed (not more)
    assert np.abs(c.render(drive[2]).astype(int) - ref[2]).max() <= 1
    assert (b.mode, b.steps, b.shots) == (("FT", 8, 1) if steps else ("FF", 0, 1))
    np.testing.assert_array_equal(b.source_points, a.source_points)
    np.testing.assert_array_equal(b.sources[0].matrix, a.sources[0].matrix)
    assert b.sources[0].size == a.sources[0].size and b.sources[0].name == str(portrait)
    from finetune.avatar import read_avatar_metadata

    meta = read_avatar_metadata(path)
    assert meta["base_hash"] == r.base_hash and meta["landmarks"] == "ibug68"
    assert int(meta["resolution"]) == r.resolution and int(meta["steps"]) == steps
    if not steps:  # feed-forward: psi', e and the source geometry only
        assert path.stat().st_size < 8_000


def test_avatar_from_another_base_model_is_refused(r, avatar_ft, tiny_checkpoint, tmp_path):
    import torch

    from reenact import Reenactor
    from reenact.checkpoint import load_checkpoint, save_checkpoint
    from reenact.models import build_discriminator, build_embedder, build_generator

    ck = load_checkpoint(tiny_checkpoint, train_state=False)
    mods = {"E": build_embedder(ck.config.model), "G": build_generator(ck.config.model),
            "D": build_discriminator(ck.config.model, ck.meta["num_videos"])}
    ck.load_into(mods)
    with torch.no_grad():
        mods["G"].out_conv.bias.add_(0.01)  # "another training run"
    other = save_checkpoint(tmp_path / "other", mods, ck.config, {"step": 1})
    r2 = Reenactor.load(other, device="cpu")
    assert r2.base_hash != r.base_hash
    path = avatar_ft.save(tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError) as info:
        r2.load_avatar(path)
    msg = str(info.value)
    assert r.base_hash in msg and r2.base_hash in msg and "a.safetensors" in msg
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        r.load_avatar(tmp_path / "junk.safetensors")


def test_render_full_pastes_back_and_keeps_the_background(avatar_ft, photo, portrait):
    src = avatar_ft.sources[0]
    out = avatar_ft.render_full(src.points, into=photo)
    assert out.shape == photo.shape and out.dtype == np.uint8
    # The crop's footprint in the photo (plus a 2 px margin for bilinear warping): outside it nothing changes.
    from reenact.crop import invert, transform_points

    S = avatar_ft.resolution
    corners = transform_points(np.array([[0, 0], [S, 0], [0, S], [S, S]], np.float32), invert(src.matrix))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    outside = np.ones(photo.shape[:2], bool)
    outside[max(y0, 0):y1, max(x0, 0):x1] = False
    assert outside.mean() > 0.2
    np.testing.assert_array_equal(out[outside], photo[outside])
    # the face itself is replaced
    nose = src.points[27:36].mean(0).astype(int)
    patch = (slice(nose[1] - 10, nose[1] + 10), slice(nose[0] - 10, nose[0] + 10))
    assert np.abs(out[patch].astype(int) - photo[patch].astype(int)).mean() > 1
    # a path works as well as an array; another image size is refused
    np.testing.assert_array_equal(avatar_ft.render_full(src.points, into=portrait), out)
    with pytest.raises(InputError, match="paste back into the image the avatar was made from"):
        avatar_ft.render_full(src.points, into=photo[:-4])


def test_bad_render_input(avatar_ft):
    with pytest.raises(InputError, match=r"\(68, 2\)"):
        avatar_ft.render(np.zeros((67, 2)))
    with pytest.raises(InputError, match="NaN"):
        avatar_ft.render_batch(np.full((1, 68, 2), np.nan))


def test_cli_finetune_then_render(tiny_checkpoint, portrait, photo, tmp_path, capsys):
    from reenact.cli import main

    avatar = tmp_path / "me.safetensors"
    assert main(["finetune", str(portrait), "-o", str(avatar), "--checkpoint", str(tiny_checkpoint),
                 "--steps", "3", "--device", "cpu", "--no-progress"]) == 0
    assert avatar.exists()
    from finetune.avatar import read_avatar_metadata

    assert read_avatar_metadata(avatar)["steps"] == "3"
    # crop coordinates -> a video of crops
    from reenact.api import open_avatar

    a = open_avatar(avatar, device="cpu")  # finds its base checkpoint from the file
    T = 6
    drive = a.source_points[0][None] + np.linspace(-1, 1, T, dtype=np.float32)[:, None, None]
    np.save(tmp_path / "drive.npy", drive)
    out = tmp_path / "out.mp4"
    assert main(["render", str(avatar), str(tmp_path / "drive.npy"), "-o", str(out), "--fps", "25",
                 "--no-progress", "--device", "cpu"]) == 0
    info = io.probe(out)
    assert info.num_frames == T and (info.width, info.height) == (a.resolution, a.resolution)
    # full-image coordinates -> pasted into the source photo (found from the path recorded in the avatar)
    np.save(tmp_path / "drive_full.npy", a.sources[0].points[None].repeat(3, 0))
    full = tmp_path / "full.mp4"
    assert main(["render", str(avatar), str(tmp_path / "drive_full.npy"), "-o", str(full), "--full",
                 "--no-progress", "--device", "cpu"]) == 0
    info = io.probe(full)
    assert info.num_frames == 3 and (info.height, info.width) == photo.shape[:2]
    # errors are reported, not raised: a wrong landmarks file names itself; another image's landmarks too
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 2)))
    capsys.readouterr()
    assert main(["render", str(avatar), str(tmp_path / "bad.npy"), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "bad.npy" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", np.zeros((60, 2)))
    assert main(["finetune", str(portrait), "-o", str(tmp_path / "y.safetensors"), "--checkpoint",
                 str(tiny_checkpoint), "--landmarks", str(tmp_path / "short.npy"), "--steps", "0"]) == 2
    assert "short.npy" in capsys.readouterr().err
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "x.mp4").exists()


def test_warp_generator_avatar_round_trip_and_paste_back(tiny_warp_checkpoint, portrait, photo, tmp_path):
    """The warp-guided variant renders from the shots it carries in the file; save/load is exact."""
    from reenact import Avatar, Reenactor

    rw = Reenactor.load(tiny_warp_checkpoint, device="cpu")
    a = rw.personalize([portrait], steps=4, progress=False)
    assert a.source_crops is not None and a.source_crops.shape == (1, rw.resolution, rw.resolution, 3)
    path = a.save(tmp_path / "warp.safetensors")
    b = Avatar.load(path, rw)
    drive = a.source_points[0][None] + np.float32([[[1.0, -0.5]]])
    np.testing.assert_array_equal(b.render_batch(drive), a.render_batch(drive))
    # At the source's own landmarks the warp path reproduces the source crop closely (it starts from it).
    own = a.render(a.source_points[0]).astype(int)
    assert np.abs(own - a.source_crops[0].astype(int)).mean() < 40
    full = b.render_full_batch(a.sources[0].points[None], photo)
    assert full.shape == (1, *photo.shape)


def _warp_g_output(av):
    """The avatar's generator output on its own source landmarks (the blend mask of the warp-guided G)."""
    import torch

    from reenact.draw import rasterize

    p = torch.from_numpy(av.sources[0].crop_points[None].astype(np.float32))
    with torch.no_grad():
        return av.G.forward_psi(rasterize(p, av.resolution) * 2 - 1, av.psi, **av._source_inputs(p))


def test_warp_trust_finetuning_paints_less(tiny_warp_checkpoint, portrait):
    """FT with a penalty on the painted share (warp_trust) leaves the warp-guided G painting less of the crop
    than the paper's FT on the same photo, seed and steps."""
    from reenact.api import Reenactor

    r = Reenactor.load(tiny_warp_checkpoint, device="cpu")
    share = {}
    for wt in (0.0, 200.0):
        av = r.personalize([portrait], steps=15, progress=False, warp_trust=wt)
        assert av.mode == "FT" and any("synth_use" in h for h in av.history) == (wt > 0)
        out = _warp_g_output(av)
        share[wt] = float((1 - (out.aux["mask"] + 1) / 2).mean())
    assert share[200.0] < 0.9 * share[0.0], share
