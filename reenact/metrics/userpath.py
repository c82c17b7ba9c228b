"""The user-path protocol behind ``reenact eval --protocol user``: what a user sees, at the photo's resolution.

The self protocol scores 256 px crops made by ``reenact prepare``; a user gives a photo and gets it back with
the face re-rendered and pasted in. This protocol scores that path. On the same held-out clips, sources and
targets as the self protocol (``PreparedDataset.split(None, val_fraction)``, :func:`select_frames`):

- the *photo*: each source frame decoded at full resolution from the clip's ORIGINAL video
  (``ClipRecord.source``), with its landmarks in full-frame pixels (the stored crop points mapped back through
  the inverted crop matrix); with K shots, ``photos[0]`` (the first) is the one pasted into;
- the *targets*: the target frames' landmarks in full-frame pixels, and the real full frames to compare with.

A method turns (photos, their landmarks, target landmarks) into full frames (:data:`UserRender`). Every metric
is computed on those pasted-back frames: output and real frame are both cut with the target's own prepared crop
matrix (the same resampling for both, ``reenact.crop.crop_image``) to the dataset's crop size, and scored by
the self protocol's crop metrics (``reenact.metrics.harness.self_metrics``: SSIM, PSNR, mouth/eye region
SSIM and PSNR, ACD, ...), plus the mouth interior PSNR/L1 on open mouths (``regions.mouth_interior_metrics``)
and, on the full frames, the face sharpness ratio (``sharpness.lapvar_ratio``: what a user sees, not what the
crop sees). Subsets: "hard" frames (the quarter whose mouth opening differs most from the closest source's,
as in the self protocol) and "hard eyes" (the quarter whose eye aspect ratio differs most, ``regions.eye_gap``),
each pooled over all clips per method and K.

Methods are a registry (:data:`METHODS`: name -> factory(opts) -> render callable). Built in: ``static`` (the
photo unchanged), ``warp-crop`` (the classical piecewise-affine warp of the photo's 256 px crop, pasted back
with ``reenact.crop.paste_back`` and ``face_mask``: the reference every renderer must beat) and ``model``
(``Reenactor.load(checkpoint)`` - the bundled default without one - ``.personalize(photos, landmarks=...,
steps=ft_steps)`` then ``avatar.render_full_batch(targets, photos[0])``). Add a method with
:func:`register_method`, or give :data:`METHODS` a ``"module:function"`` string, imported on first use (so
``reenact eval`` knows the method without importing its module first).

Outputs in ``out``: ``results.json``, ``results.md`` and ``grid_k{K}.png``: rows of hard frames (real | each
method), each cut to the face at full resolution (never resampled: rows of smaller faces are padded).
"""
from __future__ import annotations

import importlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import numpy as np

from reenact.errors import InputError
from reenact.metrics.harness import (PSNR_CAP, SELF_METRICS, TITLES, EvalReport, finite_mean, fmt, label,
                                     select_frames, self_metrics, start_run, stored_points, write_results)

if TYPE_CHECKING:  # pragma: no cover
    from reenact.metrics.evaluate import EvalOptions

