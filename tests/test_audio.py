"""puppeteer.audio: features, canonical tracks, the shipped speech models, the AV-sync metric, natural motion, TTS,
training and the speak / lipsync pipelines -- on real clips and speech from ../shared/data."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from reenact.audio import features as F
from puppeteer.audio.data import ANIMATED, canonicalize
from reenact.geometry import fit_similarity
from reenact.metrics.landmarks import detect_blinks, eye_aspect_ratio

# A held-out identity (PreparedDataset.split(None, 0.1)) on which the shipped expert finds the sync (see the model
# card for the fraction of held-out clips where it does).
SYNC_CLIP = "videos/pc52/pc_Pose_Source_796100172.mp4"


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    """Real speech at 16 kHz, from its first word on (the recording opens with 3 s of silence)."""
    from reenact import io

    audio = io.read_audio(data_dir / "audio" / "mt_eng.wav", 16000)
    e = F.energy(audio, len(audio) // 640, 25.0)
    start = max(0, int(np.argmax(e > e.max() - 30)) - 2) * 640
    return audio[start:]


@pytest.fixture(scope="module")
def real_face(prepared_dir) -> np.ndarray:
    from reenact.data.dataset import PreparedDataset

    return PreparedDataset(prepared_dir).meta(0)["points"][0]


@pytest.fixture(scope="module")
def sync_track(data_dir):
    """(landmarks (T, 68, 2), audio 16 kHz, fps) of a real held-out clip, tracked as `reenact prepare` does."""
    from reenact import io
    from reenact.landmarks import create_detector
    from reenact.landmarks.track import track_frames

    path = data_dir / SYNC_CLIP
    info = io.probe(path)
    track = track_frames(io.read_frames(path), create_detector("dlib"), fps=info.fps, fill=False, smooth=False)
    track = track.fill_missing().smooth()
    return track.points, io.read_audio(path, 16000), float(info.fps)


# ------------------------------------------------------------------------------------------- features

def test_log_mel_frames_and_pitch():
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = F.log_mel(tone)
    assert mel.shape == (sr // F.HOP_LENGTH + 1, 80)
    # the loudest bin is one of the two whose centre frequencies are nearest 1 kHz, and far above the rest
    centres = F.mel_to_hz(np.linspace(F.hz_to_mel(0), F.hz_to_mel(8000), 82)[1:-1])
    spectrum = mel[10:-10].mean(0)
    assert abs(int(spectrum.argmax()) - int(np.abs(centres - 1000).argmin())) <= 1
    assert spectrum.max() - spectrum[60:].max() > 10  # > 40 dB
    # resampling to 16 kHz first gives the same spectrum for a 22.05 kHz input
    t2 = np.arange(22050) / 22050
    mel2 = F.log_mel((0.5 * np.sin(2 * np.pi * 1000 * t2)).astype(np.float32), 22050)
    assert abs(mel2.shape[0] - mel.shape[0]) <= 1 and int(mel2[10:-10].mean(0).argmax()) == int(mel[10:-10].mean(0).argmax())


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_frame_windows_are_centred_on_each_frame(fps):
    mel = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 80)  # value = mel frame index
    win = F.frame_windows(mel, 50, fps, window=20)
    assert win.shape == (50, 20, 80)
    for t in (10, 33, 49):
        centre = t / fps * 100  # mel frames per second
        got = win[t, :, 0].mean().item() + 0.5  # indices c-10 .. c+9
        assert abs(got - centre) <= 0.51
    # before the start: filled with the utterance minimum (silence)
    assert (F.frame_windows(mel, 1, fps, 20)[0, :10] == 0).all()


# ------------------------------------------------------------------------------------------- canonical frame

def test_canonical_frame_removes_similarity_and_has_unit_eye_distance(real_face):
    rng = np.random.default_rng(0)
    track = np.repeat(real_face[None], 20, 0).astype(np.float64)
    track[:, 62:68, 1] += np.linspace(0, 6, 20)[:, None]  # the mouth opens
    moved = []
    for k, p in enumerate(track):
        a = np.radians(rng.uniform(-20, 20))
        s = rng.uniform(0.5, 2.0)
        R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        moved.append(p @ R.T + rng.uniform(-50, 50, 2))
    c1, c2 = canonicalize(track), canonicalize(np.stack(moved))
    assert np.abs(c1.points - c2.points).max() < 1e-3
    r, l = c1.neutral[36:42].mean(0), c1.neutral[42:48].mean(0)
    assert np.allclose(r, [-0.5, 0], atol=1e-4) and np.allclose(l, [0.5, 0], atol=1e-4)
    # the opening shows up as displacement of the lower inner lip only
    d = c1.displacement
    assert d[-1, 66, 1] - d[0, 66, 1] > 0.05 and np.abs(d[:, 36:48]).max() < 0.01
    assert np.abs(c2.to_pixels(c2.points) - np.stack(moved)).max() < 1e-2
    m = fit_similarity(track[0], np.stack(moved)[0])
    assert m.shape == (2, 3)


# ------------------------------------------------------------------------------------------- shipped models

def test_speech_model_moves_the_mouth_with_speech_and_rests_in_silence(speech):
    from puppeteer.audio.speak import SpeechModel

    model = SpeechModel.load()
    audio = np.concatenate([np.zeros(16000, np.float32), speech[:3 * 16000]])
    disp = model.predict(audio, fps=25.0)
    assert disp.shape == (100, len(ANIMATED), 2)
    mouth = np.linalg.norm(disp[:, 17:], axis=-1).mean(-1)
    assert mouth[:20].mean() < 0.3 * mouth[30:].mean()  # still during the leading second of silence
    opening = disp[:, 17 + (66 - 48), 1] - disp[:, 17 + (62 - 48), 1]
    assert opening[30:].max() > 0.05  # opens by > 5 % of the eye distance while speaking
    assert np.abs(np.diff(disp[30:], axis=0)).mean() < 0.02  # smooth: small frame-to-frame steps


def test_av_sync_finds_offset_zero_and_a_known_shift(sync_track):
    from reenact.models.lipsync import LipSyncExpert

    points, audio, fps = sync_track
    expert = LipSyncExpert.load()
    r = expert.av_sync(points, audio, fps)
    assert abs(r["offset"]) <= 1 and r["confidence"] > 0.02
    assert r["median_dist"] - r["min_dist"] == pytest.approx(r["confidence"])
    late = np.concatenate([np.zeros(5 * 640, np.float32), audio])  # audio 5 frames late
    assert abs(expert.av_sync(points, late, fps)["offset"] - 5) <= 1


def test_metric_hook_is_real_with_an_expert(sync_track):
    from reenact.metrics.sync import av_sync

    points, audio, fps = sync_track
    assert av_sync(points, audio, fps)["status"] == "unavailable"
    r = av_sync(points[:100], audio, fps, checkpoint="default")
    assert r["status"] == "ok" and set(r) >= {"offset", "confidence", "min_dist", "median_dist"}


# ------------------------------------------------------------------------------------------- natural motion

def test_blinks_at_a_human_rate_and_duration(real_face):
    from puppeteer.audio.motion import add_natural_motion

    fps, T = 25.0, 1500  # 60 s
    still = np.repeat(real_face[None], T, 0)
    assert detect_blinks(eye_aspect_ratio(still), fps).rate_per_min == 0
    for seed in range(3):
        out = add_natural_motion(still, fps, seed=seed, head=False, brows=False)
        b = detect_blinks(eye_aspect_ratio(out), fps)
        assert 12 <= b.rate_per_min <= 24, (seed, b)
        assert 0.08 <= b.mean_duration_s <= 0.4


def test_motion_is_subtle_seeded_and_off_at_strength_zero(real_face, speech):
    from puppeteer.audio.data import RIGID
    from puppeteer.audio.motion import add_natural_motion

    fps, T = 25.0, 500
    still = np.repeat(real_face[None], T, 0)
    audio = speech[:T * 640]
    a = add_natural_motion(still, fps, audio, seed=1)
    assert np.array_equal(a, add_natural_motion(still, fps, audio, seed=1))
    assert not np.array_equal(a, add_natural_motion(still, fps, audio, seed=2))
    assert np.array_equal(add_natural_motion(still, fps, audio, strength=0.0), still.astype(np.float32))
    # head motion: a few degrees, a few percent, and slow
    m = fit_similarity(still[:, RIGID], a[:, RIGID])
    angle = np.degrees(np.arctan2(m[:, 1, 0], m[:, 0, 0]))
    scale = np.hypot(m[:, 0, 0], m[:, 1, 0])
    iod = np.linalg.norm(real_face[36:42].mean(0) - real_face[42:48].mean(0))
    assert 0.3 < np.abs(angle).max() < 5 and np.abs(scale - 1).max() < 0.04
    assert np.abs(np.diff(angle)).max() < 0.3  # degrees per frame
    assert np.linalg.norm(m[:, :, 2] - m[:1, :, 2], axis=-1).max() < 0.5 * iod
    # brows rise with speech energy: more during speech than a silent track gets
    quiet = add_natural_motion(still, fps, np.zeros_like(audio), seed=1, head=False, blinks=False)
    loud = add_natural_motion(still, fps, audio, seed=1, head=False, blinks=False)
    assert (still[:, 17:27, 1] - loud[:, 17:27, 1]).mean() > (still[:, 17:27, 1] - quiet[:, 17:27, 1]).mean()
    half = add_natural_motion(still, fps, audio, seed=1, strength=0.5, blinks=False)
    assert np.abs(half - still).max() < np.abs(a - still).max()


# ------------------------------------------------------------------------------------------- TTS

def test_tts_speaks_a_sentence_offline():
    from puppeteer.audio.tts import available, synthesize

    if available() is None:
        pytest.skip("no eSpeak NG (pip install 'reenact[tts]')")
    text = "The quick brown fox jumps over the lazy dog."
    audio, sr = synthesize(text)
    assert audio.dtype == np.float32 and sr > 8000
    assert 0.05 <= len(audio) / sr / len(text) <= 0.15
    assert np.sqrt(np.mean(audio ** 2)) > 0.01
    a16, sr16 = synthesize(text, sample_rate=16000)
    assert sr16 == 16000 and abs(len(a16) / 16000 - len(audio) / sr) < 0.01
    with pytest.raises(Exception, match="voice"):
        synthesize("hello", voice="no-such-voice")


# ------------------------------------------------------------------------------------------- training

def test_training_writes_loadable_checkpoints(prepared_dir, tmp_path):
    from puppeteer.audio.config import load_audio_checkpoint
    from puppeteer.audio.train import main

    out = tmp_path / "audio"
    rc = main(["--data", str(prepared_dir), "--out", str(out), "--val", "grid18", "--no-progress", "--all-audio",
               "--ship", str(tmp_path / "ship"), "threads=1", "train_sync.steps=3", "train_sync.batch_size=4",
               "train_a2l.steps=3", "train_a2l.batch_size=2", "train_a2l.length=10", "train_sync.val_every=3",
               "train_a2l.val_every=3"])
    assert rc == 0
    for kind in ("sync", "a2l"):
        net, cfg, meta = load_audio_checkpoint(out / kind, kind)
        assert meta["step"] == 3
        shipped = tmp_path / "ship" / kind / "model.safetensors"
        assert shipped.exists() and shipped.stat().st_size < 5e6
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["a2l"]["eval"]) == {"model", "model_calibrated", "mean_mouth", "shuffled_audio"}
    assert metrics["a2l"]["render_gain"] > 0
    assert "mouth L2" in (out / "MODEL_CARD.md").read_text()


# ------------------------------------------------------------------------------------------- pipelines

def _write_wav(path, samples: np.ndarray, rate: int = 16000):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def _frames_and_audio(path):
    from reenact import io

    info = io.probe(path)
    return info.num_frames, info.fps, io.read_audio(path, 16000)


def test_speak_writes_a_video_as_long_as_the_speech(tiny_checkpoint, portrait, speech, tmp_path):
    from puppeteer.audio.speak import speak

    wav = _write_wav(tmp_path / "s.wav", speech[:int(1.3 * 16000)])
    out = speak(portrait, tmp_path / "out.mp4", audio=wav, checkpoint=tiny_checkpoint, steps=0, device="cpu",
                crop=True, progress=False)
    n, fps, audio = _frames_and_audio(out.output)
    assert abs(n - 1.3 * fps) <= 1 and out.frames == n
    assert abs(len(audio) / 16000 - 1.3) < 0.1 and np.abs(audio).max() > 0.01


def test_speak_from_text_pastes_back(tiny_checkpoint, portrait, tmp_path):
    from puppeteer.audio.speak import speak
    from puppeteer.audio.tts import available

    if available() is None:
        pytest.skip("no eSpeak NG")
    from reenact import io

    out = speak(portrait, tmp_path / "t.mp4", text="Hi there.", checkpoint=tiny_checkpoint, steps=0,
                device="cpu", progress=False)
    n, fps, audio = _frames_and_audio(out.output)
    assert abs(n - out.audio_seconds * fps) <= 1
    info = io.probe(out.output)
    img = io.read_image(portrait)
    assert (info.height, info.width) == img.shape[:2] and info.audio_rate


def test_lipsync_revoices_a_video(tiny_checkpoint, talking_clip, speech, tmp_path):
    from puppeteer.audio.speak import lipsync

    wav = _write_wav(tmp_path / "n.wav", speech[:int(1.5 * 16000)])
    out = lipsync(talking_clip, tmp_path / "l.mp4", audio=wav, checkpoint=tiny_checkpoint, steps=0, device="cpu",
                  max_seconds=1.0, progress=False)
    n, fps, audio = _frames_and_audio(out.output)
    assert abs(n - 1.5 * fps) <= 1 and abs(len(audio) / 16000 - 1.5) < 0.1


def test_lipsync_with_the_default_photo_model_revoices_each_frame_in_place(speech_clip, speech, tmp_path,
                                                                         monkeypatch):
    """The default model (the photo renderer) re-voices a real clip with each video frame as the photo: the
    frame warped from its own landmarks to the lip-synced ones, the mouth painted by the mouth generator. The
    mouth changes; outside the face the video's pixels stay (codec and watermark noise only)."""
    from puppeteer.audio import speak as sp
    from reenact import io

    calls = []
    real = sp.render_into_frame
    monkeypatch.setattr(sp, "render_into_frame", lambda a, f, p, t: calls.append(type(a).__name__) or real(a, f, p, t))
    wav = _write_wav(tmp_path / "n.wav", speech[:int(1.2 * 16000)])
    res = sp.lipsync(speech_clip, tmp_path / "out.mp4", audio=wav, steps=0, device="cpu", progress=False)
    n, fps, audio = _frames_and_audio(res.output)
    assert res.frames == n == 30 and abs(len(audio) / 16000 - 1.2) < 0.1
    assert calls == ["PhotoAvatar"] * 30  # one render per frame, on that frame
    out = np.stack(list(io.read_frames(res.output))).astype(np.float32)
    src = np.stack(list(io.read_frames(speech_clip, max_frames=n))).astype(np.float32)
    assert out.shape == src.shape  # the video's own size: 1.2 s of a 3 s clip, played forward once
    diff = np.abs(out - src).mean(-1)
    pts = res.points
    lo, hi = pts[:, 48:68].min((0, 1)).astype(int), pts[:, 48:68].max((0, 1)).astype(int)
    mouth = diff[:, lo[1]:hi[1], lo[0]:hi[0]].mean((1, 2))
    flo, fhi = pts.min((0, 1)), pts.max((0, 1))
    a, b = np.maximum(flo - 0.3 * (fhi - flo), 0).astype(int), (fhi + 0.3 * (fhi - flo)).astype(int)
    outside = np.ones(diff.shape[1:], bool)
    outside[a[1]:b[1], a[0]:b[0]] = False
    rest = diff[:, outside].mean(1)
    # measured (2026-12-04): mouth 8.5-15.4 grey levels per frame, outside the face 1.5-1.7
    assert rest.max() < 2.5, rest
    assert mouth.min() > 3 * rest.max(), (mouth, rest)


