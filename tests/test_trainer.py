"""Stage-1 trainer on CPU (tiny preset): over-fitting, exact resume, pickle-free checkpoints, NaN guard."""
from __future__ import annotations

import json
import math
import pickle

import cv2
import numpy as np
import pytest
import torch

from torch.utils.data import default_collate

from meta_learning.trainer import EpisodeSampler, Trainer, generate
from reenact.errors import NonFiniteLossError
from reenact.checkpoint import load_checkpoint, load_tensors, save_tensors
from reenact.errors import CheckpointError
from reenact.config import load_config


class StandInEpisodes:
    """EpisodeDataset-like: real frames of one clip (64 px), fixed random landmarks; deterministic per seed."""

    def __init__(self, clip, k: int, clips: int = 3, size: int = 64, num_frames: int = 10):
        cap = cv2.VideoCapture(str(clip))
        frames = []
        while len(frames) < num_frames:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.resize(f[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA))
        cap.release()
        assert len(frames) > k, f"{clip}: too few frames"
        self.frames = np.stack(frames)
        rng = np.random.default_rng(0)
        base = rng.uniform(size * 0.25, size * 0.75, (68, 2))
        self.points = (base + rng.normal(0, 1.0, (len(frames), 68, 2))).astype(np.float32)
        self.k, self.n = k, clips

    @property
    def num_videos(self) -> int:
        return self.n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        i, seed = item
        ids = np.random.default_rng(seed).choice(len(self.frames), self.k + 1, replace=False)
        f = self.frames[ids] if i % 2 == 0 else self.frames[ids][:, :, ::-1]  # clips differ
        return {"frames": torch.from_numpy(np.ascontiguousarray(f.transpose(0, 3, 1, 2))),
                "points": torch.from_numpy(self.points[ids]), "video_index": torch.tensor(i, dtype=torch.int64)}


class FixedEpisode:
    """Always the same episode (for over-fitting)."""

    def __init__(self, ds):
        self.item = ds[(0, 0)]
        self.num_videos = 1

    def __len__(self):
        return 1

    def __getitem__(self, item):
        return {k: v.clone() for k, v in self.item.items()}


@pytest.fixture(scope="module")
def standin(talking_clip):
    return StandInEpisodes(talking_clip, k=load_config("tiny").data.k_shots)


def _cfg(tmp_path, *extra):
    return load_config("tiny", [f"train.out_dir={tmp_path}", "train.progress=false", "train.val_every=0",
                                "train.sample_every=0", "train.log_every=1", *extra])


def test_sampler_shards_equal_one_big_batch():
    one = EpisodeSampler(7, 4, seed=3)
    r0, r1 = (EpisodeSampler(7, 2, seed=3, rank=r, world_size=2) for r in (0, 1))
    for step in range(5):
        assert r0.batch(step) + r1.batch(step) == one.batch(step)
    # resume: a sampler started at step 3 continues the same stream
    it = iter(EpisodeSampler(7, 4, seed=3, start_step=3))
    assert next(it) == one.batch(3)
    # every clip once per epoch
    stream = [i for s in range(7) for i, _ in one.batch(s)]
    assert sorted(stream[:7]) == list(range(7)) and sorted(stream[7:14]) == list(range(7))


@pytest.mark.parametrize("generator,skips", [("base", False), ("warp", False), ("warp", True)])
def test_overfits_one_episode(tmp_path, request, standin, generator, skips):
    try:  # the lead's real prepared set when available, else the stand-in (real frames, fake landmarks)
        from reenact.data.episodes import EpisodeDataset

        src = EpisodeDataset(request.getfixturevalue("prepared_dir"), k_shots=4, split="all",
                             cache_dir=tmp_path / "cache")
    except pytest.FixtureLookupError:
        src = standin
    ds = FixedEpisode(src)
    cfg = _cfg(tmp_path, "train.lr_g=2e-3", "train.lr_d=2e-3", "train.augment=false", "train.batch_size=1",
               "train.checkpoint_every=1000", f"model.generator={generator}", f"model.unet_skips={skips}")
    t = Trainer(cfg, dataset=ds, val_dataset=ds)
    before = t.validate()["l1"]
    t.fit(50)
    after = t.validate()["l1"]
    assert after < 0.5 * before, (before, after)


def test_resume_gives_identical_next_steps(tmp_path, standin):
    a = Trainer(_cfg(tmp_path / "a", "train.checkpoint_every=2", "train.ema=0.9"), dataset=standin)
    ref = dict(a.fit(4))
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["latest", "step_0000002",
                                                                                   "step_0000004"]
    del a  # "kill -9" after step 4: resume from the checkpoint of step 2 and replay steps 3, 4
    b = Trainer(_cfg(tmp_path / "b", "train.ema=0.9", f"train.resume={tmp_path / 'a' / 'checkpoints' / 'step_0000002'}"),
                dataset=standin)
    assert b.step == 2
    got = dict(b.fit(4))
    assert set(got) == {3, 4}
    for s in (3, 4):
        for k, v in ref[s].items():
            assert got[s][k] == pytest.approx(v, rel=1e-6, abs=1e-7), (s, k)
    # and the final weights agree
    ck_a = load_checkpoint(tmp_path / "a")
    ck_b = load_checkpoint(tmp_path / "b")
    for m in ("E", "G", "D", "G_ema"):
        for k, v in ck_a.weights[m].items():
            torch.testing.assert_close(ck_b.weights[m][k], v, rtol=1e-6, atol=1e-7)


