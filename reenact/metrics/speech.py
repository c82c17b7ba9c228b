"""The speech protocol of ``reenact eval``: a clip's own audio drives its first frame's landmarks; how close to the
real track, how in sync with the audio, how lively.

On the clips with speech of the held-out identities (``PreparedDataset.split(None, 0.1)``; clips whose audio is
silent or not speech-like, as ``reenact.audio.features.has_speech`` says, are left out and counted), the first stored
frame with detected landmarks is the portrait. The audio-to-landmark model (the one shipped in
``puppeteer/audio/weights/a2l`` unless another is given) drives it with the clip's audio, with natural motion
(blinks, head motion, brows; seeded), exactly as ``reenact speak`` does. That rendering is the speech stage's and
reaches this core module as an argument, a :data:`SpeechTracker` (``puppeteer.audio.speak.speech_tracker``; by
default the factory :data:`DEFAULT_TRACKER` names, imported on first use). Tracks compared ("track / audio"):

- ``real``: the clip's own landmarks with its own audio (the reference);
- ``generated``: the speech-driven track with the audio that drove it;
- ``generated_shuffled``: the model driven by another held-out clip's speech (the next clip of another person,
  looped to length), against this clip's real mouth: how much of the mouth error the audio explains;
- ``still``: the portrait held still (a closed-enough mouth that never moves);
- ``real_shuffled``: the real track against another clip's audio (sync's floor).

Metrics (means over clips unless said otherwise):

- ``mouth_lmd`` (lower is better): per frame, the track is aligned to the real one by the similarity that maps its
  rigid points (nose, eye corners) onto the real frame's; then the mean distance of the 20 mouth points divided by
  the real inter-ocular distance (``reenact.metrics.landmarks.lmd``), over frames with detected landmarks. Head
  motion is not scored: no audio determines it.
- ``opening_corr`` (higher is better): Pearson correlation of the inner-lip opening (62-66 gap / eye distance)
  with the real one, per clip.
- ``av_offset``, ``av_abs_offset``, ``in_sync``, ``av_conf``: the AV offset (frames; positive: audio late) and
  confidence (median minus minimum distance over offsets -15..15, Chung & Zisserman) from the landmark lip-sync
  expert (``reenact.metrics.sync.av_sync``); ``in_sync`` is the share of clips with ``|offset| <= 1``. Real tracks
  should give offset 0 and a high confidence, shuffled audio a low one.
- ``blinks_per_min``: blinks (eye aspect ratio below 0.75 x the track's median for >= 2 frames) per minute, pooled
  over clips (total blinks / total minutes); people blink ~15-20 times a minute when talking.

With a checkpoint the generated track is also rendered: the model is personalised on the portrait frame (one
shot, ``ft_steps``) and draws every frame; ``rendered`` then reports SSIM / PSNR to the real crops at
``frames_per_clip`` stored frames (the head pose differs from the real one, so these are low by design) and the AV
sync of landmarks detected (dlib) on the rendered frames: what the output shows, not what it was asked to draw.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from reenact.audio.features import has_speech
from reenact.errors import InputError
from reenact.landmarks.parts import MOUTH
from reenact.metrics.harness import (RIGID, EvalReport, finite_mean, grid_image, no_clips, seeded_subset,
                                     select_frames, split_clips, write_results)
from reenact.metrics.harness import fmt as _fmt_value

SAMPLE_RATE = 16000
TRACKS = ("real", "generated", "generated_shuffled", "still", "real_shuffled")
TRACK_TITLES = {"real": ("real", "own"), "generated": ("generated", "own"),
                "generated_shuffled": ("generated from another clip's speech", "other clip's"),
                "still": ("portrait held still", "-"), "real_shuffled": ("real", "other clip's (shuffled)")}
# which metrics each track has: mouth error only against a track that is not the real one; sync where there is a
# meaningful audio; blinks for the tracks with eyes of their own
_HAS = {"real": {"sync", "blinks"}, "generated": {"mouth", "sync", "blinks"}, "generated_shuffled": {"mouth"},
        "still": {"mouth"}, "real_shuffled": {"sync"}}
METRICS = ("mouth_lmd", "opening_corr", "av_offset", "av_abs_offset", "in_sync", "av_conf", "blinks_per_min")
_TITLES = {"mouth_lmd": ("mouth LMD", "{:.4f}"), "opening_corr": ("opening corr", "{:.3f}"),
           "av_offset": ("AV offset", "{:+.2f}"), "av_abs_offset": ("abs AV offset", "{:.2f}"),
           "in_sync": ("in sync", "{:.0%}"), "av_conf": ("AV conf", "{:.3f}"),
           "blinks_per_min": ("blinks/min", "{:.1f}")}
BLINK_RELATIVE = 0.75

SpeechTracker = Callable[[np.ndarray, np.ndarray, float, int, int], np.ndarray]
"""``track(portrait, audio, fps, sample_rate, seed) -> (T, 68, 2)``: the landmark track that mono ``audio`` drives
for one face's ``portrait`` (68, 2) landmarks (pixels), with seeded natural motion."""
DEFAULT_TRACKER = "puppeteer.audio.speak:speech_tracker"
"""``"module:function"`` of the factory ``f(speech_model checkpoint or None) -> SpeechTracker`` used when none
is given: the speech stage's audio-to-landmark pipeline, imported on first use (the front door, ``reenact eval``,
offers the stage; this package imports none)."""