def test_cli_speak_and_lipsync(tiny_checkpoint, portrait, talking_clip, speech, tmp_path):
    from reenact.cli import main

    wav = _write_wav(tmp_path / "c.wav", speech[:int(0.8 * 16000)])
    common = ["--checkpoint", str(tiny_checkpoint), "--steps", "0", "--device", "cpu", "--no-progress"]
    assert main(["speak", str(portrait), "--audio", str(wav), "-o", str(tmp_path / "a.mp4"), "--crop"] + common) == 0
    assert main(["lipsync", str(talking_clip), "--audio", str(wav), "-o", str(tmp_path / "b.mp4"),
                 "--max-seconds", "1"] + common) == 0
    for name in ("a.mp4", "b.mp4"):
        n, fps, audio = _frames_and_audio(tmp_path / name)
        assert abs(n - 0.8 * fps) <= 1 and len(audio) > 0.7 * 16000
    assert main(["speak", str(portrait), "--audio", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "x.mp4")]
                + common) == 2  # a clear error, not a traceback


def _clip_whose_face_leaves(speech_clip, path, frames: int = 20, face_frames: int = 12):
    """``frames`` of a real talking face, the last ones a grey wall (the person walked out of the picture)."""
    from reenact import io

    real = list(io.read_frames(speech_clip, max_frames=face_frames))
    empty = [np.full_like(real[0], 128)] * (frames - face_frames)
    return io.write_video(path, real + empty, io.probe(speech_clip).fps, provenance=None)


