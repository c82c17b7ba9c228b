"""`reenact eval --protocol speech`: audio drives the first frame's landmarks of real held-out clips; mouth distance,
AV sync by the shipped lip-sync expert and blink rates come out sensible, deterministic and in the report files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reenact import io
from reenact.cli import main
from reenact.errors import InputError
from reenact.metrics.evaluate import EvalOptions, run_eval

# A held-out identity's clip (PreparedDataset.split(None, 0.1)) of 7 s with clear speech (as in test_audio.py).
SYNC_CLIP = "videos/pc52/pc_Pose_Source_796100172.mp4"


@pytest.fixture(scope="module")
def speech_run(prepared_dir, tmp_path_factory):
    """The protocol on the tiny set's held-out split: its 2 clips of held-out identities (2 s each)."""
    out = tmp_path_factory.mktemp("eval_speech")
    rc = main(["eval", "--protocol", "speech", "--data", str(prepared_dir), "--grid-rows", "2", "--out", str(out)])
    assert rc == 0
    return out


def test_speech_protocol_reports_mouth_sync_and_blinks(speech_run):
    res = json.loads((speech_run / "results.json").read_text())
    assert res["protocol"] == "speech" and len(res["clips"]) == 2 and res["split"] == "val"
    r = res["results"]
    # the model's mouth follows the audio that drove it: near offset 0 and more confident than real tracks
    # scored against another person's speech
    gen = [c["tracks"]["generated"]["av_offset"] for c in res["per_clip"]]
    assert max(abs(o) for o in gen) <= 3 and min(abs(o) for o in gen) <= 1, gen
    assert r["generated"]["av_conf"] > r["real_shuffled"]["av_conf"] >= 0 and r["real"]["av_conf"] > 0
    for name in ("real", "generated", "real_shuffled"):
        assert -15 <= r[name]["av_offset"] <= 15 and 0 <= r[name]["in_sync"] <= 1
    # mouth distances in inter-ocular units: a few percent of the eye distance, never zero
    for name in ("generated", "generated_shuffled", "still"):
        assert 0.005 < r[name]["mouth_lmd"] < 0.3, (name, r[name])
        assert -1 <= r[name]["opening_corr"] <= 1
    assert r["generated"]["blinks_per_min"] >= 0 and r["real"]["blinks_per_min"] >= 0
    assert r["real"]["minutes"] == pytest.approx(sum(c["frames"] for c in res["per_clip"]) / 25 / 60, rel=0.05)
    per = res["per_clip"][0]
    assert per["frames"] >= 45 and set(per["tracks"]) == set(res["tracks"])
    md = (speech_run / "results.md").read_text()
    assert "| generated | own |" in md and "| real | other clip's (shuffled) |" in md
    grid = io.read_image(speech_run / "grid_speech.png")
    assert grid.shape[1] == 3 * 64 and grid.shape[0] > 2 * 64  # real | real landmarks | generated, 2 rows
    video = next(speech_run.glob("speech_*.mp4"))
    assert io.probe(video).num_frames == per["frames"] and len(io.read_audio(video, 16000)) > 16000


def test_real_speech_is_in_sync_and_shuffled_speech_is_not(data_dir):
    """The protocol's per-clip metrics on a real 7 s held-out clip: its own audio gives offset ~0 and a higher
    confidence than another person's speech; the speech-driven track is in sync with the audio that drove it."""
    from puppeteer.audio.speak import speech_tracker
    from reenact.landmarks import create_detector
    from reenact.landmarks.track import track_frames
    from reenact.metrics.speech import clip_metrics, clip_tracks
    from reenact.metrics.sync import load_expert

    path = data_dir / SYNC_CLIP
    fps = float(io.probe(path).fps)
    track = track_frames(io.read_frames(path), create_detector("dlib"), fps=fps, fill=False, smooth=False)
    valid = np.asarray(track.valid, bool)
    points = track.fill_missing().smooth().points
    audio = io.read_audio(path, 16000)
    other = io.read_audio(data_dir / "audio" / "mt_eng.wav", 16000)[5 * 16000:]  # another person, speaking
    tracks, n = clip_tracks(points, valid, int(np.flatnonzero(valid)[0]), audio, other, fps, speech_tracker(), 0)
    m = clip_metrics(tracks, valid[:n], audio, other, fps, load_expert("default"))
    assert abs(m["real"]["av_offset"]) <= 1 and abs(m["generated"]["av_offset"]) <= 1
    assert m["real"]["av_conf"] > m["real_shuffled"]["av_conf"] + 0.02
    assert m["generated"]["mouth_lmd"] < 0.15 and m["generated"]["minutes"] == pytest.approx(n / fps / 60)


def test_speech_protocol_is_deterministic(prepared_dir, tmp_path):
    opts = EvalOptions(protocol="speech", split="all", clips=1, seed=4, progress=False, grid_rows=1)
    a = run_eval(prepared_dir, tmp_path / "a", opts).results  # the speech renderer named by speech.DEFAULT_TRACKER
    from puppeteer.audio.speak import speech_tracker

    b = run_eval(prepared_dir, tmp_path / "b", opts, speech_tracker=speech_tracker()).results  # given explicitly
    assert a["results"] == b["results"] and a["clips"] == b["clips"]
    # one clip: the shuffled audio is its own speech half a clip away
    assert np.isfinite(a["results"]["real_shuffled"]["av_conf"])


def test_speech_protocol_renders_with_a_checkpoint(prepared_dir, tiny_checkpoint, tmp_path):
    opts = EvalOptions(protocol="speech", clips=1, checkpoint=str(tiny_checkpoint), progress=False,
                       frames_per_clip=2, grid_rows=1)
    res = run_eval(prepared_dir, tmp_path, opts).results
    rendered = res["rendered"]
    assert rendered["clips"] == 1 and 0 < rendered["ssim"] <= 1 and rendered["psnr"] > 5
    assert rendered["per_clip"][0]["targets"] == 2
    assert io.read_image(tmp_path / "grid_speech.png").shape[1] == 4 * 64  # + rendered
    assert "## Rendered by the model" in (tmp_path / "results.md").read_text()


def test_speech_protocol_options():
    with pytest.raises(InputError, match="lip-sync expert"):
        EvalOptions(protocol="speech", sync_checkpoint=None)
    assert EvalOptions(protocol="speech", methods=("model",)).protocol == "speech"  # methods unused there
    from reenact.metrics.speech import shuffle_partner

    assert shuffle_partner(0, ["a", "a", "b"]) == 2 and shuffle_partner(2, ["a", "a", "b"]) == 0
    assert shuffle_partner(0, ["a", "a"]) == 1 and shuffle_partner(0, ["a"]) is None
