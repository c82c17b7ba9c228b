"""`make demo` and the built-in motion scripts it plays (puppeteer.motion_script). No ../shared data needed."""
from __future__ import annotations

import numpy as np
import pytest

from puppeteer.audio.data import RIGID, canonicalize
from puppeteer.motion_script import (KINDS, PRESETS, Gesture, Script, motion_script, num_frames,
                                     script_curves)
from puppeteer.retarget import eye_distance, eye_openness, mouth_opening, mouth_width
from reenact.geometry import fit_similarity

LIDS = np.array([37, 38, 40, 41, 43, 44, 46, 47])
NOT_LIDS = np.setdiff1d(np.arange(68), LIDS)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's 68 landmarks (scikit-image ships the photo; dlib finds them offline)."""
    from skimage import data

    from reenact.landmarks import create_detector

    return create_detector("dlib").detect_one(data.astronaut()).points.astype(np.float64)


def _canon(track: np.ndarray) -> np.ndarray:
    """The track in the face's canonical frame (of its first frame): eye distance 1, head motion kept."""
    m = canonicalize(track[0]).to_canonical[0]
    return np.einsum("ij,tnj->tni", m[:, :2], track) + m[:, 2]


# ------------------------------------------------------------------------------------------- motion script

def test_a_script_starts_and_ends_on_the_face_and_is_deterministic(face):
    a = motion_script(face, 4.0, 25.0, seed=3)
    assert a.shape == (100, 68, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], face.astype(np.float32))   # chains onto the face without a jump
    np.testing.assert_array_equal(a[-1], face.astype(np.float32))
    np.testing.assert_array_equal(a, motion_script(face, 4.0, 25.0, seed=3))
    b = motion_script(face, 4.0, 25.0, seed=4)
    assert np.abs(a - b).max() > 0.5                                 # the seed sets the idle head drift ...
    np.testing.assert_array_equal(motion_script(face, 4.0, 25.0, seed=3, idle=0),
                                  motion_script(face, 4.0, 25.0, seed=4, idle=0))  # ... and nothing else
    assert len(motion_script(face, 2.0, 30.0, script="nod")) == num_frames(2.0, 30.0) == 60


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_smooth_in_time(face, name):
    """Low frame-to-frame speed and acceleration (eye distances per frame, per frame^2 at 25 fps), eyelids
    allowed a blink's speed; and the curves are smooth, not merely small: at twice the frame rate the
    acceleration per frame^2 drops about fourfold (a jump or a kink would not shrink)."""
    tr = _canon(motion_script(face, 4.0, 25.0, seed=1, script=name))
    speed = np.linalg.norm(np.diff(tr, axis=0), axis=-1)
    acc = np.linalg.norm(np.diff(tr, 2, axis=0), axis=-1)
    assert speed[:, NOT_LIDS].max() < 0.06, speed[:, NOT_LIDS].max()
    assert acc[:, NOT_LIDS].max() < 0.02, acc[:, NOT_LIDS].max()
    assert acc[:, LIDS].max() < 0.08
    fast = _canon(motion_script(face, 4.0, 50.0, seed=1, script=name))
    acc50 = np.linalg.norm(np.diff(fast, 2, axis=0), axis=-1)[:, NOT_LIDS].max()
    if acc[:, NOT_LIDS].max() > 1e-4:
        assert acc50 < acc[:, NOT_LIDS].max() / 3


def test_the_face_keeps_its_shape_ratios(face):
    """Through the whole demo script (head turns and nods included) the person's proportions stay: the rigid
    points (eye corners, nose) keep their shape up to a similarity, and nose length, eye widths and jaw width
    stay within a few % of the eye distance."""
    tr = motion_script(face, 4.0, 25.0, seed=0).astype(np.float64)
    iod = eye_distance(tr)

    def ratios(p, d):
        return np.stack([np.linalg.norm(p[..., 30, :] - p[..., 27, :], axis=-1) / d,    # nose length
                         np.linalg.norm(p[..., 39, :] - p[..., 36, :], axis=-1) / d,    # right eye width
                         np.linalg.norm(p[..., 45, :] - p[..., 42, :], axis=-1) / d,    # left eye width
                         np.linalg.norm(p[..., 14, :] - p[..., 2, :], axis=-1) / d], -1)  # jaw width

    rel = ratios(tr, iod[:, None]) / ratios(face, eye_distance(face))
    assert np.abs(rel - 1).max() < 0.12, np.abs(rel - 1).max(0)
    m = fit_similarity(tr[:, RIGID], face[RIGID])
    aligned = np.einsum("tij,tnj->tni", m[:, :, :2], tr[:, RIGID]) + m[:, None, :, 2]
    err = np.linalg.norm(aligned - face[RIGID], axis=-1).max(1) / eye_distance(face)
    assert err.max() < 0.1, err.max()
    assert 0.9 < iod.min() / eye_distance(face) and iod.max() / eye_distance(face) < 1.05