UserRender = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``render(photos, photo_points, target_points) -> frames``: ``photos`` (K, H, W, 3) RGB uint8 full-resolution
shots of one person (K = 1: the user's one photo), ``photo_points`` (K, 68, 2) their landmarks in full-frame
pixels, ``target_points`` (N, 68, 2) the targets' landmarks in the same pixels -> (N, H, W, 3) RGB uint8 full
frames: ``photos[0]`` with the face re-rendered."""
MethodFactory = Callable[["EvalOptions"], UserRender]

USER_METRICS = SELF_METRICS + ("interior_psnr", "interior_l1", "face_sharpness")
_USER_TITLES = {**TITLES, "interior_psnr": ("mouth interior PSNR", "{:.2f}"),
                "interior_l1": ("mouth interior L1", "{:.2f}"),
                "face_sharpness": ("face sharpness (full res)", "{:.3f}"),
                "lapvar_ratio": ("sharpness (crop)", "{:.3f}")}
# The headline table: the figures the user-path quality bar is stated in, (subset, metric, title).
_HEADLINE = (("all", "psnr", "PSNR"), ("all", "ssim", "SSIM"), ("all", "mouth_ssim", "mouth SSIM"),
             ("hard", "mouth_ssim", "hard-frame mouth SSIM"),
             ("all", "interior_psnr", "mouth interior PSNR (open mouths)"),
             ("all", "interior_l1", "mouth interior L1 (open mouths)"),
             ("hard_eyes", "eyes_ssim", "hard-eye eyes SSIM"),
             ("all", "face_sharpness", "face sharpness (out/real, full res)"), ("all", "acd", "ACD"),
             ("all", "sface_sim", "SFace cos"))
# Grid tiles: a square around the target landmarks, this many times their larger extent (brows to chin).
GRID_FACE_SCALE = 1.3


# ------------------------------------------------------------------------------------------------ methods

def _static(opts: EvalOptions) -> UserRender:
    """The photo, unchanged: what a renderer that ignores the landmarks scores."""
    def render(photos, photo_points, target_points):
        return np.repeat(np.asarray(photos)[:1], len(target_points), 0)

    return render


def _warp_crop(opts: EvalOptions) -> UserRender:
    """The photo's crop (the API's crop rule, 256 px) warped onto each target (``reenact.warp``, ``opts.warp_kind``)
    and pasted back into the photo with the face mask the model's paste-back uses: the classical reference,
    through the same 256 px round trip as today's model."""
    from reenact.crop import CropParams, box_from_points, crop_image, crop_matrix, face_mask, paste_back
    from reenact.crop import transform_points
    from reenact.warp import warp_images

    size = CropParams().size

    def render(photos, photo_points, target_points):
        photo = photos[0]
        m = crop_matrix(box_from_points(photo_points[0], CropParams(size=size)), size)
        crop, src = crop_image(photo, m, size), transform_points(photo_points[0], m)
        dst = transform_points(target_points, m)
        n = len(dst)
        warped = warp_images(np.repeat(crop[None], n, 0), np.repeat(src[None], n, 0), dst, opts.warp_kind,
                             opts.device, opts.batch_size)
        return np.stack([paste_back(photo, w, m, face_mask(p, size)) for w, p in zip(warped, dst)])

    return render


def _photowarp(opts: EvalOptions) -> UserRender:
    """The photo itself warped onto each target at its own resolution (``reenact.photowarp``): the classical
    part of the photo renderer, without its region generators."""
    from reenact.photowarp import PhotoWarp

    def render(photos, photo_points, target_points):
        warp = PhotoWarp(photo_points[0])
        return np.stack([warp.warp(photos[0], t) for t in np.asarray(target_points, np.float32)])

    return render


def _model(opts: EvalOptions) -> UserRender:
    """A meta-learned model through the public API, personalised per clip on its photos (FF at ``ft_steps=0``)."""
    import torch

    from reenact.api import Reenactor

    reenactor = Reenactor.load(opts.checkpoint, opts.device)  # checkpoint None: the bundled default

    def render(photos, photo_points, target_points):
        torch.manual_seed(opts.seed)
        avatar = reenactor.personalize(list(photos), steps=opts.ft_steps, landmarks=list(photo_points),
                                       progress=False, seed=opts.seed, train=opts.ft_train,
                                       lr_psi=opts.ft_lr_psi, warp_trust=opts.ft_warp_trust,
                                       identity=opts.ft_identity, perceptual=opts.ft_perceptual)
        return avatar.render_full_batch(np.asarray(target_points, np.float32), photos[0], shot=0)

    return render


METHODS: dict[str, Union[MethodFactory, str]] = {"static": _static, "warp-crop": _warp_crop, "photowarp": _photowarp,
                                                 "model": _model}
"""name -> factory(opts) -> :data:`UserRender`, or ``"module:function"`` naming such a factory (imported on first
use)."""


