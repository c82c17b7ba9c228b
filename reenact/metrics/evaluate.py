"""The evaluation protocols behind ``reenact eval``: self- and cross-reenactment on a prepared dataset (the speech
protocol lives in :mod:`reenact.metrics.speech`, the user path, pasted-back full frames, in
:mod:`reenact.metrics.userpath`; what all protocols share, clip pool, frame selection, renderers and report
writing, in :mod:`reenact.metrics.harness`). :func:`run_eval` is the dispatcher of all four protocols.

Self-reenactment (Zakharov et al. 2019, section 4): on held-out clips, a method sees K source frames taken from
the start of a clip (spread over its first third) and renders the later frames (``frames_per_clip`` targets,
evenly spaced over the rest) from their own landmarks; each output is compared with the real frame: SSIM,
PSNR, mouth/eye region SSIM and PSNR, sharpness (Laplacian variance relative to the real frame, CPBD), ACD/CSIM
to the real frame, LMD (dlib landmarks of output vs real, over all points and the mouth), head-pose error and
eye-aspect-ratio error, and (extra ``losses``) the SFace cosine of output and real face, both aligned at the
target landmarks (same person above 0.363; "unavailable" without the extra) with the Frechet distance between
the SFace embeddings of the outputs and of the real targets (labelled as such: not FID). "Hard frames" are the quarter of all targets whose mouth opening differs most from the
closest source's (the frames where copying the source cannot work); they are reported apart.

Cross-reenactment: the identity comes from one clip's source frames, the motion from a clip of another
person. The driver's landmarks are retargeted naively: one similarity transform (least squares on rigid
points: nose and eye corners) maps the driver's first target frame onto the first source frame, and is
applied to every driver frame, so head motion, mouth and eyes follow the driver while the face keeps the
driver's shape. There is no real frame to compare with, so there are no pixel metrics: ACD/CSIM to the source
identity (and ACD to the driver, where lower means the driver's identity leaks), mouth LMD to the retargeted
driver landmarks after aligning the output's landmarks to them on the rigid points, head-pose error to them,
and CPBD.

Methods: ``static`` (nearest source frame, unchanged), ``warp`` (nearest source frame warped onto the target
landmarks, ``reenact.warp``) and ``model`` (``Reenactor.load(checkpoint).personalize(sources, steps=ft_steps)``
then ``avatar.render_batch(targets)``). "Nearest" source: the one whose landmarks are closest (mean distance) to
the target's; with one shot it is simply the source.

AV sync (self-reenactment, clips with speech-like audio; ``sync_checkpoint``, the shipped landmark lip-sync expert
by default): the offset and confidence of the real driving track with its audio (what the methods are asked to
draw), and, per method and K, of the landmarks dlib finds on a rendered contiguous segment (``sync_seconds`` of
every frame after the clip's first third) with the segment's audio (what the method drew). The segment is one
more render call per clip, method and K (the model reuses the avatar personalised for the clip's targets;
``sync_seconds=0`` skips it).

Outputs in ``out``: ``results.json`` (per method and shots, every metric's mean over all targets and over the
hard frames, counts, failures), ``results.md`` (tables) and ``grid_k{K}.png`` (rows of target frames: source |
real or driver | each method, at full resolution). Runs are deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from reenact.errors import InputError
from reenact.geometry import fit_similarity, transform
from reenact.landmarks.parts import MOUTH
from reenact.metrics.harness import (RIGID, SELF_METRICS, TITLES, CachedRenderer, EvalReport, clip_pool, finite_mean,
                                     fmt, grid_image, make_renderer, method_tag, nearest_source, select_frames,
                                     self_metrics, start_run, stored_points, write_results)
# the crop methods' renderers, for the scripts that use them from here (benchmarks/)
from reenact.metrics.harness import ModelRenderer, StaticRenderer, WarpRenderer  # noqa: F401
from reenact.options import AT_LEAST_1, DEVICE, NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, UNIT, option

Protocol_ = Literal["self", "cross", "speech", "user"]


def _none_or_path(text: str) -> str | None:
    """``--sync-expert``: ``none`` turns AV sync off."""
    return None if text == "none" else text


METHODS = ("static", "warp", "model")  # of the crop protocols; the user protocol's: ``userpath.METHODS``

CROSS_METRICS = ("acd", "csim", "sface_sim", "acd_driver", "lmd_mouth", "pose_err", "cpbd")


@dataclass
class EvalOptions:
    """Settings of one evaluation run (see the module docstring).

    methods: any of ``static``, ``warp``, ``model`` (user protocol: the names in ``userpath.METHODS``, e.g.
    ``static``, ``warp-crop``, ``model``, where ``model`` without a checkpoint is the bundled default); empty:
    the protocol's references (``static`` and ``warp``, or ``warp-crop``). shots: the K values. ft_steps:
    fine-tuning steps of the ``model`` method (0: feed-forward). clips: evaluate at most this many clips (a seeded
    random subset; None: all of the split). frames_per_clip: targets per clip. split: ``val`` (identities held out by
    ``PreparedDataset.split(None, val_fraction)``), ``train`` or ``all``. warp_kind: ``pa`` or ``tps``. fid_weights:
    local Inception-v3 weights file for FID (None: FID unavailable). grid_rows: rows of the grid image. batch_size:
    images per rendering batch. sync_checkpoint: the lip-sync expert for AV sync ("default": the shipped one; None:
    AV sync off). sync_seconds: length of the rendered segment whose AV sync is measured per method (self protocol;
    0: off). speech_model: audio-to-landmark checkpoint of the speech protocol (None: the shipped one); there
    ``methods`` are not used and ``checkpoint``, when given, renders the driven portrait.
    """

    protocol: Protocol_ = option("self", "user: the user's path, full-resolution photos from the original videos, "
                                         "outputs pasted back and scored on full frames")
    methods: tuple[str, ...] = option((), "comma list of static, warp, model (default static,warp); user protocol: "
                                          "static, warp-crop, model (the bundled default without --checkpoint), "
                                          "...", flag="--method")
    shots: tuple[int, ...] = option((1, 8), "comma list of K source frames")
    ft_steps: int = option(0, "fine-tuning steps for the model (0: feed-forward)", type=NON_NEGATIVE)
    checkpoint: str | None = option(None, "meta-learned checkpoint for --method model (speech: renders the "
                                          "portrait)")
    clips: int | None = option(None, "at most this many clips (seeded random subset)", type=AT_LEAST_1)
    frames_per_clip: int = option(8, "target frames per clip", type=AT_LEAST_1)
    split: Literal["val", "train", "all"] = option("val", "clips of the held-out identities (val), the others, or "
                                                          "all")
    val_fraction: float = option(0.1, "fraction of the identities held out", type=UNIT)
    seed: int = option(0, "seed of the clip subset and the frame choice")
    device: str = option("cpu", "cpu or cuda[:N] for the warp and the model", type=DEVICE)
    warp_kind: str = option("pa", "warp method's interpolation: piecewise-affine (pa) or thin-plate spline (tps)",
                            choices=("pa", "tps"))
    fid_weights: str | None = option(None, "local Inception-v3 weights for FID (otherwise FID is unavailable)")
    grid_rows: int = option(8, "target frames shown in the grid images", type=AT_LEAST_1)
    batch_size: int = option(16, "images per rendering batch", type=AT_LEAST_1)
    progress: bool = option(True, "no progress bars")
    render_cache: str | None = option(None, "folder of outputs rendered elsewhere by `python -m "
                                            "reenact.metrics.render_cache` (read; missing entries are rendered)")
    sync_checkpoint: str | None = option("default", "lip-sync expert checkpoint for AV sync (default: the shipped "
                                                    "one; none: off, self only)", flag="--sync-expert",
                                         type=_none_or_path, show_default=False)
    sync_seconds: float = option(3.0, "self: AV sync of a rendered segment this long per method (0: only the real "
                                      "tracks)", type=NON_NEGATIVE_FLOAT)
    speech_model: str | None = option(None, "speech: audio-to-landmark checkpoint (default: the shipped one)")
    ft_train: str = option("all", "what fine-tuning trains: all (G and psi', the paper) or psi (psi' alone)",
                           choices=("all", "psi"))
    ft_lr_psi: float | None = option(None, "psi's fine-tuning learning rate (default: lr_g)", type=POSITIVE_FLOAT)
    ft_warp_trust: float = option(0.0, "fine-tuning penalty on the warp-guided G's painted share (0: off)",
                                  type=NON_NEGATIVE_FLOAT)
    ft_identity: float = option(0.0, "photo renderer: weight of the SFace identity loss in fine-tuning (0: off)",
                                type=NON_NEGATIVE_FLOAT)
    ft_perceptual: float | None = option(None, "photo renderer: weight of the EfficientNet-Lite0 perceptual loss in "
                                               "fine-tuning (default: the model's)", type=NON_NEGATIVE_FLOAT)

    def __post_init__(self):
        if self.protocol not in ("self", "cross", "speech", "user"):
            raise InputError("eval options",
                             f"protocol must be 'self', 'cross', 'speech' or 'user', got {self.protocol!r}")
        self.methods = tuple(self.methods) or (("static", "warp-crop") if self.protocol == "user"
                                               else ("static", "warp"))
        self.shots = tuple(int(k) for k in self.shots)
        if self.protocol == "speech" and not self.sync_checkpoint:
            raise InputError("eval options", "the speech protocol needs a lip-sync expert (sync_checkpoint)")
        if self.sync_seconds < 0:
            raise InputError("eval options", f"sync_seconds must be >= 0, got {self.sync_seconds}")
        if self.protocol == "user":
            from reenact.metrics.userpath import method_names  # lazy: userpath imports this module

            known = method_names()
            if self.render_cache:
                raise InputError("eval options", "the user protocol renders full frames; it has no render cache")
        else:
            known = METHODS
        bad = [m for m in self.methods if m not in known
               and not (self.protocol == "user" and m.startswith("model:"))]  # model:CKPT, userpath.make_method
        if bad:
            raise InputError("eval options", f"unknown method(s) {bad}; choose from {', '.join(known)}")
        if "model" in self.methods and not self.checkpoint and self.protocol not in ("speech", "user"):
            raise InputError("eval options", "the 'model' method needs a checkpoint (--checkpoint)")
        if not self.shots or min(self.shots) < 1:
            raise InputError("eval options", f"shots must be positive integers, got {self.shots}")
        if self.frames_per_clip < 1:
            raise InputError("eval options", f"frames_per_clip must be >= 1, got {self.frames_per_clip}")
        if self.split not in ("val", "train", "all"):
            raise InputError("eval options", f"split must be val, train or all, got {self.split!r}")
        if self.clips is not None and self.clips < 1:
            raise InputError("eval options", f"clips must be >= 1, got {self.clips}")


# ------------------------------------------------------------------------------------------------ sampling

def retarget(driver_points: np.ndarray, source_points: np.ndarray) -> np.ndarray:
    """Naive retargeting: the driver's landmarks (N, 68, 2) moved by the similarity that aligns the driver's
    first frame to ``source_points`` (68, 2) on the rigid points."""
    m = fit_similarity(driver_points[0][RIGID], source_points[RIGID])
    return transform(driver_points, m).astype(np.float32)


# ------------------------------------------------------------------------------------------------ metrics

def cross_metrics(fake: np.ndarray, tgt_points: np.ndarray, source_desc: np.ndarray,
                  driver_descs: list, analyzer, sface=None, source_embedding: np.ndarray | None = None) -> dict:
    """Per-target metrics of cross-reenactment outputs: identity to the source (and the driver), mouth LMD and
    pose error to the retargeted driver landmarks ``tgt_points`` (N, 68, 2), CPBD; ``sface_sim`` to the source's
    SFace ``source_embedding`` (128,) when ``sface`` is given."""
    from reenact.metrics.identity import acd, csim
    from reenact.metrics.landmarks import head_pose, lmd, pose_error
    from reenact.metrics.sharpness import cpbd, face_box

    n, h, w = fake.shape[:3]
    out = {k: np.full(n, np.nan) for k in CROSS_METRICS}
    if sface is not None:
        out["sface_sim"] = sface.embed(fake, tgt_points) @ source_embedding
    found = np.zeros(n, bool)
    for i in range(n):
        out["cpbd"][i] = cpbd(fake[i], face_box(tgt_points[i], h, w))
        f = analyzer.analyze(fake[i])
        found[i] = f is not None
        if f is None:
            continue
        out["acd"][i] = acd(f.descriptor, source_desc)
        out["csim"][i] = csim(f.descriptor, source_desc)
        if driver_descs[i] is not None:
            out["acd_driver"][i] = acd(f.descriptor, driver_descs[i])
        aligned = transform(f.points, fit_similarity(f.points[RIGID], tgt_points[i][RIGID])).astype(np.float32)
        out["lmd_mouth"][i] = lmd(aligned, tgt_points[i], MOUTH)
        out["pose_err"][i] = pose_error(head_pose(f.points, (h, w)), head_pose(tgt_points[i], (h, w)))
    out["face_found"] = found
    return out


# ------------------------------------------------------------------------------------------------ running

def self_targets(ds, opts: EvalOptions, k: int = 1):
    """The self protocol's episodes for analysis scripts: yields ``(clip, frames, points, src, tgt)`` per clip of
    ``opts.split`` (stored crops, their landmarks, and the indices of the ``k`` sources and the targets), skipping
    clips with too few detected frames; the same clips and frames ``run_eval`` scores."""
    for clip in clip_pool(ds, opts):
        frames = ds.frames(clip)
        pts, valid = stored_points(ds.meta(clip))
        _, tgt = select_frames(valid, 1, opts.frames_per_clip)
        src, _ = select_frames(valid, k, 1)
        if src is not None:
            yield clip, frames, pts, src, tgt


def _grid_pick(n_total: int, rows: int) -> set[int]:
    if n_total <= rows:
        return set(range(n_total))
    return set(np.round(np.linspace(0, n_total - 1, rows)).astype(int).tolist())


def run_eval(data: str | Path, out: str | Path, opts: EvalOptions, speech_tracker=None) -> EvalReport:
    """Evaluate ``opts.methods`` on the prepared dataset ``data``; write results.json, results.md and grid
    images to ``out``. Returns the results dict and the files written. ``speech_tracker``: the speech protocol's
    track renderer (:data:`reenact.metrics.speech.SpeechTracker`, e.g. from ``puppeteer.audio.speak.speech_tracker``;
    None: the one :data:`reenact.metrics.speech.DEFAULT_TRACKER` names)."""
    if opts.protocol == "speech":
        from reenact.metrics.speech import run_speech_eval

        return run_speech_eval(data, out, opts, speech_tracker)
    if opts.protocol == "user":
        from reenact.metrics.userpath import run_user_eval

        return run_user_eval(data, out, opts)
    from tqdm.auto import tqdm

    from reenact.data.dataset import canonical_identity
    from reenact.metrics.regions import hard_frames, opening_gap

    run = start_run(data, opts, make_renderer)  # this module's make_renderer: scripts may replace it
    ds, pool, renderers, analyzer = run.ds, run.pool, run.methods, run.analyzer
    sface, sface_status = run.sface, run.sface_status
    fid_model = None
    if opts.fid_weights:
        from reenact.metrics.fid import load_inception

        fid_model = load_inception(opts.fid_weights, opts.device)

    drivers: dict[int, int] = {}
    if opts.protocol == "cross":
        rng = np.random.default_rng(opts.seed + 1)
        for c in pool:
            others = [d for d in pool
                      if canonical_identity(ds.records[d].identity) != canonical_identity(ds.records[c].identity)]
            if not others:
                raise InputError(ds.root, f"cross-reenactment needs clips of at least two identities in the "
                                          f"{opts.split!r} split")
            drivers[c] = int(rng.choice(others))

    # rows[(method, K)] = list of per-target metric dicts; feats for FID
    rows: dict[tuple[str, int], list[dict]] = {(m, k): [] for m in opts.methods for k in opts.shots}
    gaps: dict[int, list[float]] = {k: [] for k in opts.shots}
    real_cpbd: list[float] = []
    real_no_face = 0
    feats_real: list[np.ndarray] = []
    feats_fake: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in rows}
    # SFace embeddings of the real targets and of each method's outputs, for their Frechet distance
    sface_real: list[np.ndarray] = []
    sface_fake: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in rows}
    skipped: dict[int, int] = {k: 0 for k in opts.shots}
    grid_rows: dict[int, list[list[np.ndarray]]] = {k: [] for k in opts.shots}
    total_targets = len(pool) * opts.frames_per_clip
    pick = _grid_pick(total_targets, opts.grid_rows)
    counter = 0
    expert, sync_status = _sync_expert(opts) if opts.protocol == "self" else (None, None)
    sync_real: list[dict] = []
    sync_real_segment: list[dict] = []
    sync_rendered: dict[tuple[str, int], list[dict]] = {key: [] for key in rows}

    for clip in tqdm(pool, desc=f"eval {opts.protocol}", unit="clip", disable=not opts.progress):
        frames = ds.frames(clip)
        pts, valid = stored_points(ds.meta(clip))
        if opts.protocol == "self":
            _, tgt = select_frames(valid, 1, opts.frames_per_clip)
            shown = frames[tgt]
            tgt_points_base = pts[tgt]
            real_faces = [analyzer.analyze(f) for f in shown]
            real_no_face += sum(f is None for f in real_faces)
            real_cpbd.extend(_real_cpbd(shown, tgt_points_base))
            if sface is not None:
                sface_real.append(sface.embed(shown, tgt_points_base))
            segment = _sync_segment(ds, clip, expert, opts) if expert is not None else None
            if segment is not None:
                sync_real.append(segment["real"])
                if segment["points"] is not None:
                    sync_real_segment.append(segment["real_segment"])
            if fid_model is not None:
                from reenact.metrics.fid import inception_features

                feats_real.append(inception_features(fid_model, shown))
        else:
            d = drivers[clip]
            dframes = ds.frames(d)
            dpts, dvalid = stored_points(ds.meta(d))
            # the driver's motion over its whole clip: evenly spaced frames with detected landmarks
            dtgt = np.flatnonzero(dvalid)[np.unique(np.round(np.linspace(0, dvalid.sum() - 1,
                                                                         opts.frames_per_clip)).astype(int))]
            shown = dframes[dtgt]
            driver_faces = [analyzer.analyze(f) for f in shown]
            driver_descs = [f.descriptor if f is not None else None for f in driver_faces]
        slots = [counter + j for j in range(len(shown))]
        counter += opts.frames_per_clip

        for k in opts.shots:
            src, _ = select_frames(valid, k, 1)
            if src is None:
                skipped[k] += 1
                continue
            src_imgs, src_pts = frames[src], pts[src]
            if opts.protocol == "self":
                tgt_points = tgt_points_base
            else:
                tgt_points = retarget(dpts[dtgt], src_pts[0])
                src_face = analyzer.analyze(src_imgs[0])
                source_desc = (src_face.descriptor if src_face is not None
                               else analyzer.descriptor_at(src_imgs[0], src_pts[0]))
                source_emb = sface.embed(src_imgs[:1], src_pts[:1])[0] if sface is not None else None
            gap = opening_gap(src_pts, tgt_points)
            gaps[k].extend(gap.tolist())
            outputs = {}
            for m, r in renderers.items():
                if opts.render_cache:  # outputs rendered elsewhere (e.g. on a GPU machine without dlib)
                    r = CachedRenderer(r, opts.render_cache, method_tag(m, k, opts))
                fake = r.render(src_imgs, src_pts, tgt_points)
                outputs[m] = fake
                if opts.protocol == "self":
                    met = self_metrics(fake, shown, tgt_points, real_faces, analyzer, sface)
                    if sface is not None:
                        sface_fake[(m, k)].append(sface.embed(fake, tgt_points))
                else:
                    met = cross_metrics(fake, tgt_points, source_desc, driver_descs, analyzer, sface, source_emb)
                for j in range(len(fake)):
                    rows[(m, k)].append({key: float(v[j]) for key, v in met.items()})
                # A render cache holds the targets only; rendering the AV-sync segment here would personalise and
                # render on the scoring machine, which the cache exists to avoid.
                if (opts.protocol == "self" and segment is not None and segment["points"] is not None
                        and not opts.render_cache):
                    sync_rendered[(m, k)].append(_rendered_sync(r, src_imgs, src_pts, segment, expert))
                if fid_model is not None:
                    from reenact.metrics.fid import inception_features

                    feats_fake[(m, k)].append(inception_features(fid_model, fake))
            for j, slot in enumerate(slots):
                if slot in pick:
                    near = nearest_source(src_pts, tgt_points[j:j + 1])[0]
                    grid_rows[k].append([src_imgs[near], shown[j]] + [outputs[m][j] for m in opts.methods])

    results = _summarise(opts, ds, pool, drivers, rows, gaps, skipped, real_cpbd, real_no_face, feats_real,
                         feats_fake, hard_frames, sface=(sface_status, sface_real, sface_fake))
    if opts.protocol == "self":
        results["av_sync"] = _sync_summary(sync_status, sync_real, sync_real_segment, sync_rendered, opts)
    results["seconds"] = run.seconds()
    out = Path(out)
    files = _write_outputs(out, results, grid_rows, opts)
    return EvalReport(results, out, files, results["seconds"])


def _sync_expert(opts: EvalOptions):
    """(the lip-sync expert, None) or (None, the reason AV sync is unavailable)."""
    from reenact.errors import CheckpointError
    from reenact.metrics.sync import UNAVAILABLE, load_expert

    if not opts.sync_checkpoint:
        return None, dict(UNAVAILABLE)
    try:
        return load_expert(opts.sync_checkpoint, "cpu"), None
    except CheckpointError as e:  # reported as unavailable, never faked
        return None, {"status": "unavailable", "reason": str(e)}


def _sync_segment(ds, clip: int, expert, opts: EvalOptions) -> dict | None:
    """For a clip with speech-like audio: the AV sync of its whole real track (``real``), and the segment whose
    renderings are scored: ``points`` (N, 68, 2) of every frame from the end of the first third on, ``sync_seconds``
    long (None when under 0.4 s), its ``audio`` and ``fps``. None for a clip without such audio."""
    from reenact.audio.features import has_speech
    from reenact.metrics.sync import av_sync

    rec = ds.records[clip]
    if not rec.has_audio:
        return None
    sr, fps = 16000, float(rec.fps)
    audio = ds.audio(clip, sr)
    if not has_speech(audio, fps):
        return None
    meta = ds.meta(clip)
    points, valid = meta["points"].astype(np.float32), meta["valid"].astype(bool)
    seg = {"real": av_sync(points, audio, fps, sr, expert=expert, valid=valid), "points": None, "fps": fps}
    start = len(points) // 3
    end = min(len(points), start + int(round(opts.sync_seconds * fps)))
    if opts.sync_seconds > 0 and (end - start) / fps >= 0.4:  # the expert needs 5 frames at 25 fps, and context
        seg["points"] = points[start:end]
        seg["audio"] = audio[int(round(start / fps * sr)):int(round(end / fps * sr))]
        # the reference for the renderings: the real landmarks of the same frames with the same audio
        seg["real_segment"] = av_sync(seg["points"], seg["audio"], fps, sr, expert=expert, valid=valid[start:end])
    return seg


def _rendered_sync(renderer, src_imgs, src_pts, segment: dict, expert) -> dict:
    """AV sync of the landmarks dlib finds on a method's rendering of the segment's frames."""
    from reenact.errors import NoFaceError
    from reenact.metrics.sync import av_sync

    frames = renderer.render(src_imgs, src_pts, segment["points"])
    try:
        return av_sync(frames, segment["audio"], segment["fps"], 16000, expert=expert)
    except (NoFaceError, ValueError) as e:  # no face on any frame, or too few frames: counted, not hidden
        return {"status": "failed", "reason": str(e)}


def _sync_summary(status: dict | None, real: list[dict], real_segment: list[dict], rendered: dict,
                  opts: EvalOptions) -> dict:
    from reenact.metrics.sync import summarize

    if status is not None:
        return status
    if not real:
        return {"status": "unavailable", "reason": "no clip with speech-like audio among the evaluated clips"}
    out = {"status": "ok", "expert": opts.sync_checkpoint, "real": summarize(real),
           "segment_seconds": opts.sync_seconds, "real_segment": summarize(real_segment), "rendered": {}}
    if opts.render_cache:
        out["rendered_skipped"] = "a render cache holds the evaluation targets only, not the AV-sync segments"
    for (m, k), lst in rendered.items():
        if lst:
            out["rendered"].setdefault(m, {})[str(k)] = summarize(lst)
    return out


def _real_cpbd(images: np.ndarray, points: np.ndarray) -> list[float]:
    from reenact.metrics.sharpness import cpbd, face_box

    h, w = images.shape[1:3]
    return [cpbd(im, face_box(p, h, w)) for im, p in zip(images, points)]


def _summarise(opts, ds, pool, drivers, rows, gaps, skipped, real_cpbd, real_no_face, feats_real, feats_fake,
               hard_frames, sface=({"status": "unavailable", "reason": "not measured"}, [], {})) -> dict:
    """``sface``: (status, real embeddings per clip, {(method, K): output embeddings per clip})."""
    from reenact.metrics.sync import UNAVAILABLE

    names = SELF_METRICS if opts.protocol == "self" else CROSS_METRICS
    res: dict = {"protocol": opts.protocol, "data": str(ds.root), "split": opts.split,
                 "clips": [ds.records[c].key for c in pool], "options": asdict(opts),
                 "metrics": list(names), "results": {}}
    if drivers:
        res["drivers"] = {ds.records[c].key: ds.records[d].key for c, d in drivers.items()}
    if opts.protocol == "self":
        res["real"] = {"cpbd": finite_mean(real_cpbd), "no_face": int(real_no_face)}
    res["av_sync"] = dict(UNAVAILABLE)
    sface_status, sface_real, sface_fake = sface
    res["sface"] = dict(sface_status)
    for (m, k), lst in rows.items():
        hard = hard_frames(np.asarray(gaps[k])) if gaps[k] else np.zeros(0, bool)
        entry = {"targets": len(lst), "hard_targets": int(hard.sum()), "clips_skipped": skipped[k],
                 "no_face": int(sum(not r["face_found"] for r in lst)), "all": {}, "hard": {}}
        for name in names:
            vals = np.array([r[name] for r in lst]) if lst else np.zeros(0)
            entry["all"][name] = finite_mean(vals)
            entry["hard"][name] = finite_mean(vals[hard]) if len(vals) == len(hard) and len(vals) else None
        if sface_status["status"] != "ok":
            entry["all"]["sface_sim"] = entry["hard"]["sface_sim"] = "unavailable"
        if opts.protocol == "self":
            if opts.fid_weights and feats_real and feats_fake[(m, k)]:
                from reenact.metrics.fid import fid_from_features

                entry["fid"] = fid_from_features(np.concatenate(feats_real), np.concatenate(feats_fake[(m, k)]))
            else:
                entry["fid"] = "unavailable" if not opts.fid_weights else "too few images"
            entry["sface_fd"] = _sface_fd(sface_status, sface_real, sface_fake.get((m, k), []))
        res["results"].setdefault(m, {})[str(k)] = entry
    return res


def _sface_fd(status: dict, real: list[np.ndarray], fake: list[np.ndarray]) -> float | str:
    """Frechet distance between Gaussians fitted to the unit SFace embeddings (128-D) of the real targets and
    of a method's outputs: the FID formula on a face-recognition feature space, so not comparable with FID."""
    if status["status"] != "ok":
        return "unavailable"
    if sum(len(f) for f in fake) < 2 or sum(len(f) for f in real) < 2:
        return "too few images"
    from reenact.metrics.fid import fid_from_features

    return fid_from_features(np.concatenate(real), np.concatenate(fake))