def test_auto_resume_continues_in_out_dir(tmp_path, standin):
    t = Trainer(_cfg(tmp_path, "train.checkpoint_every=2"), dataset=standin)
    t.fit(2)
    t2 = Trainer(_cfg(tmp_path, "train.checkpoint_every=2"), dataset=standin)
    assert t2.step == 2
    t2.fit(3)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and "g_total" in lines[-1]["train"]
    assert lines[-1]["samples_per_s"] > 0


def test_loading_never_unpickles(tmp_path, standin, monkeypatch):
    t = Trainer(_cfg(tmp_path, "train.checkpoint_every=1"), dataset=standin)
    t.fit(1)

    def boom(*a, **k):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    ck = load_checkpoint(tmp_path)
    assert ck.step == 1 and ck.config.model.resolution == 32 and ck.meta["versions"]["torch"] == torch.__version__
    t2 = Trainer(_cfg(tmp_path, "train.checkpoint_every=1"), dataset=standin)  # auto-resume, still no pickle
    assert t2.step == 1
    for k, v in t.G.state_dict().items():
        torch.testing.assert_close(t2.G.state_dict()[k], v)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, standin, monkeypatch):
    import meta_learning.trainer as tr

    cfg = _cfg(tmp_path, "train.checkpoint_every=2")
    t = Trainer(cfg, dataset=standin)
    real = tr.feature_matching
    calls = {"n": 0}

    def poisoned(r, f):
        calls["n"] += 1
        out = real(r, f)
        if calls["n"] == 3:  # step 3
            out["fm"] = out["fm"] * float("nan")
        return out

    monkeypatch.setattr(tr, "feature_matching", poisoned)
    good = {k: v.clone() for k, v in t.G.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(generator update\): non-finite loss fm=nan.*step_0000002"):
        t.fit(10)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_0000002"]
    ck = load_checkpoint(tmp_path)
    assert ck.step == 2 and all(torch.isfinite(v).all() for v in ck.weights["G"].values())
    assert all(torch.isfinite(p).all() for p in t.G.parameters())  # the bad update was never applied
    assert any(not torch.equal(good[k], v) for k, v in t.G.state_dict().items())


def test_checkpoint_shards_and_bfloat16(tmp_path):
    big = {"a": torch.randn(3, 1000, 1000), "b": torch.arange(10), "c": torch.randn(100)}
    (tmp_path / "one").mkdir()
    assert save_tensors(tmp_path / "one", "model", big) == ["model.safetensors"]  # the default: one file, any size
    assert torch.equal(load_tensors(tmp_path / "one", "model")["a"], big["a"])
    files = save_tensors(tmp_path, "model", big, max_file_bytes=5 * 1024 * 1024)
    assert "model.index.json" in files and all((tmp_path / f).stat().st_size <= 5 * 1024 * 1024 + 4096
                                               for f in files)
    back = load_tensors(tmp_path, "model")
    for k, v in big.items():
        assert torch.equal(back[k], v)


def test_bfloat16_state_resumes_approximately(tmp_path, standin):
    t = Trainer(_cfg(tmp_path / "a", "train.checkpoint_every=2", "train.state_dtype=bfloat16",
                     "train.shard_mb=0.05"), dataset=standin)
    t.fit(2)
    ck = load_checkpoint(tmp_path / "a")
    assert (ck.path / "model.index.json").exists() and not (ck.path / "model.safetensors").exists()  # shard_mb
    assert ck.weights["G"]["P.parametrizations.weight.original"].dtype == torch.bfloat16
    assert ck.train_state["opt_g.0.step"].dtype == torch.float32  # counters stay exact
    t2 = Trainer(_cfg(tmp_path / "b", f"train.resume={tmp_path / 'a'}"), dataset=standin)
    assert t2.step == 2 and next(t2.G.parameters()).dtype == torch.float32
    for k, v in t.G.state_dict().items():
        torch.testing.assert_close(t2.G.state_dict()[k], v, rtol=1e-2, atol=1e-2)


def test_samples_and_validation_written(tmp_path, standin):
    cfg = load_config("tiny", [f"train.out_dir={tmp_path}", "train.progress=false", "train.val_every=2",
                               "train.sample_every=2", "train.log_every=2", "train.checkpoint_every=2"])
    t = Trainer(cfg, dataset=standin, val_dataset=standin)
    t.fit(2)
    png = tmp_path / "samples" / "step_0000002.png"
    from PIL import Image

    img = np.asarray(Image.open(png))
    assert img.shape == (2 * 32, 4 * 32, 3)  # 2 episodes x (source | landmarks | generated | target)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if "val" in r]
    assert val and val[0]["step"] == 2 and 0 < val[0]["val"]["l1"] < 2


def test_command_line_parses_preset_and_overrides():
    from meta_learning.train import parse

    cfg = parse(["--preset", "small", "data.root=/x", "train.batch_size=3", "model.spectral_norm=false"])
    assert cfg.data.root == "/x" and cfg.train.batch_size == 3 and cfg.model.spectral_norm is False
    assert cfg.model.resolution == 256 and cfg.data.k_shots == 8


def test_random_shots_and_init_from_weights(tmp_path, standin):
    """``train.shots_min``: steps see k in [shots_min, K] shots, reproducibly; ``train.init_weights``: a new run
    starts from a checkpoint's weights at step 0 with fresh optimisers."""
    a = Trainer(_cfg(tmp_path / "a", "train.shots_min=1", "model.generator=warp", "train.checkpoint_every=2",
                     "train.ema=0.5"), dataset=standin)
    ks = [a.shots(s) for s in range(200)]
    assert set(ks) == set(range(1, a.K + 1)) and ks == [a.shots(s) for s in range(200)]
    logs = dict(a.fit(2))
    assert all(math.isfinite(v) for v in logs[2].values())
    b = Trainer(_cfg(tmp_path / "b", "model.generator=warp",
                     f"train.init_weights={tmp_path / 'a' / 'checkpoints' / 'step_0000002'}"), dataset=standin)
    assert b.step == 0 and not b.opt_g.state
    for (n, p), q in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        assert torch.equal(p, q), n
    with pytest.raises(CheckpointError, match="model config differs"):
        Trainer(_cfg(tmp_path / "c", f"train.init_weights={tmp_path / 'a' / 'checkpoints' / 'step_0000002'}"),
                dataset=standin)
    # an exported model (EMA copies of E and G only, fp16, like the bundled default) starts a run too
    from reenact.checkpoint import export_checkpoint, load_checkpoint

    exported = export_checkpoint(tmp_path / "a" / "checkpoints" / "step_0000002", tmp_path / "exported")
    assert set(load_checkpoint(exported).weights) == {"E_ema", "G_ema", "D"}
    c = Trainer(_cfg(tmp_path / "d", "model.generator=warp", f"train.init_weights={exported}"), dataset=standin)
    for (n, p), q in zip(a.G_ema.state_dict().items(), c.G.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-3, rtol=1e-2), n
    assert not all(torch.equal(p, q) for p, q in zip(a.G.state_dict().values(), c.G.state_dict().values()))



def test_warp_regularisers_are_logged_and_act(tmp_path, standin):
    """``loss.flow_tv_weight`` / ``loss.warp_trust_weight`` add the warp-guided G's ``reg`` outputs: they are
    logged, and heavy weights leave a smoother residual flow and a smaller share of the synthesis branch than the
    same run without them."""
    ds = FixedEpisode(standin)

    def run(name, *extra):
        t = Trainer(_cfg(tmp_path / name, "model.generator=warp", "train.lr_g=2e-3", "train.augment=false",
                         "train.batch_size=1", "train.checkpoint_every=1000", *extra), dataset=ds)
        logs = dict(t.fit(12))[12]
        frames, lmk, points, _ = t.prepare(default_collate([ds[(0, 0)]]), t.step, augment=False)
        e, _ = t.E(frames[:, :t.K], lmk[:, :t.K])
        out = generate(t.G, lmk[:, t.K], e, frames[:, :t.K], points)  # measured by the trained G either way
        return logs, {k: float(v.detach()) for k, v in out.reg.items()}

    plain_logs, plain = run("plain")
    assert "flow_tv" not in plain_logs and "synth_use" not in plain_logs  # off by default: loss unchanged
    reg_logs, reg = run("reg", "loss.flow_tv_weight=50", "loss.warp_trust_weight=50")
    assert math.isfinite(reg_logs["flow_tv"]) and math.isfinite(reg_logs["synth_use"])
    assert plain["flow_tv"] > 0 and reg["flow_tv"] < 0.5 * plain["flow_tv"], (plain, reg)
    assert reg["synth_use"] < plain["synth_use"], (plain, reg)


def test_identity_and_perceptual_content_terms_train(tmp_path, tmp_path_factory, standin, monkeypatch):
    """``loss.content`` with the wheel-shipped networks (extra `losses`): both terms logged, finite, weighted."""
    from reenact import pretrained

    if not (pretrained.available("sface") and pretrained.available("efficientnet")):
        pytest.skip("optional extra `losses` not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))  # converted once a session
    t = Trainer(_cfg(tmp_path, "loss.content=[pyramid,identity,efficientnet]", "train.batch_size=2",
                     "train.checkpoint_every=1000"), dataset=standin)
    assert {"identity", "efficientnet"} <= set(t.weights)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: two threads on a busy 2-core machine wait on each other
    try:
        logs = dict(t.fit(2))[2]
    finally:
        torch.set_num_threads(n)
    assert math.isfinite(logs["identity"]) and 0 <= logs["identity"] <= 2 and math.isfinite(logs["efficientnet"])
