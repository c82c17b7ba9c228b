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