def default_tracker(speech_model: str | None = None) -> SpeechTracker:
    """The :data:`SpeechTracker` of :data:`DEFAULT_TRACKER` for the audio-to-landmark checkpoint ``speech_model``
    (None: the shipped one)."""
    module, _, attr = DEFAULT_TRACKER.partition(":")
    return getattr(importlib.import_module(module), attr)(speech_model)


# ------------------------------------------------------------------------------------------------ per clip

def align_rigid(track: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each frame of ``track`` (T, 68, 2) moved by the similarity mapping its rigid points onto ``ref``'s."""
    from reenact.geometry import fit_similarity, transform

    return np.stack([transform(t, fit_similarity(t[RIGID], r[RIGID])).astype(np.float32) for t, r in zip(track, ref)])


def opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip opening (vertical 62-66 gap) in inter-ocular units, ``(T,)``."""
    from reenact.metrics.landmarks import inter_ocular

    p = np.asarray(points, np.float64)
    return (p[:, 66, 1] - p[:, 62, 1]) / inter_ocular(p)


def mouth_scores(track: np.ndarray, real: np.ndarray, valid: np.ndarray) -> dict:
    """``mouth_lmd`` (mean over valid frames) and ``opening_corr`` of ``track`` against the ``real`` track."""
    from reenact.metrics.landmarks import lmd

    aligned = align_rigid(track[valid], real[valid])
    d = lmd(aligned, real[valid], MOUTH)
    a, b = opening(aligned), opening(real[valid])
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-8 and b.std() > 1e-8 else 0.0
    return {"mouth_lmd": float(d.mean()), "opening_corr": corr}


def blink_count(track: np.ndarray, fps: float, valid: np.ndarray | None = None) -> tuple[int, float]:
    """(blinks, minutes) of a track; frames not in ``valid`` count as open eyes."""
    from reenact.metrics.landmarks import detect_blinks, eye_aspect_ratio

    ear = eye_aspect_ratio(track).astype(np.float64)
    if valid is not None:
        ear[~valid] = np.nan
    b = detect_blinks(ear, fps, relative=BLINK_RELATIVE)
    return len(b.events), len(track) / fps / 60.0


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """``audio`` looped (or cut) to ``n`` samples."""
    reps = int(np.ceil(n / max(len(audio), 1)))
    return np.tile(audio, reps)[:n].astype(np.float32)


def clip_tracks(points: np.ndarray, valid: np.ndarray, first: int, audio: np.ndarray, other_audio: np.ndarray,
                fps: float, tracker: SpeechTracker, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """The compared tracks of one clip (each (n, 68, 2) in the clip's crop pixels) and n, the frames all cover:
    ``points`` (T, 68, 2) the real track, ``first`` the portrait frame, ``other_audio`` the shuffled speech."""
    portrait = points[first]
    gen = tracker(portrait, audio, fps, SAMPLE_RATE, seed)
    gen_shuf = tracker(portrait, fit_length(other_audio, len(audio)), fps, SAMPLE_RATE, seed)
    n = min(len(points), len(gen), len(gen_shuf))
    tracks = {"real": points[:n], "generated": gen[:n], "generated_shuffled": gen_shuf[:n],
              "still": np.repeat(portrait[None], n, 0), "real_shuffled": points[:n]}
    return tracks, n


def clip_metrics(tracks: dict[str, np.ndarray], valid: np.ndarray, audio: np.ndarray, other_audio: np.ndarray,
                 fps: float, expert) -> dict:
    """Every track's metrics on one clip (``valid``: (n,) real frames with detected landmarks)."""
    from reenact.metrics.sync import av_sync

    out = {}
    real = tracks["real"]
    for name in TRACKS:
        has, t, row = _HAS[name], tracks[name], {}
        if "mouth" in has:
            row.update(mouth_scores(t, real, valid))
        if "sync" in has:
            a = fit_length(other_audio, len(audio)) if name == "real_shuffled" else audio
            v = valid if name.startswith("real") else None
            r = av_sync(t, a, fps, SAMPLE_RATE, expert=expert, valid=v)
            row.update({"av_offset": r["offset"], "av_conf": r["confidence"]})
        if "blinks" in has:
            row["blinks"], row["minutes"] = blink_count(t, fps, valid if name == "real" else None)
        out[name] = row
    return out


# ------------------------------------------------------------------------------------------------ the run

def shuffle_partner(j: int, identities: list[str]) -> int | None:
    """The clip whose speech is the "shuffled audio" of clip ``j``: the next one in the pool of another identity
    (another person's speech), else simply the next one; None for a pool of one."""
    n = len(identities)
    others = [(j + d) % n for d in range(1, n)]
    return next((o for o in others if identities[o] != identities[j]), others[0] if others else None)


def speech_pool(ds, opts) -> tuple[list[int], dict[int, np.ndarray], dict]:
    """Clips of the split with speech (a seeded subset of ``opts.clips``), their audio, and what was left out."""
    pool = split_clips(ds, opts)
    with_audio = [i for i in pool if ds.records[i].has_audio]
    audio, kept, not_speech = {}, [], []
    for i in with_audio:
        a = ds.audio(i, SAMPLE_RATE)
        if has_speech(a, float(ds.records[i].fps)):
            kept.append(i)
            audio[i] = a
        else:
            not_speech.append(ds.records[i].key)
    if not kept:
        raise no_clips(ds, opts, "clip with speech")
    kept = seeded_subset(kept, opts)
    audio = {i: audio[i] for i in kept}
    left = {"no_audio": len(pool) - len(with_audio), "not_speech": not_speech}
    return kept, audio, left


def run_speech_eval(data, out, opts, tracker: SpeechTracker | None = None):
    """The speech protocol (see the module docstring): writes results.json, results.md, grid_speech.png and a
    side-by-side video of the first clip (real crop | real landmarks | generated landmarks [| rendered], with
    its audio) to ``out``. ``tracker`` draws the speech-driven tracks (None: :func:`default_tracker` of
    ``opts.speech_model``). Returns an :class:`reenact.metrics.harness.EvalReport`."""
    from tqdm.auto import tqdm

    from reenact.data.dataset import PreparedDataset
    from reenact.metrics.sync import load_expert

    t0 = time.time()
    ds = PreparedDataset(data)
    pool, audios, left = speech_pool(ds, opts)
    tracker = tracker or default_tracker(opts.speech_model)
    expert = load_expert(opts.sync_checkpoint)
    renderer = None
    if opts.checkpoint:
        from reenact.metrics.harness import ModelRenderer

        renderer = ModelRenderer(opts.checkpoint, opts.device, opts.ft_steps, opts.seed, opts.batch_size)
    per_clip, rendered, grid, video = [], [], [], None
    pick = set(np.round(np.linspace(0, len(pool) - 1, min(opts.grid_rows, len(pool)))).astype(int).tolist())
    for j, clip in enumerate(tqdm(pool, desc="eval speech", unit="clip", disable=not opts.progress)):
        meta, rec = ds.meta(clip), ds.records[clip]
        fps = float(rec.fps)
        points, valid = meta["points"].astype(np.float32), meta["valid"].astype(bool)
        ids = np.asarray(meta["frame_ids"])
        stored_ok = np.flatnonzero(valid[ids])
        if not len(stored_ok):
            left.setdefault("no_landmarks", []).append(rec.key)
            continue
        k0 = int(stored_ok[0])  # the portrait: first stored crop with detected landmarks
        first = int(ids[k0])
        audio = audios[clip]
        o = shuffle_partner(j, [ds.records[c].identity for c in pool])
        # one clip: its own speech half a clip away is still the wrong speech
        other = audios[pool[o]] if o is not None else np.roll(audio, len(audio) // 2)
        tracks, n = clip_tracks(points, valid, first, audio, other, fps, tracker, opts.seed + j)
        m = clip_metrics(tracks, valid[:n], audio, other, fps, expert)
        per_clip.append({"key": rec.key, "frames": n, "fps": fps, "portrait_frame": first, "tracks": m})
        frames = None
        if renderer is not None or j in pick or video is None:
            frames = ds.frames(clip)
        out_frames = None
        if renderer is not None:
            out_frames = renderer.render(frames[k0:k0 + 1], points[first][None], tracks["generated"])
            rendered.append(_rendered_metrics(out_frames, frames, ids, k0, n, tracks["generated"], audio, fps,
                                              expert, opts.frames_per_clip, select_frames))
            rendered[-1]["key"] = rec.key
        if j in pick:
            k = min(len(ids) - 1, max(k0 + 1, int(np.searchsorted(ids, n // 2))))
            if ids[k] < n:
                grid.append(_grid_row(frames[k], tracks["real"][ids[k]], tracks["generated"][ids[k]],
                                      None if out_frames is None else out_frames[ids[k]]))
        if video is None:
            video = (rec.key, frames, ids, tracks, out_frames, audio, fps, n)
    if not per_clip:
        raise InputError(ds.root, "no clip with speech and landmarks to evaluate")
    res = summarise(per_clip, rendered)
    res.update({"protocol": "speech", "data": str(ds.root), "split": opts.split,
                "clips": [c["key"] for c in per_clip], "left_out": left, "options": asdict(opts),
                "speech_model": str(opts.speech_model or "shipped (puppeteer/audio/weights/a2l)"),
                "sync_expert": str(opts.sync_checkpoint), "per_clip": per_clip,
                "seconds": round(time.time() - t0, 1)})
    files = _write(Path(out), res, grid, video, renderer is not None)
    return EvalReport(res, Path(out), files, res["seconds"])


def _rendered_metrics(out_frames, frames, ids, k0, n, gen, audio, fps, expert, per_clip, select_frames) -> dict:
    from reenact.metrics.psnr_ssim import psnr, ssim
    from reenact.metrics.sync import av_sync

    usable = (np.arange(len(ids)) != k0) & (ids < n)
    _, tgt = select_frames(usable, 1, per_clip)  # stored frames spread over the clip (after its first third)
    row = {"targets": int(len(tgt))}
    if len(tgt):
        fake, real = out_frames[ids[tgt]], frames[tgt]
        row["ssim"] = float(np.mean(ssim(fake, real)))
        row["psnr"] = float(np.mean(np.minimum(psnr(fake, real), 100.0)))
    try:
        r = av_sync(out_frames[:n], audio, fps, SAMPLE_RATE, expert=expert)
        row.update({"av_offset": r["offset"], "av_conf": r["confidence"]})
    except Exception as e:  # no face found on the rendered frames: reported, not hidden
        row["av_error"] = str(e)
    return row


def summarise(per_clip: list[dict], rendered: list[dict]) -> dict:
    """Means over clips per track (blink rates pooled), and of the rendered outputs."""
    res: dict = {"tracks": list(TRACKS), "metrics": list(METRICS), "results": {}}
    for name in TRACKS:
        rows = [c["tracks"][name] for c in per_clip]
        e: dict = {}
        if "mouth" in _HAS[name]:
            e["mouth_lmd"] = finite_mean(r["mouth_lmd"] for r in rows)
            e["opening_corr"] = finite_mean(r["opening_corr"] for r in rows)
        if "sync" in _HAS[name]:
            e.update({k: v for k, v in _sync_summary(rows).items() if k in _SYNC_KEYS})
        if "blinks" in _HAS[name]:
            minutes = sum(r["minutes"] for r in rows)
            e["blinks_per_min"] = sum(r["blinks"] for r in rows) / minutes if minutes > 0 else None
            e["minutes"] = minutes
        res["results"][name] = e
    if rendered:
        sync = _sync_summary(rendered)
        res["rendered"] = {"clips": len(rendered), "ssim": finite_mean(r.get("ssim") for r in rendered),
                           "psnr": finite_mean(r.get("psnr") for r in rendered),
                           **{k: sync[k] for k in _SYNC_KEYS}, "sync_failed": sync["failed"],
                           "per_clip": rendered}
    return res


_SYNC_KEYS = ("av_offset", "av_abs_offset", "in_sync", "av_conf")


def _sync_summary(rows: list[dict]) -> dict:
    """AV-sync means of rows carrying ``av_offset``/``av_conf`` (rows without them count as failed), by the
    same rule as every other AV-sync figure (:func:`reenact.metrics.sync.summarize`)."""
    from reenact.metrics.sync import summarize

    return summarize([{"status": "ok", "offset": r["av_offset"], "confidence": r["av_conf"]}
                      if "av_offset" in r else {"status": "failed"} for r in rows])


def _fmt(v, spec: str) -> str:
    return _fmt_value(v, spec, missing="-")


def speech_markdown(res: dict) -> str:
    """The tables of ``results.md`` for the speech protocol."""
    left = res.get("left_out", {})
    lines = ["# reenact eval: speech-driven landmarks", "",
             f"{len(res['clips'])} clips with speech of the `{res['split']}` split of `{res['data']}` "
             f"({len(left.get('not_speech', []))} without speech-like audio left out), seed "
             f"{res['options']['seed']}. Audio-to-landmark model: {res['speech_model']}; lip-sync expert: "
             f"{res['sync_expert']}.", "",
             "| track | audio | " + " | ".join(_TITLES[m][0] for m in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for name in res["tracks"]:
        e = res["results"][name]
        t, a = TRACK_TITLES[name]
        lines.append(f"| {t} | {a} | " + " | ".join(_fmt(e.get(m), _TITLES[m][1]) for m in METRICS) + " |")
    lines += ["", "mouth LMD: mouth points after rigid alignment / inter-ocular distance (lower is better); opening "
              "corr: inner-lip opening vs the real one (higher is better); AV offset in frames (positive: audio "
              "late) and confidence from the landmark lip-sync expert (real: offset 0, high confidence; shuffled: "
              "low); in sync: share of clips with abs(offset) <= 1; blinks per minute pooled over clips.", ""]
    r = res.get("rendered")
    if r:
        lines += ["## Rendered by the model", "",
                  "| clips | SSIM | PSNR | abs AV offset | in sync | AV conf | no face for sync |",
                  "|---|---|---|---|---|---|---|",
                  f"| {r['clips']} | {_fmt(r['ssim'], '{:.3f}')} | {_fmt(r['psnr'], '{:.2f}')} | "
                  f"{_fmt(r['av_abs_offset'], '{:.2f}')} | {_fmt(r['in_sync'], '{:.0%}')} | "
                  f"{_fmt(r['av_conf'], '{:.3f}')} | {r['sync_failed']} |", ""]
    return "\n".join(lines)


def _grid_row(real_img, real_pts, gen_pts, rendered) -> list[np.ndarray]:
    from reenact.draw import draw_landmarks

    s = real_img.shape[0]
    row = [real_img, draw_landmarks(real_pts, s), draw_landmarks(gen_pts, s)]
    return row + ([rendered] if rendered is not None else [])


def _write(out: Path, res: dict, grid: list, video, has_render: bool) -> list[Path]:
    from reenact import io

    files = write_results(out, res, speech_markdown(res))
    labels = ["real", "real landmarks", "generated landmarks"] + (["rendered"] if has_render else [])
    if grid:
        io.write_image(out / "grid_speech.png", grid_image(grid, labels))
        files.append(out / "grid_speech.png")
    if video is not None:
        key, frames, ids, tracks, rendered, audio, fps, n = video
        path = out / f"speech_{key.replace('/', '_')}.mp4"
        # stored crops may be every other frame: each output frame shows the latest stored crop
        k = np.clip(np.searchsorted(ids, np.arange(n), side="right") - 1, 0, len(ids) - 1)
        with io.VideoWriter(path, fps, audio=audio[: int(round(n / fps * SAMPLE_RATE))],
                            audio_rate=SAMPLE_RATE) as w:
            for t in range(n):
                w.write(np.concatenate(_grid_row(frames[k[t]], tracks["real"][t], tracks["generated"][t],
                                                 None if rendered is None else rendered[t]), 1))
        files.append(path)
    return files
