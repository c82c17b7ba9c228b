"""`reenact eval --protocol user`: full-resolution photos from the original videos, pasted-back outputs, the method
registry, the full-resolution grid."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reenact import io
from reenact.cli import main
from reenact.data.dataset import PreparedDataset
from reenact.metrics import userpath
from reenact.metrics.evaluate import EvalOptions, run_eval
from reenact.metrics.harness import PSNR_CAP


@pytest.fixture(scope="module")
def user_run(prepared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_user")
    rc = main(["eval", "--protocol", "user", "--data", str(prepared_dir), "--method", "static,warp-crop",
               "--shots", "1,2", "--frames-per-clip", "3", "--split", "all", "--out", str(out)])
    assert rc == 0
    return out


def test_user_protocol_scores_pasted_back_frames(user_run):
    res = json.loads((user_run / "results.json").read_text())
    assert res["protocol"] == "user" and len(res["clips"]) == 3
    for m in ("static", "warp-crop"):
        for k in ("1", "2"):
            e = res["results"][m][k]
            assert e["targets"] == 9 and e["hard_targets"] == 3 and e["hard_eye_targets"] == 3
            assert set(e["all"]) == set(res["metrics"]) and e["no_face"] == 0
            assert 0 < e["all"]["ssim"] < 1 and e["all"]["face_sharpness"] > 0
    for k in ("1", "2"):  # the warp follows the target landmarks; the photo held still does not
        warp, static = res["results"]["warp-crop"][k], res["results"]["static"][k]
        assert warp["all"]["ssim"] > static["all"]["ssim"] and warp["all"]["lmd"] < static["all"]["lmd"]
        assert warp["hard"]["mouth_ssim"] > static["hard"]["mouth_ssim"]
    md = (user_run / "results.md").read_text()
    assert "| warp-crop | 1 |" in md and "mouth interior PSNR" in md and "Hard-eye frames" in md


def test_grid_shows_the_face_at_the_videos_own_resolution(user_run, prepared_dir):
    """The grid's real tile is the original video's pixels, not the 64 px crop upscaled."""
    res = json.loads((user_run / "results.json").read_text())
    row = res["grid"]["1"][0]
    ds = PreparedDataset(prepared_dir)
    clip = [r.key for r in ds.records].index(row["clip"])
    frame = userpath.decode_frames(userpath.source_video(ds, clip), [row["frame"]])[row["frame"]]
    tile = userpath._face_tiles([frame], userpath.full_points(ds.meta(clip), [row["frame"]])[0])[0]
    assert min(tile.shape[:2]) > 2 * ds.size  # the face is bigger in the video than in the stored crop
    grid = io.read_image(user_run / "grid_k1.png")
    th, tw = tile.shape[:2]
    assert grid.shape[1] >= 3 * tw  # real | static | warp-crop
    found = [(y, x) for y in range(grid.shape[0] - th + 1) for x in (0, (grid.shape[1] // 3 - tw) // 2)
             if np.abs(grid[y:y + th, x:x + tw].astype(int) - tile).mean() < 1.0]
    assert found, "the real tile is not in the grid at full resolution"


def test_registered_methods_get_full_frames_and_an_oracle_scores_perfectly(prepared_dir, tmp_path, monkeypatch):
    """A method registered by name sees the photos at the video's size with landmarks in its pixels; one that
    returns the real frames scores a perfect PSNR, SSIM, interior and sharpness (so crops, frames and landmarks
    line up)."""
    ds = PreparedDataset(prepared_dir)
    real = {}  # (clip, frame) -> the real full frame, and full-frame landmarks to recognise the targets by
    for c in range(len(ds)):
        meta = ds.meta(c)
        ids = np.arange(len(meta["points"]))
        frames = userpath.decode_frames(userpath.source_video(ds, c), ids)
        for f, p in zip(ids, userpath.full_points(meta, ids)):
            real[(c, int(f))] = (frames[f], p)
    seen = []

    def oracle(opts):
        def render(photos, photo_points, target_points):
            seen.append((photos.shape, photo_points.shape))
            out = []
            for t in target_points:
                key = min(real, key=lambda kk: np.abs(real[kk][1] - t).max())
                assert np.abs(real[key][1] - t).max() < 1e-3
                out.append(real[key][0])
            h, w = photos.shape[1:3]
            assert all(o.shape[:2] == (h, w) for o in out)  # the photo's own frame size
            return np.stack(out)
        return render

    monkeypatch.setitem(userpath.METHODS, "oracle", oracle)
    userpath.register_method("static-by-name", "reenact.metrics.userpath:_static")  # imported on first use
    monkeypatch.setitem(userpath.METHODS, "static-by-name", userpath.METHODS["static-by-name"])
    opts = EvalOptions(protocol="user", methods=("oracle", "static-by-name"), shots=(2,), frames_per_clip=2,
                       split="all", progress=False, grid_rows=2)
    res = run_eval(prepared_dir, tmp_path, opts).results
    assert {s for s, _ in seen} == {(2, *ds.meta(c)["source_size"], 3) for c in range(len(ds))}
    e = res["results"]["oracle"]["2"]["all"]
    assert e["psnr"] == PSNR_CAP and e["ssim"] == pytest.approx(1.0) and e["face_sharpness"] == pytest.approx(1.0)
    assert e["interior_l1"] in (0.0, None) and e["interior_psnr"] in (PSNR_CAP, None)
    assert res["results"]["static-by-name"]["2"]["all"]["psnr"] < 40
    assert len(res["grid"]["2"]) == 2 and (tmp_path / "grid_k2.png").exists()


def test_user_protocol_options():
    assert EvalOptions(protocol="user").methods == ("static", "warp-crop")
    assert EvalOptions(protocol="self").methods == ("static", "warp")
    assert EvalOptions(protocol="user", methods=("model",)).checkpoint is None  # the bundled default
    with pytest.raises(ValueError, match="unknown method"):
        EvalOptions(protocol="user", methods=("warp",))
    with pytest.raises(ValueError, match="unknown method"):
        EvalOptions(protocol="self", methods=("warp-crop",))


@pytest.mark.slow
def test_model_method_on_the_user_path(prepared_dir, tiny_checkpoint, tmp_path):
    rc = main(["eval", "--protocol", "user", "--data", str(prepared_dir), "--method", "model", "--checkpoint",
               str(tiny_checkpoint), "--shots", "1", "--ft-steps", "1", "--frames-per-clip", "2", "--split", "all",
               "--out", str(tmp_path)])
    assert rc == 0
    e = json.loads((tmp_path / "results.json").read_text())["results"]["model"]["1"]
    assert e["targets"] == 6 and e["all"]["ssim"] is not None and e["all"]["face_sharpness"] > 0
