"""Puppeteering on CPU: retargeting geometry on real landmark tracks, and driving the briefly trained `tiny` model
with real clips from ../shared/data (cross-identity, self-reenactment, lost faces, audio, streaming, CLI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from puppeteer.drive import Camera, drive, puppeteer_video, track_driver
from puppeteer.measure import RATIOS, jitter, shape_ratios
from puppeteer.retarget import RetargetOptions, Retargeter, choose_reference, eye_openness, mouth_opening, retarget
from reenact import io
from reenact.errors import InputError, NoFaceError
from reenact.geometry import fit_similarity, transform

FRAMES = 30  # driver frames for the rendering tests: 1.2 s at 25 fps


def _write_driver(src: Path, dst: Path, n: int = FRAMES, black: range = range(0), audio: bool = True) -> Path:
    """The first ``n`` frames of a real clip (and its audio over them) as a new mp4, ``black`` frames zeroed."""
    info = io.probe(src)
    frames = list(io.read_frames(src, max_frames=n))
    for i in black:
        frames[i] = np.zeros_like(frames[i])
    samples = io.read_audio(src, 16000)[:round(n * 16000 / info.fps)] if audio and info.has_audio else None
    return io.write_video(dst, frames, info.fps, audio=samples, audio_rate=16000)


# --------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def detector():
    from reenact.landmarks import create_detector

    return create_detector("dlib")


@pytest.fixture(scope="module")
def reenactor(tiny_checkpoint):
    from reenact import Reenactor

    return Reenactor.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def avatar(reenactor, portrait):
    return reenactor.personalize([portrait], steps=0, progress=False)


@pytest.fixture(scope="module")
def photo(portrait) -> np.ndarray:
    return io.read_image(portrait)


@pytest.fixture(scope="module")
def portrait_points(portrait, detector) -> np.ndarray:
    """The portrait's landmarks in a 256 px crop: an avatar's neutral face at a realistic resolution."""
    from reenact.crop import CropParams, box_from_points, crop_matrix, transform_points

    pts = detector.detect_one(io.read_image(portrait)).points
    return transform_points(pts, crop_matrix(box_from_points(pts, CropParams(size=256)), 256))


@pytest.fixture(scope="module")
def raw_track(talking_clip, detector):
    """100 frames (4 s) of another person speaking, tracked without smoothing."""
    return track_driver(talking_clip, detector, max_frames=100, progress=False)


@pytest.fixture(scope="module")
def driver(tmp_path_factory, speech_clip) -> Path:
    """1.2 s of another person speaking (a GRID clip), with its audio."""
    return _write_driver(speech_clip, tmp_path_factory.mktemp("drv") / "driver.mp4")


def test_options_are_checked_and_gaze_is_explained():
    with pytest.raises(ValueError, match="no pupils"):
        RetargetOptions(parts=("pose", "gaze"))
    with pytest.raises(ValueError, match="unknown part"):
        RetargetOptions(parts=("nose",))
    with pytest.raises(ValueError, match="relative' or 'absolute"):
        RetargetOptions(mode="mirror")
    assert RetargetOptions.parse_parts("all") == ("pose", "expression", "mouth", "eyes")
    assert RetargetOptions.parse_parts("pose, mouth") == ("pose", "mouth")


def test_head_pose_moves_the_avatar_by_the_same_rotation_and_scale(raw_track, portrait_points):
    ref = raw_track.points[0].astype(np.float64)
    centre = ref.mean(0)
    frames = []
    for deg, s, t in ((0, 1.0, (0, 0)), (10, 1.1, (4, -3)), (-15, 0.9, (-6, 2))):
        a = s * np.exp(1j * np.deg2rad(deg))
        lin = np.array([[a.real, -a.imag], [a.imag, a.real]])
        frames.append((ref - centre) @ lin.T + centre + t)
    out = Retargeter(portrait_points, ref)(np.stack(frames))
    # no head motion: the avatar's own face (mouth and chin take the reference's opening, see close_mouth)
    face = np.r_[0, 16, 17:48]
    np.testing.assert_allclose(out[0][face], portrait_points[face], atol=1e-3)
    # pure head motion: that face rotated and scaled like the driver's, nothing else changes
    for k, (deg, s) in enumerate(((10, 1.1), (-15, 0.9)), start=1):
        m = fit_similarity(out[0], out[k])
        scale, angle = np.hypot(m[0, 0], m[1, 0]), np.rad2deg(np.arctan2(m[1, 0], m[0, 0]))
        assert scale == pytest.approx(s, abs=1e-4) and angle == pytest.approx(deg, abs=1e-3)
        np.testing.assert_allclose(transform(out[0], m), out[k], atol=1e-3)


def test_blinks_close_the_avatars_eyes_and_its_lips_never_cross(raw_track, portrait_points):
    ref = raw_track.points[0].astype(np.float64)
    closed = ref.copy()
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):  # lids meet: a blink
        closed[[up, lo]] = (ref[up] + ref[lo]) / 2
    crossed = ref.copy()
    crossed[[61, 62, 63]], crossed[[67, 66, 65]] = ref[[67, 66, 65]] + [0, 2], ref[[61, 62, 63]] - [0, 2]
    r = Retargeter(portrait_points, ref)
    blink, pressed = r(np.stack([closed, crossed]))
    assert eye_openness(portrait_points).min() > 0.2
    np.testing.assert_allclose(eye_openness(blink), 0, atol=1e-6)
    np.testing.assert_allclose(eye_openness(r(ref)), eye_openness(portrait_points), atol=1e-6)
    assert mouth_opening(pressed) == pytest.approx(0, abs=1e-6)
    gaps = [(pressed[lo] - pressed[up])[1] for up, lo in ((61, 67), (62, 66), (63, 65))]
    assert min(gaps) >= -1e-6


def test_reference_frame_is_a_neutral_one_within_the_first_second(raw_track):
    pts = raw_track.points
    ref = choose_reference(pts, raw_track.valid, fps=25)
    first = mouth_opening(pts[:25])
    assert 0 <= ref < 25 and mouth_opening(pts[ref]) <= np.percentile(first, 25)


def test_retargeting_keeps_the_avatars_face_shape_and_follows_the_mouth(raw_track, portrait_points):
    """Cross-identity: a man's 4 s of speech drives the portrait of a woman."""
    track = raw_track.smooth()
    out, _ = retarget(portrait_points, track.points, valid=track.valid)
    own = shape_ratios(portrait_points)
    got = shape_ratios(out)
    for k in RATIOS:
        dev = float(np.abs(got[k] / own[k] - 1).max())
        assert dev < 0.03, (k, dev)
    # the driver's face geometry would not pass: absolute mode carries it over
    absolute, _ = retarget(portrait_points, track.points, RetargetOptions(mode="absolute"), valid=track.valid)
    worst = max(float(np.abs(shape_ratios(absolute)[k] / own[k] - 1).max()) for k in RATIOS)
    assert worst > 0.1, worst
    drv, ava = mouth_opening(track.points), mouth_opening(out)
    assert drv.max() > 0.1, "the driver clip should speak"
    assert np.corrcoef(drv, ava)[0, 1] > 0.8