def register_method(name: str, factory: MethodFactory | str) -> None:
    """Make ``name`` a method of the user protocol (``--method name``); replaces an entry of that name."""
    METHODS[name] = factory


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def make_method(name: str, opts: EvalOptions) -> UserRender:
    """The render callable of method ``name`` for these options. ``model:CKPT`` is the ``model`` method with
    checkpoint ``CKPT`` (a bundled name or a folder), so one run can compare several models side by side."""
    if name.startswith("model:"):
        from dataclasses import replace

        return _model(replace(opts, checkpoint=name.split(":", 1)[1]))
    if name not in METHODS:
        raise InputError("eval options", f"unknown user-path method {name!r}; choose from {', '.join(METHODS)}")
    factory = METHODS[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(opts)


# ------------------------------------------------------------------------------------------------ data

def source_video(ds, clip: int) -> Path:
    """The original video of a prepared clip (``ClipRecord.source``, as ``reenact prepare`` was given it)."""
    path = Path(ds.records[clip].source)
    if not path.is_file():
        raise InputError(path, f"original video of {ds.records[clip].key} not found",
                         "the user protocol decodes the original videos; run it from the folder `reenact prepare` "
                         "ran in (the recorded paths are relative to it)")
    return path


def decode_frames(path: Path, ids) -> dict[int, np.ndarray]:
    """Full-resolution RGB frames ``ids`` (0-based decode order, as ``reenact prepare`` counted) of a video, one
    pass that keeps only those."""
    from reenact import io

    want = {int(i) for i in ids}
    out = {}
    for t, frame in enumerate(io.read_frames(path, max_frames=max(want) + 1)):
        if t in want:
            out[t] = np.ascontiguousarray(frame)
    missing = want - set(out)
    if missing:
        raise InputError(path, f"decodes to fewer frames than prepared (no frame {min(missing)})")
    return out


def full_points(meta: dict, frame_ids: np.ndarray) -> np.ndarray:
    """(N, 68, 2) landmarks of source frames ``frame_ids`` in full-frame pixels: the stored crop points through
    the inverse of each frame's crop matrix."""
    from reenact.crop import invert, transform_points

    return np.stack([transform_points(meta["points"][f], invert(meta["matrices"][f])) for f in frame_ids])


def crop_frames(frames: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) crops of full frames (N, H, W, 3), each by its own (2, 3) frame -> crop matrix."""
    from reenact.crop import crop_image

    return np.stack([crop_image(f, m, size) for f, m in zip(frames, matrices)])


# ------------------------------------------------------------------------------------------------ metrics

def user_metrics(fake: np.ndarray, real: np.ndarray, points: np.ndarray, matrices: np.ndarray, size: int,
                 real_faces: list, analyzer, sface=None) -> dict[str, np.ndarray]:
    """Per-target metrics of pasted-back full frames ``fake`` vs ``real`` ((N, H, W, 3) uint8), target
    ``points`` (N, 68, 2) full-frame pixels, crop ``matrices`` (N, 2, 3) of the targets: the self protocol's
    metrics and the mouth interior on both cut to ``size`` px crops, the face sharpness on the full frames.
    ``real_faces``: the analyzer's faces of the real crops; ``sface``: an SFace scorer or None. Values (N,), NaN
    where undefined."""
    from reenact.crop import transform_points
    from reenact.metrics.regions import mouth_interior_metrics
    from reenact.metrics.sharpness import lapvar_ratio

    crop_pts = np.stack([transform_points(p, m) for p, m in zip(points, matrices)])
    fake_c, real_c = crop_frames(fake, matrices, size), crop_frames(real, matrices, size)
    out = self_metrics(fake_c, real_c, crop_pts, real_faces, analyzer, sface)
    interior = mouth_interior_metrics(fake_c, real_c, crop_pts)
    out["interior_psnr"] = np.minimum(interior["interior_psnr"], PSNR_CAP)
    out["interior_l1"] = interior["interior_l1"]
    out["face_sharpness"] = lapvar_ratio(fake, real, points)
    return out


# ------------------------------------------------------------------------------------------------ running

def run_user_eval(data: str | Path, out: str | Path, opts: EvalOptions) -> EvalReport:
    """Evaluate ``opts.methods`` (names in :data:`METHODS`) on the user path of the prepared dataset ``data``;
    write results.json, results.md and the grids to ``out``."""
    from tqdm.auto import tqdm

    from reenact.metrics.regions import eye_gap, open_mouth, opening_gap

    run = start_run(data, opts, make_method)
    ds, pool, methods, analyzer = run.ds, run.pool, run.methods, run.analyzer
    sface, sface_status = run.sface, run.sface_status
    keys = [(m, k) for m in opts.methods for k in opts.shots]
    rows: dict[tuple[str, int], list[dict]] = {key: [] for key in keys}
    gaps = {k: {"mouth": [], "eyes": []} for k in opts.shots}
    skipped = {k: 0 for k in opts.shots}
    open_count = {k: 0 for k in opts.shots}
    real_no_face = 0
    grid_cands: dict[int, list[tuple]] = {k: [] for k in opts.shots}

    for clip in tqdm(pool, desc="eval user", unit="clip", disable=not opts.progress):
        meta = ds.meta(clip)
        _, valid = stored_points(meta)
        stored = meta["frame_ids"]
        _, tgt = select_frames(valid, 1, opts.frames_per_clip)
        srcs = {k: select_frames(valid, k, 1)[0] for k in opts.shots}
        tgt_ids = stored[tgt]
        src_ids = {k: stored[s] for k, s in srcs.items() if s is not None}
        frames = decode_frames(source_video(ds, clip), np.concatenate([tgt_ids, *src_ids.values()]))
        real = np.stack([frames[f] for f in tgt_ids])
        tgt_pts, mats = full_points(meta, tgt_ids), meta["matrices"][tgt_ids]
        real_faces = [analyzer.analyze(c) for c in crop_frames(real, mats, ds.size)]
        real_no_face += sum(f is None for f in real_faces)
        for k in opts.shots:
            if k not in src_ids:
                skipped[k] += 1
                continue
            photos = np.stack([frames[f] for f in src_ids[k]])
            photo_pts = full_points(meta, src_ids[k])
            mouth_gap = opening_gap(photo_pts, tgt_pts)
            gaps[k]["mouth"].extend(mouth_gap.tolist())
            gaps[k]["eyes"].extend(eye_gap(photo_pts, tgt_pts).tolist())
            open_count[k] += int(open_mouth(tgt_pts).sum())
            outputs = {}
            for m, render in methods.items():
                fake = np.asarray(render(photos, photo_pts, tgt_pts))
                if fake.shape != real.shape or fake.dtype != np.uint8:
                    raise ValueError(f"method {m!r} returned {fake.dtype} {fake.shape}, expected uint8 {real.shape}")
                outputs[m] = fake
                met = user_metrics(fake, real, tgt_pts, mats, ds.size, real_faces, analyzer, sface)
                rows[(m, k)].extend({key: float(v[j]) for key, v in met.items()} for j in range(len(fake)))
            # the clip's hardest target is its grid candidate: one row per clip at most, so no clip fills the grid
            j = int(np.argmax(mouth_gap))
            tiles = _face_tiles([real[j]] + [outputs[m][j] for m in opts.methods], tgt_pts[j])
            grid_cands[k].append((float(mouth_gap[j]), ds.records[clip].key, int(tgt_ids[j]), tiles))

    results = _summarise(opts, ds, pool, rows, gaps, skipped, open_count, real_no_face, sface_status)
    grids = {}
    for k, cands in grid_cands.items():
        chosen = sorted(cands, key=lambda c: -c[0])[:opts.grid_rows]
        results["grid"][str(k)] = [{"clip": c[1], "frame": c[2], "mouth_gap": round(c[0], 4)} for c in chosen]
        if chosen:
            grids[k] = [c[3] for c in chosen]
    results["seconds"] = run.seconds()
    out = Path(out)
    files = write_results(out, results, user_markdown(results))
    from reenact import io

    for k, rws in grids.items():
        path = out / f"grid_k{k}.png"
        io.write_image(path, face_grid(rws, ["real"] + [f"{m} K={k}" for m in opts.methods]))
        files.append(path)
    return EvalReport(results, out, files, results["seconds"])


def _summarise(opts, ds, pool, rows, gaps, skipped, open_count, real_no_face,
               sface_status: dict | None = None) -> dict:
    from reenact.metrics.regions import hard_frames

    res: dict = {"protocol": "user", "data": str(ds.root), "split": opts.split,
                 "clips": [ds.records[c].key for c in pool], "options": asdict(opts), "metrics": list(USER_METRICS),
                 "real": {"no_face": int(real_no_face)}, "results": {}, "grid": {},
                 "sface": dict(sface_status or {"status": "unavailable", "reason": "not measured"})}
    for (m, k), lst in rows.items():
        subsets = {"all": np.ones(len(lst), bool)}
        subsets["hard"] = hard_frames(np.asarray(gaps[k]["mouth"])) if lst else np.zeros(0, bool)
        subsets["hard_eyes"] = hard_frames(np.asarray(gaps[k]["eyes"])) if lst else np.zeros(0, bool)
        entry = {"targets": len(lst), "hard_targets": int(subsets["hard"].sum()),
                 "hard_eye_targets": int(subsets["hard_eyes"].sum()), "open_mouth_targets": open_count[k],
                 "clips_skipped": skipped[k], "no_face": int(sum(not r["face_found"] for r in lst))}
        for name, sel in subsets.items():
            entry[name] = {n: finite_mean(np.array([r[n] for r in lst])[sel]) if lst else None for n in USER_METRICS}
            if (sface_status or {}).get("status") != "ok":
                entry[name]["sface_sim"] = "unavailable"
        res["results"].setdefault(m, {})[str(k)] = entry
    return res


def user_markdown(res: dict) -> str:
    """The tables of ``results.md`` of the user protocol: the headline figures, then every metric per subset."""
    head = ["method", "K"] + [t for _, _, t in _HEADLINE]
    lines = ["# reenact eval: user path (pasted-back full frames)", "",
             f"{len(res['clips'])} clips of the `{res['split']}` split of `{res['data']}`, "
             f"{res['options']['frames_per_clip']} targets per clip, seed {res['options']['seed']}; sources "
             "decoded at full resolution from the original videos, outputs pasted back into the first shot, "
             "cut with each target's crop for the crop metrics.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, per_k in res["results"].items():
        for k, e in per_k.items():
            cells = [m, k] + [fmt(e[s][n], _USER_TITLES[n][1]) for s, n, _ in _HEADLINE]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for k, e in next(iter(res["results"].values()), {}).items():  # the same targets for every method
        lines.append(f"K={k}: {e['targets']} targets, {e['open_mouth_targets']} with an open mouth (interior "
                     f"scored), {e['hard_targets']} hard frames, {e['hard_eye_targets']} hard-eye frames, "
                     f"{e['clips_skipped']} clips skipped (too few source frames).")
    names = res["metrics"]
    full_head = ["method", "K"] + [_USER_TITLES[n][0] for n in names] + ["no face / frames"]
    for subset, title in (("all", "All targets"), ("hard", "Hard frames (mouth opening far from the sources')"),
                          ("hard_eyes", "Hard-eye frames (eye opening far from the sources')")):
        lines += ["", f"## {title}", "", "| " + " | ".join(full_head) + " |", "|" + "---|" * len(full_head)]
        for m, per_k in res["results"].items():
            for k, e in per_k.items():
                cells = [m, k] + [fmt(e[subset][n], _USER_TITLES[n][1]) for n in names]
                n_sub = {"all": e["targets"], "hard": e["hard_targets"], "hard_eyes": e["hard_eye_targets"]}[subset]
                cells.append(f"{e['no_face']}/{e['targets']}" if subset == "all" else f"({n_sub} frames)")
                lines.append("| " + " | ".join(cells) + " |")
    rows = ", ".join(f"{len(v)} at K={k}" for k, v in res["grid"].items())
    lines += ["", f"Real frames: no face found in {res['real']['no_face']} crops. Grid rows: {rows} (the hardest "
                  "target of each clip, hardest first)."]
    if res.get("seconds") is not None:
        lines.append(f"Wall time: {res['seconds']:.0f} s.")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ grid

def _face_tiles(images: list[np.ndarray], points: np.ndarray) -> list[np.ndarray]:
    """The same square around the target ``points`` (68, 2) cut from each full frame, at full resolution."""
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    half = GRID_FACE_SCALE * float((hi - lo).max()) / 2
    cx, cy = (lo + hi) / 2
    h, w = images[0].shape[:2]
    x0, y0 = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
    x1, y1 = min(w, int(round(cx + half))), min(h, int(round(cy + half)))
    return [np.ascontiguousarray(im[y0:y1, x0:x1]) for im in images]


def face_grid(rows: list[list[np.ndarray]], labels: list[str], fill: int = 128) -> np.ndarray:
    """Rows of tiles at their own resolution under a header of column labels. Tiles of different sizes (faces
    of different videos) are centred on a ``fill`` background as wide as the widest tile and as tall as the
    row's own tiles, never resized."""
    tw = max(t.shape[1] for r in rows for t in r)

    def pad(t, th):
        cell = np.full((th, tw, 3), fill, np.uint8)
        y, x = (th - t.shape[0]) // 2, (tw - t.shape[1]) // 2
        cell[y:y + t.shape[0], x:x + t.shape[1]] = t
        return cell

    header = np.concatenate([label(t, tw) for t in labels], 1)
    body = [np.concatenate([pad(t, max(u.shape[0] for u in r)) for t in r], 1) for r in rows]
    return np.concatenate([header] + body, 0)
