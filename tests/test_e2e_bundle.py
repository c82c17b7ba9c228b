"""The end-to-end benchmark's bundle: precomputed landmarks replace dlib, and the run needs nothing else."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import REPO


def _script(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_precomputed_track_drives_like_the_tracker_and_the_bundle_runs_without_dlib(
        clip_512, portrait, tmp_path, capsys, monkeypatch):
    from puppeteer.drive import puppeteer_video
    from reenact import Reenactor
    from reenact.errors import InputError
    from reenact.landmarks.track import FaceTrack

    bench = _script("end_to_end", REPO / "benchmarks" / "end_to_end.py")
    bundle = tmp_path / "bundle"
    _script("e2e_bundle", REPO / "tools" / "e2e_bundle.py").make_bundle(bundle, clip_512, portrait, seconds=1.0)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["frames"] == 25 and meta["landmarks_s"] > 0
    assert (bundle / "driver.mp4").read_bytes() == clip_512.read_bytes()

    r = Reenactor.load(bench.random_checkpoint("tiny", tmp_path), device="cpu")
    avatar = r.personalize([bundle / "portrait.jpg"], steps=0, landmarks=[bundle / "portrait_landmarks.npy"],
                           progress=False)
    track = FaceTrack.load(bundle / "driver_track.npz")
    tracked = puppeteer_video(avatar, clip_512, tmp_path / "a.mp4", max_frames=25, progress=False)
    given = puppeteer_video(avatar, clip_512, tmp_path / "b.mp4", max_frames=25, progress=False, track=track)
    assert given.frames == tracked.frames == 25
    np.testing.assert_allclose(given.points, tracked.points, atol=1e-4)
    assert given.timings["landmarks"] == given.timings["decode"] == 0.0
    assert puppeteer_video(avatar, clip_512, tmp_path / "c.mp4", max_frames=20, progress=False,
                           track=track).frames == 20
    with pytest.raises(InputError, match="track"):  # a track too short for what is asked
        puppeteer_video(avatar, clip_512, tmp_path / "d.mp4", max_frames=40, progress=False, track=track)

    monkeypatch.setitem(sys.modules, "dlib", None)  # any import of dlib now fails
    assert bench.main(["--bundle", str(bundle), "--device", "cpu", "--preset", "tiny", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "randomly initialised" in out and "precomputed" in out and "| render |" in out
