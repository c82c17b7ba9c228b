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