@pytest.mark.parametrize("model", ["tiny crop model", "default photo model"])
def test_lipsync_keeps_the_frames_where_the_face_has_left(model, request, speech_clip, speech, tmp_path):
    from puppeteer.audio.speak import lipsync
    from reenact import io

    tiny_checkpoint = request.getfixturevalue("tiny_checkpoint") if model.startswith("tiny") else None

    clip = _clip_whose_face_leaves(speech_clip, tmp_path / "leaves.mp4")
    wav = _write_wav(tmp_path / "n.wav", speech[:int(20 / 25 * 16000)])
    with pytest.warns(UserWarning, match=r"leaves\.mp4: no face in 8 of 20 frames \(12-19\)"):
        res = lipsync(clip, tmp_path / "out.mp4", audio=wav, checkpoint=tiny_checkpoint, steps=0, device="cpu",
                      progress=False)
    assert res.frames == 20 and res.kept.tolist() == list(range(12, 20))
    src = np.stack(list(io.read_frames(clip))).astype(np.float32)
    out = np.stack(list(io.read_frames(res.output))).astype(np.float32)
    diff = np.abs(out - src).mean(axis=(1, 2, 3))
    assert diff[12:].max() < 2.0, diff  # the wall as it was (codec and watermark noise only): no ghost face
    assert diff[:7].min() > diff[12:].max()  # while the face is there it is re-rendered
    assert np.all(np.diff(diff[6:12]) < 0.5)  # ... and fades out over the last 0.2 s before it is lost