def test_blinks_close_the_eyes_and_open_them_again(face):
    curves = script_curves("blink", 2.0, 25.0, seed=0)
    tr = motion_script(face, 2.0, 25.0, seed=0, script="blink")
    open_ = eye_openness(tr)                                   # (T, 2): ~0.33 open for the astronaut
    rest = eye_openness(face)
    shut = curves.blink >= 0.999
    assert shut.sum() >= 2
    assert np.diff(shut.astype(int)).clip(0).sum() == 2        # two separate blinks
    assert (open_[shut] < 0.1 * rest).all()                   # both eyes shut at the blinks' peaks
    away = curves.blink == 0
    assert np.allclose(open_[away], rest, rtol=0.1)            # and as open as in the photo in between
    assert open_[:, 0].argmin() in np.flatnonzero(shut)
    half = eye_openness(motion_script(face, 2.0, 25.0, seed=0, script="blink", blink_depth=0.5))
    np.testing.assert_allclose(half[shut], 0.5 * rest[None].repeat(shut.sum(), 0), rtol=0.1)  # depth: closure
    with pytest.raises(ValueError, match="blink_depth"):
        motion_script(face, blink_depth=1.5)


def test_each_gesture_does_what_it_says(face):
    iod = eye_distance(face)

    def run(kind, **kw):
        return motion_script(face, 2.0, 25.0, script=[Gesture(kind, 0.0, 2.0, **kw)], idle=0).astype(np.float64)

    sm = run("smile")
    assert (mouth_width(sm) / eye_distance(sm)).max() > 1.1 * mouth_width(face) / iod
    corners_up = (face[[48, 54], 1].mean() - face[51, 1]) - (sm[:, [48, 54], 1].mean(1) - sm[:, 51, 1])
    assert corners_up.max() > 0.04 * iod
    br = run("brows")
    gap = (br[:, 36:48, 1].mean(1, keepdims=True) - br[:, 17:27, 1]).mean(1)    # brows above the eyes
    lift = gap - (face[36:48, 1].mean() - face[17:27, 1]).mean()
    assert lift.max() > 0.05 * iod
    op = run("open")
    assert mouth_opening(op).max() > mouth_opening(face) + 0.15
    assert op[:, 8, 1].max() > face[8, 1] + 0.15 * iod              # the jaw drops with it
    nod = run("nod")
    down = (nod[:, 30, 1] - nod[:, 36:48, 1].mean(1)) - (face[30, 1] - face[36:48, 1].mean())
    peaks = np.flatnonzero((down[1:-1] > down[:-2]) & (down[1:-1] >= down[2:]))
    assert down.max() > 0.03 * iod and len(peaks) == 2                    # the nose dips twice: two nods
    turn = run("turn")
    side = (turn[:, 30, 0] - turn[:, 36:48, 0].mean(1)) - (face[30, 0] - face[36:48, 0].mean())
    assert side.max() > 0.05 * iod and side.min() < -0.05 * iod   # looks one way, then the other
    tilt = run("tilt")
    r, l_ = tilt[:, 36:42].mean(1), tilt[:, 42:48].mean(1)
    ang = np.degrees(np.arctan2(l_[:, 1] - r[:, 1], l_[:, 0] - r[:, 0]))
    r0, l0 = face[36:42].mean(0), face[42:48].mean(0)
    assert np.abs(ang - np.degrees(np.arctan2(l0[1] - r0[1], l0[0] - r0[0]))).max() > 5


