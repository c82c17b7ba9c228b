"""The `reenact` command line as a user meets it: every bad option refused before any work (exit 2, one line),
OS problems named with their path, and no half-written file after SIGTERM or kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reenact import io
from reenact.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def avatar_file(tiny_checkpoint, portrait, tmp_path_factory) -> Path:
    from reenact.api import Reenactor

    avatar = Reenactor.load(tiny_checkpoint, device="cpu").personalize([portrait], steps=0, progress=False)
    path = avatar.save(tmp_path_factory.mktemp("avatar") / "a.safetensors")
    np.save(path.with_suffix(".npy"), avatar.source_points[0])  # its face, in crop pixels
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a model, an avatar or speech."""
    import puppeteer.audio.speak
    import reenact.api

    def started(*a, **k):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(reenact.api.Reenactor, "load", started)
    monkeypatch.setattr(reenact.api, "open_avatar", started)
    monkeypatch.setattr(puppeteer.audio.speak, "load_speech", started)


ANIMATE = "animate {portrait} --driver {clip} --steps 0"
SPEAK = "speak {portrait} --text Hello."
OUT = "-o {tmp}/out.mp4"

# (command line, what the one line says); {tmp} is an empty folder holding file.txt and notes.npy (text)
BAD_OPTIONS = {
    "output is a folder": (f"{ANIMATE} -o {{tmp}}", "{tmp}: is a folder"),
    "output under a file": (f"{ANIMATE} -o {{tmp}}/file.txt/out.mp4", "file.txt: is not a folder"),
    "keyframe interval 0": (f"{ANIMATE} {OUT} --keyframe-interval 0",
                            "argument --keyframe-interval: must be at least 1, got 0"),
    "crf 99": (f"{ANIMATE} {OUT} --crf 99", "argument --crf: must be between 0 and 51, got 99"),
    "max frames -1": (f"{ANIMATE} {OUT} --max-frames -1", "argument --max-frames: must be at least 1, got -1"),
    "no such device": (f"{ANIMATE} {OUT} --device cuda:7", "argument --device: 'cuda:7'"),
    "rate 5000": (f"{SPEAK} {OUT} --rate 5000", "argument --rate: must be between 80 and 450, got 5000"),
    "fps 0": (f"{SPEAK} {OUT} --fps 0", "argument --fps: must be greater than 0, got 0"),
    "motion 50": (f"{SPEAK} {OUT} --motion 50", "argument --motion: must be between 0 and 1, got 50"),
    "max seconds 0": (f"lipsync {{clip}} --text Hi. {OUT} --max-seconds 0", "argument --max-seconds: must be greater"),
    "steps -3": ("finetune {portrait} -o {tmp}/a.safetensors --steps -3",
                 "argument --steps: must be at least 0, got -3"),
    "avatar onto a folder": ("finetune {portrait} -o {tmp} --steps 0", "{tmp}: is a folder"),
    "render fps 0": (f"render a.safetensors {{tmp}}/x.npy {OUT} --fps 0", "argument --fps: must be greater than 0"),
    "text as landmarks": (f"render a.safetensors {{tmp}}/notes.npy {OUT}", "notes.npy: not a .npy or .npz landmarks"),
    "shot -1": (f"puppeteer a.safetensors --driver {{clip}} {OUT} --shot -1", "argument --shot: must be at least 0"),
    "port 70000": ("app --port 70000", "argument --port: must be between 0 and 65535, got 70000"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_a_bad_option_is_refused_before_any_work_in_one_line(no_work, portrait, speech_clip, tmp_path, capsys,
                                                             case):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "notes.npy").write_text("0 1\n2 3\n")  # text, not a numpy file
    argv, expected = (t.format(tmp=tmp_path, portrait=portrait, clip=speech_clip) for t in BAD_OPTIONS[case])
    assert main(argv.split()) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert "Traceback" not in err and "allow_pickle" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "notes.npy"]  # nothing written


def _read_only_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder this process cannot write in, and why: a 0555 folder, or for root (who writes into those
    anyway) a read-only mount such as /sys."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            fd = os.open(candidate / ".probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            return candidate, e.strerror
        os.close(fd)
        os.unlink(candidate / ".probe")
    pytest.skip("no read-only folder on this machine")


def test_a_read_only_output_folder_is_named_before_any_work(no_work, portrait, speech_clip, tmp_path, capsys):
    ro, why = _read_only_folder(tmp_path)
    assert main(["animate", str(portrait), "--driver", str(speech_clip), "-o", str(ro / "out.mp4")]) == 2
    assert capsys.readouterr().err == f"reenact: error: {ro}: cannot write in this folder ({why})\n"


def test_os_errors_are_one_line_naming_the_path(monkeypatch, capsys):
    import reenact.provenance.verify

    def denied(path, max_frames=64):
        raise PermissionError(13, "Permission denied", "/data/locked.mp4")

    monkeypatch.setattr(reenact.provenance.verify, "verify", denied)
    assert main(["verify", "/data/locked.mp4"]) == 2
    assert capsys.readouterr().err == "reenact: error: /data/locked.mp4: Permission denied\n"


def test_a_strip_of_an_image_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    strip = io.write_image(tmp_path / "strip.png", np.full((3, 2000, 3), 128, np.uint8), provenance=None)
    assert main(["finetune", str(strip), "-o", str(tmp_path / "a.safetensors"), "--checkpoint",
                 str(tiny_checkpoint), "--steps", "0", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"reenact: error: {strip}: image is 2000x3 pixels: too small to find a face in (a face needs at " \
                  "least 16 pixels each way)\n"


# --------------------------------------------------------------------------------------- interruption

def _long_render(avatar_file: Path, tmp: Path, frames: int) -> list[str]:
    face = np.load(avatar_file.with_suffix(".npy"))
    pts = (face[None] + np.random.default_rng(0).normal(0, 0.3, (frames, 68, 2))).astype(np.float32)
    np.save(tmp / "track.npy", pts)
    return ["render", str(avatar_file), str(tmp / "track.npy"), "-o", str(tmp / "out.mp4"), "--device", "cpu",
            "--no-progress"]


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_render_leaves_no_temp_file_and_the_old_output(avatar_file, tmp_path, sig):
    argv = _long_render(avatar_file, tmp_path, 20_000)
    old = tmp_path / "out.mp4"
    old.write_bytes(b"the previous output")
    child = subprocess.Popen([sys.executable, "-m", "reenact.cli", *argv], cwd=REPO, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not _temp_files(tmp_path) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _temp_files(tmp_path), "the render never started writing"
        time.sleep(0.3)  # mid-render
        child.send_signal(sig)
        rc = child.wait(timeout=60)
    finally:
        child.kill()
    assert old.read_bytes() == b"the previous output"
    if sig == signal.SIGTERM:
        assert rc == 128 + signal.SIGTERM and child.stderr.read().strip() == "reenact: terminated"
        assert _temp_files(tmp_path) == []
        return
    # kill -9 cannot be caught: the temp file stays until the next write of the same output removes it
    assert rc == -signal.SIGKILL and len(_temp_files(tmp_path)) == 1
    assert main(_long_render(avatar_file, tmp_path, 3)) == 0
    assert _temp_files(tmp_path) == [] and io.probe(old).num_frames == 3