def test_the_revoiced_face_fades_out_and_in_around_lost_frames():
    from puppeteer.audio.speak import face_weights

    found = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    assert np.allclose(face_weights(found, 2), [1, 1, 2 / 3, 1 / 3, 0, 0, 1 / 3, 2 / 3, 1, 1])
    assert face_weights(np.ones(4, bool), 2).tolist() == [1, 1, 1, 1]


def test_lipsync_decodes_only_what_the_speech_needs(tiny_checkpoint, speech_clip, speech, tmp_path):
    """A long, large video and 0.4 s of speech: a few frames are decoded and held, not the whole video."""
    import tracemalloc

    import cv2

    from puppeteer.audio.speak import lipsync
    from reenact import io

    info = io.probe(speech_clip)
    frames = [cv2.resize(f, (1280, 720)) for f in io.read_frames(speech_clip, max_frames=25)]
    long = tmp_path / "long.mp4"
    with io.VideoWriter(long, info.fps, preset="ultrafast", provenance=None) as w:
        for i in range(150):  # 6 s of 720p: 400 MB of decoded frames
            w.write(frames[i % 25])
    wav = _write_wav(tmp_path / "s.wav", speech[:int(0.4 * 16000)])
    tracemalloc.start()
    try:
        res = lipsync(long, tmp_path / "out.mp4", audio=wav, checkpoint=tiny_checkpoint, steps=0, device="cpu",
                      progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.frames == 10 and io.probe(res.output).num_frames == 10
    # the whole video would be 400 MB; what remains is a batch, a few queued frames and the watermark's working
    # set on the writer thread (~37 MB for a 720p frame), which overlaps with the paste-back of the next frames
    assert peak < 130e6, f"peak {peak / 1e6:.0f} MB of arrays for 10 frames of 2.8 MB"


def test_espeak_command_line_says_text_starting_with_a_dash(tmp_path, monkeypatch):
    """The eSpeak NG executable gets ``--`` before the text: '-v xx' in a text is said, not obeyed."""
    from puppeteer.audio import tts

    args = tmp_path / "args.txt"
    fake = tmp_path / "espeak-ng"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {args}\n"
                    f"{sys.executable} -c \"import wave,sys; w=wave.open(sys.stdout.buffer,'wb'); "
                    "w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050); w.writeframes(bytes(4410))\"\n")
    fake.chmod(0o755)
    monkeypatch.setattr(tts, "available", lambda: "espeak-ng")
    monkeypatch.setattr(tts, "_binary", lambda: str(fake))
    audio, sr = tts.synthesize("--stdout -w /tmp/x.wav hello", rate=150)
    assert sr == 22050 and len(audio) == 2205
    assert args.read_text().splitlines()[-2:] == ["--", "--stdout -w /tmp/x.wav hello"]