def test_retargeting_adds_no_jitter_and_smoothing_removes_it(raw_track, portrait_points):
    raw = raw_track.points
    j_raw = jitter(raw)
    j_ret = jitter(retarget(portrait_points, raw, valid=raw_track.valid)[0])
    j_smooth = jitter(retarget(portrait_points, raw_track.smooth().points, valid=raw_track.valid)[0])
    assert j_ret <= j_raw, (j_ret, j_raw)
    assert j_smooth < 0.5 * j_raw, (j_smooth, j_raw)


# ------------------------------------------------------------------------------------------- rendering

def _audio_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Lag (samples) of b against a with the highest normalised cross-correlation, and that correlation."""
    n = min(len(a), len(b)) - 2 * max_lag
    x = a[max_lag:max_lag + n]
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        y = b[max_lag + lag:max_lag + lag + n]
        c = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
        if c > best[1]:
            best = (lag, c)
    return best


def test_cross_identity_driving_writes_the_drivers_frames_fps_and_audio(avatar, driver, photo, tmp_path):
    out = tmp_path / "cross.mp4"
    res = puppeteer_video(avatar, driver, out, into=photo, progress=False)
    info, src = io.probe(out), io.probe(driver)
    assert (info.num_frames, info.fps) == (src.num_frames, src.fps) == (FRAMES, 25.0)
    assert (info.height, info.width) == photo.shape[:2] == res.size
    assert res.held == 0 and res.frames == FRAMES
    frames = io.read_video(out)[0]
    # pasted back: far from the face the photo is untouched (up to H.264), the face moves over time
    assert np.abs(frames[:, :40, :40].astype(float) - photo[:40, :40]).mean() < 3
    assert np.abs(np.diff(res.points, axis=0)).max() > 0.05
    # audio: the driver's, same duration as the video (within a frame), in sync
    a_out, a_drv = io.read_audio(out, 16000), io.read_audio(driver, 16000)
    assert abs(len(a_out) / 16000 - FRAMES / 25) <= 1 / 25
    lag, corr = _audio_lag(a_drv, a_out, max_lag=800)
    assert abs(lag) <= 16 and corr > 0.9, (lag, corr)  # within 1 ms of the driver's audio


def test_self_reenactment_in_absolute_mode_reproduces_the_drivers_landmarks(reenactor, driver, tmp_path):
    first = next(io.read_frames(driver))
    me = reenactor.personalize([first], steps=0, progress=False)
    out = tmp_path / "self.mp4"
    opts = RetargetOptions(mode="absolute", reference=0)
    res = puppeteer_video(me, driver, out, into=first, options=opts, progress=False)
    from reenact.crop import transform_points

    expect = transform_points(res.driver_points, me.sources[0].matrix)
    np.testing.assert_allclose(res.points, expect, atol=1e-3)
    info = io.probe(out)
    assert (info.num_frames, info.width, info.height) == (FRAMES, first.shape[1], first.shape[0])


def test_frames_without_a_face_are_interpolated_and_reported(avatar, speech_clip, tmp_path):
    drv = _write_driver(speech_clip, tmp_path / "gap.mp4", black=range(5, 10))
    out = tmp_path / "gap_out.mp4"
    with pytest.warns(UserWarning, match=r"no face in 5 of 30 frames \(5-9\)"):
        res = puppeteer_video(avatar, drv, out, smooth=False, progress=False)
    assert res.missing.tolist() == [5, 6, 7, 8, 9] and res.held == 5
    assert io.probe(out).num_frames == FRAMES
    # filled by linear interpolation between the frames around the gap
    p = res.driver_points
    for t in range(5, 10):
        np.testing.assert_allclose(p[t], p[4] + (p[10] - p[4]) * (t - 4) / 6, atol=1e-3)


def test_a_driver_without_any_face_is_refused_naming_the_file(avatar, tmp_path):
    y, x = np.mgrid[0:96, 0:96]
    frames = [np.stack([(x + 3 * t) % 256, y, np.full_like(x, 128)], -1).astype(np.uint8) for t in range(8)]
    drv = io.write_video(tmp_path / "no_face_here.mp4", frames, 25)
    out = tmp_path / "never.mp4"
    with pytest.raises(NoFaceError, match="no_face_here.mp4"):
        puppeteer_video(avatar, drv, out, progress=False)
    assert not out.exists()


def test_streaming_drive_is_lazy_and_holds_the_pose_without_a_face(avatar, driver):
    frames = list(io.read_frames(driver, max_frames=14))
    for i in (8, 9):
        frames[i] = np.zeros_like(frames[i])
    pulled = []

    def source():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f

    live = drive(avatar, source())
    assert pulled == []  # nothing happens before the first output is asked for
    first = next(live)
    assert pulled == [0] and first.shape == (avatar.resolution,) * 2 + (3,) and first.dtype == np.uint8
    assert live.reference == 0
    points = [live.points]
    for _ in range(12):
        next(live)
        points.append(live.points)
    assert len(pulled) == 13 and live.missing == [8, 9]
    np.testing.assert_array_equal(points[8], points[7])  # held through the gap
    np.testing.assert_array_equal(points[9], points[7])
    assert np.abs(points[12] - points[0]).max() > 0.01


def test_no_camera_is_a_clear_error(capsys):
    from reenact.cli import main

    with pytest.raises(InputError, match="camera 7: no video capture device"):
        Camera(7)
    assert main(["puppeteer", "x.safetensors", "--camera", "7", "-o", "x.mp4"]) == 2
    assert "camera 7: no video capture device" in capsys.readouterr().err


def test_cli_animate_then_puppeteer_the_saved_avatar(tiny_checkpoint, portrait, driver, photo, tmp_path, capsys):
    from reenact.cli import main

    out, av = tmp_path / "animate.mp4", tmp_path / "me.safetensors"
    assert main(["animate", str(portrait), "--driver", str(driver), "-o", str(out), "--checkpoint",
                 str(tiny_checkpoint), "--steps", "0", "--device", "cpu", "--save-avatar", str(av),
                 "--no-progress"]) == 0
    assert f"{FRAMES} frames at 25 fps" in capsys.readouterr().out
    info = io.probe(out)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (FRAMES, photo.shape[1], photo.shape[0], True)
    crop = tmp_path / "crop.mp4"
    assert main(["puppeteer", str(av), "--driver", str(driver), "-o", str(crop), "--crop", "--parts", "mouth,eyes",
                 "--device", "cpu", "--no-progress"]) == 0
    info = io.probe(crop)
    assert (info.num_frames, info.width) == (FRAMES, 32)
    assert main(["puppeteer", str(av), "--driver", str(driver), "-o", str(crop), "--parts", "gaze",
                 "--device", "cpu"]) == 2
    assert "no pupils" in capsys.readouterr().err
