"""Shared fixtures: real data from ../shared/data, found relative to the repository root."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def manifest() -> list[dict]:
    with open(DATA / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "MANIFEST.tsv").exists():
        pytest.fail(f"shared data not found at {DATA} (expected ../shared/data beside the repo)")
    return DATA


@pytest.fixture(scope="session")
def talking_clip(data_dir) -> Path:
    """A short real clip with speech where a face is found on every sampled frame."""
    rows = [r for r in manifest() if r["file"].startswith("videos/") and r["has_audio"] == "1"
            and float(r["face_frames_fraction"]) >= 1.0 and 2.0 <= float(r["seconds"]) <= 6.0]
    rows.sort(key=lambda r: (int(r["width"]) * int(r["height"]), r["file"]))
    return data_dir / rows[0]["file"]


@pytest.fixture(scope="session")
def clip_512(data_dir) -> Path:
    rows = [r for r in manifest() if r["file"].startswith("videos/") and r["width"] == "512"
            and r["height"] == "512" and float(r["face_frames_fraction"]) >= 1.0]
    rows.sort(key=lambda r: r["file"])
    return data_dir / rows[0]["file"]


@pytest.fixture(scope="session")
def portrait(data_dir) -> Path:
    return data_dir / "portraits" / "lp_s5.jpg"


def three_clips() -> list[dict]:
    """Three short clips of three identities, each with a face in every sampled frame and audio."""
    rows = [r for r in manifest() if r["file"].startswith("videos/") and r["has_audio"] == "1"
            and float(r["face_frames_fraction"]) >= 1.0 and float(r["seconds"]) >= 2.0
            and int(r["width"]) <= 512]
    rows.sort(key=lambda r: (float(r["seconds"]), r["file"]))
    out, seen = [], set()
    for r in rows:
        if r["identity"] not in seen:
            seen.add(r["identity"])
            out.append(r)
        if len(out) == 3:
            break
    return out


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, data_dir) -> Path:
    """A tiny prepared dataset: 3 real clips (first 2 s each) of 3 identities, 64 px crops, every frame."""
    from reenact.data.prepare import PrepareOptions, prepare_dataset

    src = tmp_path_factory.mktemp("src")
    for r in three_clips():
        dst = src / r["identity"] / Path(r["file"]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(data_dir / r["file"])
    out = tmp_path_factory.mktemp("prepared")
    rep = prepare_dataset(src, out, PrepareOptions(size=64, frame_step=1, max_seconds=2.0, min_frames=8),
                          workers=2, progress=False)
    assert rep.done == 3, rep.skipped
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, prepared_dir) -> Path:
    """A briefly meta-learned `tiny` model (60 CPU steps on ``prepared_dir``, a few seconds): the checkpoint
    directory. For plumbing tests of stage 2 and inference, not for quality."""
    return _train_tiny(tmp_path_factory, prepared_dir, "base")


@pytest.fixture(scope="session")
def tiny_warp_checkpoint(tmp_path_factory, prepared_dir) -> Path:
    """As ``tiny_checkpoint``, with the warp-guided generator."""
    return _train_tiny(tmp_path_factory, prepared_dir, "warp")


def _train_tiny(tmp_path_factory, prepared_dir, generator: str) -> Path:
    from meta_learning.train import train
    from reenact.config import load_config

    out = tmp_path_factory.mktemp(f"tiny_run_{generator}")
    steps = 60
    cfg = load_config("tiny", [f"data.root={prepared_dir}", f"train.out_dir={out}", f"train.steps={steps}",
                               "data.val_fraction=0", "train.device=cpu", "train.progress=false",
                               "train.val_every=0", "train.sample_every=0", f"train.checkpoint_every={steps}",
                               "train.log_every=20", "train.resume=none", "train.lr_g=5e-4", "train.lr_d=5e-4",
                               f"model.generator={generator}"])
    train(cfg)
    path = out / "checkpoints" / f"step_{steps:07d}"
    assert (path / "model.safetensors").exists(), f"no checkpoint written at {path}"
    return path


@pytest.fixture(scope="session")
def identity_frames(data_dir) -> dict:
    """Real full-resolution RGB frames for identity metrics: ``same`` two frames (1.5 s apart) of one person's
    clip, ``other`` a frame of another person (the first two clips of ``three_clips()``)."""
    import numpy as np

    from reenact import io

    a, b = three_clips()[:2]
    fa = list(io.read_frames(data_dir / a["file"], start=0, step=37, max_frames=2))
    fb = next(io.read_frames(data_dir / b["file"], start=10, max_frames=1))
    return {"same": [np.ascontiguousarray(f) for f in fa], "other": np.ascontiguousarray(fb),
            "identities": (a["identity"], b["identity"])}


@pytest.fixture(scope="session")
def speech_clip(data_dir) -> Path:
    """A frontal speaker with audio whose face the detector finds confidently in every frame (a GRID corpus
    clip, 360x288, 3 s): drivers for puppeteering tests, where a borderline detection would make flaky gaps."""
    rows = [r for r in manifest() if r["file"].startswith("videos/grid") and r["has_audio"] == "1"
            and float(r["face_frames_fraction"]) >= 1.0]
    rows.sort(key=lambda r: r["file"])
    return data_dir / rows[0]["file"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): small
    networks run in milliseconds on one thread, while two threads on a busy 2-core machine wait on each other
    for seconds."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