def test_the_track_follows_the_face_in_any_pixel_frame(face):
    """A rotated, scaled, shifted face (e.g. crop pixels) gets the same motion, rotated, scaled and shifted."""
    a, s = np.radians(20), 2.5
    m = np.array([[s * np.cos(a), -s * np.sin(a), 40.0], [s * np.sin(a), s * np.cos(a), -7.0]])
    moved = face @ m[:, :2].T + m[:, 2]
    expect = motion_script(face, 3.0, 25.0, seed=2).astype(np.float64) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(motion_script(moved, 3.0, 25.0, seed=2), expect, atol=1e-2)


def test_scripts_and_inputs_are_checked(face):
    with pytest.raises(ValueError, match="presets: demo"):
        motion_script(face, script="dance")
    with pytest.raises(ValueError, match="unknown gesture"):
        Gesture("wink", 0.0, 1.0)
    with pytest.raises(ValueError, match="ends after"):
        Script(1.0, (Gesture("nod", 0.5, 1.0),))
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        motion_script(face[:10])
    with pytest.raises(ValueError, match="seconds"):
        motion_script(face, seconds=0)
    assert set(g.kind for g in PRESETS["demo"].gestures) == set(KINDS)   # the demo shows every gesture


# ------------------------------------------------------------------------------------------- the demo

@pytest.fixture(scope="module")
def random_warp_checkpoint(tmp_path_factory):
    """A `tiny` warp-guided model with random weights (32 px): no data, no training, for the plumbing. At
    initialisation its output is mostly the source warped to the landmarks."""
    import torch

    from reenact.checkpoint import save_checkpoint
    from reenact.config import load_config
    from reenact.models import build_discriminator, build_embedder, build_generator

    cfg = load_config("tiny", ["model.generator=warp"])
    torch.manual_seed(0)
    mods = {"E": build_embedder(cfg.model), "G": build_generator(cfg.model), "D": build_discriminator(cfg.model, 1)}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "random_warp", mods, cfg, {"step": 0})


@pytest.fixture
def one_thread():
    """One torch thread: the tiny model's many small ops otherwise wait on a descheduled second thread at every
    barrier when the machine is busy (seconds instead of milliseconds per frame)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_demo_writes_a_playable_mp4_with_speech_then_silent_motion(random_warp_checkpoint, tmp_path, capsys,
                                                                     one_thread):
    from reenact import io
    from reenact.demo import main

    rc = main(["--out", str(tmp_path), "--checkpoint", str(random_warp_checkpoint), "--device", "cpu",
               "--text", "Hi there.", "--motion-seconds", "1", "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    video = tmp_path / "demo.mp4"
    assert lines[-1] == str(video)                                       # the path is printed, last
    for name in ("astronaut_landmarks.png", "astronaut_crop.png", "astronaut_drawing.png", "demo_strip.png"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in lines
    info = io.probe(video)
    from reenact.audio.features import num_video_frames
    from puppeteer.audio.speak import load_speech

    speech_frames = num_video_frames(len(load_speech(text="Hi there.")) + 4800, 25.0)  # + 0.3 s of silence
    assert (info.width, info.height, info.fps) == (512, 512, 25.0)
    assert info.num_frames == speech_frames + 25 and speech_frames >= 20  # "Hi there." + 0.3 s, then 1 s
    assert info.has_audio
    frames = np.stack(list(io.read_frames(video)))
    assert len(frames) == info.num_frames
    audio = io.read_audio(video, 16000)
    assert abs(len(audio) - info.num_frames * 640) <= 1100               # as long as the video (AAC: 1 frame)
    speech = audio[: speech_frames * 640 - 4800]                          # before the 0.3 s tail of silence
    motion = audio[speech_frames * 640 + 1024:]
    assert np.sqrt(np.mean(speech ** 2)) > 0.02 and np.abs(motion).max() < 0.01
    # the background is the photo's, the face region changes over time
    from skimage import data

    photo = data.astronaut().astype(np.float64)
    assert np.abs(frames[:, 400:, :100].astype(np.float64) - photo[400:, :100]).mean() < 4
    assert np.abs(np.diff(frames[:, 150:260, 180:300].astype(np.float64), axis=0)).mean() > 0.05
