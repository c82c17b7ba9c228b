"""Speech-model training data and loop: device-resident batches equal to the reference windows and reproducible
from the seed, the feature file that trains without PyAV, and keeping the best validation's weights."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reenact.audio import features as F
from puppeteer.audio.data import Batcher, load_clips, mirror, read_features, write_features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(prepared_dir):
    return load_clips(prepared_dir, speech_only=False)


@pytest.fixture(scope="module")
def feature_file(prepared_dir, tmp_path_factory):
    return write_features(prepared_dir, tmp_path_factory.mktemp("features") / "audio.npz")


def test_batches_are_the_reference_windows(clips):
    """Without augmentation a batch holds exactly frame_windows' windows and the clip's own displacements."""
    b = Batcher(clips, 5, 20, pad=15, seed=3, augment=False)
    out = b.sample(16)
    assert out["mel"].shape == (16, 35, 20, 80) and out["disp"].shape == (16, 5, 68, 2)
    # find each sample's clip and start from its displacements, then compare the windows
    for k in range(16):
        found = False
        for c in b.clips:
            for t0 in range(c.num_frames - 4):
                if np.array_equal(out["disp"][k].numpy(), c.disp[t0:t0 + 5]):
                    ref = F.frame_windows(c.mel, 35, c.fps, 20, offset=t0 - 15)
                    assert torch.allclose(out["mel"][k], ref, atol=1e-5)
                    found = True
                    break
            if found:
                break
        assert found, k


def test_batches_are_reproducible_and_augmented(clips):
    a = Batcher(clips, 10, 20, seed=7).sample(32)
    b = Batcher(clips, 10, 20, seed=7).sample(32)
    c = Batcher(clips, 10, 20, seed=8).sample(32)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mel"], c["mel"])
    # augmentation: mirrored samples (x negated, parts swapped) and masked frequency bands occur; values stay sane
    clean = Batcher(clips, 10, 20, seed=7, augment=False).sample(32)
    assert torch.isfinite(a["mel"]).all() and a["mel"].abs().max() < 50
    masked = (a["mel"] == 0).all(dim=(1, 2)).any(-1)  # a whole band of bins zeroed in a sample
    assert 0 < int(masked.sum()) < 32
    assert (clean["mel"] == 0).all(dim=(1, 2)).any(-1).sum() == 0
    # a mirrored window is the mirror of some window of the data
    d = np.concatenate([c.disp for c in clips])
    flipped = [k for k in range(32) if not any(np.array_equal(a["disp"][k, 0].numpy(), x) for x in d)]
    assert flipped and all(any(np.allclose(mirror(a["disp"][k, 0].numpy()), x, atol=1e-6) for x in d)
                           for k in flipped[:3])


def test_feature_file_round_trip(clips, feature_file):
    back = read_features(feature_file)
    assert [c.key for c in back] == [c.key for c in clips]
    for a, b in zip(clips, back):
        assert (a.identity, a.fps, a.speech, a.held_out) == (b.identity, b.fps, b.speech, b.held_out)
        assert np.array_equal(a.valid, b.valid) and np.abs(a.disp - b.disp).max() < 1e-3
        assert torch.allclose(a.logmel, b.logmel, atol=0.02) and np.allclose(a.points, b.points, atol=1e-3)
    assert feature_file.stat().st_size < 2e6  # 6 s of speech and tracks
    with pytest.raises(Exception, match="not an audio feature file"):
        np.savez(feature_file.with_name("other.npz"), x=np.zeros(3))
        read_features(feature_file.with_name("other.npz"))


def test_training_from_a_feature_file_without_pyav(feature_file, tmp_path):
    """The GPU image has no PyAV: with the feature file, training never imports it."""
    out = tmp_path / "run"
    code = ("import sys; sys.modules['av'] = None\n"  # any `import av` now raises ImportError
            "from puppeteer.audio.train import main\n"
            f"rc = main(['--data', {str(feature_file)!r}, '--out', {str(out)!r}, '--val', 'grid18', '--no-progress',"
            " '--all-audio', 'threads=1', 'train_sync.steps=4', 'train_sync.batch_size=4', 'train_sync.val_every=2',"
            " 'train_a2l.steps=4', 'train_a2l.batch_size=2', 'train_a2l.length=10', 'train_a2l.val_every=2'])\n"
            "assert rc == 0\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_clips"] == 2 and metrics["val_clips"] == 1
    assert metrics["sync"]["steps_run"] == 4 and metrics["a2l"]["steps_per_second"] > 0


def test_the_best_validation_is_kept_and_patience_stops(prepared_dir, tmp_path):
    from puppeteer.audio.config import audio_config, load_audio_checkpoint
    from puppeteer.audio.train import _KeepBest, train_a2l

    keep = _KeepBest(patience=2)
    net = torch.nn.Linear(2, 2)
    stops = []
    for step, score in enumerate([3.0, 2.0, 2.5, 1.5, 1.6, 1.7], 1):
        with torch.no_grad():
            net.weight.fill_(step)
        stops.append(keep.update(net, score, step))
    assert stops == [False, False, False, False, False, True] and keep.step == 4 and keep.score == 1.5
    keep.restore(net)
    assert float(net.weight.detach()[0, 0]) == 4.0

    clips = load_clips(prepared_dir, speech_only=False)
    train = [c for c in clips if c.identity != "grid18"]
    val = [c for c in clips if c.identity == "grid18"]
    cfg = audio_config(["train_a2l.steps=8", "train_a2l.val_every=1", "train_a2l.batch_size=2",
                        "train_a2l.length=10", "train_a2l.patience=2", "train_a2l.lr=0.05"])
    net, run = train_a2l(cfg, train, val, tmp_path, torch.device("cpu"), progress=False)
    _, _, meta = load_audio_checkpoint(tmp_path / "a2l", "a2l")
    scores = [e["val_mouth_l2"] for e in meta["log"]]
    assert meta["step"] == run["step"] == 1 + int(np.argmin(scores))  # the saved weights are the best ones
    assert meta["best_val"] == pytest.approx(min(scores))
    assert (tmp_path / "a2l" / f"step_{meta['step']:07d}" / "model.safetensors").exists()
    if run["stopped_early"]:
        assert len(scores) - (1 + int(np.argmin(scores))) == 2 and run["steps_run"] < 8