def results_markdown(res: dict) -> str:
    """The tables of ``results.md`` from a results dict."""
    if res["protocol"] == "speech":
        from reenact.metrics.speech import speech_markdown

        return speech_markdown(res)
    if res["protocol"] == "user":
        from reenact.metrics.userpath import user_markdown

        return user_markdown(res)
    names = res["metrics"]
    head = ["method", "K"] + [TITLES[n][0] for n in names] + ["no face"]
    lines = [f"# reenact eval: {res['protocol']}-reenactment", "",
             f"{len(res['clips'])} clips of the `{res['split']}` split of `{res['data']}`, "
             f"{res['options']['frames_per_clip']} targets per clip, seed {res['options']['seed']}.", ""]
    for subset, title in (("all", "All targets"), ("hard", "Hard frames (mouth opening far from the sources')")):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, per_k in res["results"].items():
            for k, e in per_k.items():
                cells = [m, k] + [fmt(e[subset][n], TITLES[n][1]) for n in names]
                n_t = e["targets"] if subset == "all" else e["hard_targets"]
                cells.append(f"{e['no_face']}/{e['targets']}" if subset == "all" else f"({n_t} frames)")
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if res["protocol"] == "self":
        fid = {f"{m} K={k}": e.get("fid") for m, per_k in res["results"].items() for k, e in per_k.items()}
        lines.append("FID: " + ", ".join(f"{key}: {v:.2f}" if isinstance(v, float) else f"{key}: {v}"
                                        for key, v in fid.items()))
        sfd = {f"{m} K={k}": e.get("sface_fd") for m, per_k in res["results"].items() for k, e in per_k.items()}
        lines.append("Frechet distance of SFace embeddings to the real targets' (not FID; lower is closer): "
                     + ", ".join(f"{key}: {v:.4f}" if isinstance(v, float) else f"{key}: {v}"
                                 for key, v in sfd.items()))
        if res.get("real"):
            lines.append(f"Real frames: CPBD {fmt(res['real']['cpbd'], '{:.3f}')}, "
                         f"no face found in {res['real']['no_face']}.")
    lines += _sync_markdown(res["av_sync"])
    lines.append("")
    return "\n".join(lines)


def _sync_markdown(sync: dict) -> list[str]:
    if sync.get("status") != "ok":
        return [f"AV sync: {sync['status']} ({sync.get('reason', '')})."]
    r = sync["real"]
    lines = ["", f"## AV sync (lip-sync expert `{sync['expert']}`)", "",
             f"Real driving tracks of {r['clips']} clips with speech: abs offset {fmt(r['av_abs_offset'], '{:.2f}')} "
             f"frames, in sync (abs offset <= 1) {fmt(r['in_sync'], '{:.0%}')}, confidence "
             f"{fmt(r['av_conf'], '{:.3f}')}."]
    if sync["rendered"]:
        e = sync["real_segment"]
        lines += ["", f"Landmarks detected on rendered {sync['segment_seconds']:g} s segments (real: the driving "
                      "landmarks of the same frames):", "",
                  "| method | K | clips | abs AV offset | in sync | AV conf | no face |", "|---|---|---|---|---|---|---|",
                  f"| real | - | {e['clips']} | {fmt(e['av_abs_offset'], '{:.2f}')} | {fmt(e['in_sync'], '{:.0%}')} | "
                  f"{fmt(e['av_conf'], '{:.3f}')} | - |"]
        for m, per_k in sync["rendered"].items():
            for k, e in per_k.items():
                lines.append(f"| {m} | {k} | {e['clips']} | {fmt(e['av_abs_offset'], '{:.2f}')} | "
                             f"{fmt(e['in_sync'], '{:.0%}')} | {fmt(e['av_conf'], '{:.3f}')} | {e['failed']} |")
    return lines


def _write_outputs(out: Path, res: dict, grid_rows: dict, opts: EvalOptions) -> list[Path]:
    from reenact import io

    files = write_results(out, res, results_markdown(res))
    second = "real" if opts.protocol == "self" else "driver"
    for k, rws in grid_rows.items():
        if rws:
            path = out / f"grid_k{k}.png"
            io.write_image(path, grid_image(rws, ["source", second] + [f"{m} K={k}" for m in opts.methods]))
            files.append(path)
    return files
