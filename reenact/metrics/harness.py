"""The evaluation harness: what every protocol of ``reenact eval`` builds on.

Protocols (self / cross reenactment in :mod:`reenact.metrics.evaluate`, speech in :mod:`reenact.metrics.speech`,
the user path in :mod:`reenact.metrics.userpath`) import this module and never each other; the dispatcher
(:func:`reenact.metrics.evaluate.run_eval`) imports the protocols. Here:

- the clip pool (:func:`split_clips`, :func:`seeded_subset`, :func:`clip_pool`) and frame selection
  (:func:`select_frames`, :func:`stored_points`);
- the crop methods' renderers (:class:`Renderer`: ``static``, ``warp``, ``model``; :func:`make_renderer`) and the
  render cache's wrapper (:class:`CachedRenderer`, keyed by :func:`method_tag`; filled by
  ``python -m reenact.metrics.render_cache``);
- the per-target crop metrics shared by the self and user protocols (:func:`self_metrics`, :data:`SELF_METRICS`;
  single metrics by name: :mod:`reenact.metrics.registry`);
- a run's shared setup (:func:`start_run`: dataset, pool, methods, face analyzer, SFace) and report writing
  (:class:`EvalReport`, :func:`write_results`, :func:`grid_image`, :func:`fmt`, :func:`finite_mean`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from reenact.errors import InputError
from reenact.landmarks.parts import MOUTH

if TYPE_CHECKING:  # pragma: no cover
    from reenact.metrics.evaluate import EvalOptions

# Rigid points for alignment: the nose (bridge and base) and the four eye corners barely move with expression.
RIGID = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])
# PSNR of identical images is infinite; averages cap it here so one perfect frame does not swamp a mean.
PSNR_CAP = 100.0

SELF_METRICS = ("ssim", "psnr", "mouth_ssim", "mouth_psnr", "eyes_ssim", "eyes_psnr", "lmd", "lmd_mouth", "acd",
                "csim", "sface_sim", "pose_err", "ear_err", "lapvar_ratio", "cpbd")
# Column titles of results.md: (key, title, format)
TITLES = {"ssim": ("SSIM", "{:.3f}"), "psnr": ("PSNR", "{:.2f}"), "mouth_ssim": ("mouth SSIM", "{:.3f}"),
          "mouth_psnr": ("mouth PSNR", "{:.2f}"), "eyes_ssim": ("eyes SSIM", "{:.3f}"),
          "eyes_psnr": ("eyes PSNR", "{:.2f}"), "lmd": ("LMD", "{:.4f}"), "lmd_mouth": ("mouth LMD", "{:.4f}"),
          "acd": ("ACD", "{:.3f}"), "csim": ("CSIM", "{:.4f}"), "acd_driver": ("ACD to driver", "{:.3f}"),
          "sface_sim": ("SFace cos (same > 0.363)", "{:.3f}"),
          "pose_err": ("pose err (deg)", "{:.2f}"), "ear_err": ("EAR err", "{:.4f}"),
          "lapvar_ratio": ("sharpness ratio", "{:.3f}"), "cpbd": ("CPBD", "{:.3f}")}


# ------------------------------------------------------------------------------------------------ methods

class Renderer(Protocol):
    """A reenactment method: K source crops (K, S, S, 3) uint8 with their landmarks (K, 68, 2) in crop pixels,
    and N target landmarks (N, 68, 2) -> N rendered crops (N, S, S, 3) uint8."""

    def render(self, src_images: np.ndarray, src_points: np.ndarray, tgt_points: np.ndarray) -> np.ndarray: ...


def nearest_source(src_points: np.ndarray, tgt_points: np.ndarray) -> np.ndarray:
    """(N,) index of the source whose landmarks are closest (mean point distance) to each target's."""
    d = np.linalg.norm(np.asarray(tgt_points)[:, None] - np.asarray(src_points)[None], axis=-1).mean(-1)
    return d.argmin(1)


class StaticRenderer:
    """The nearest source frame, unchanged."""

    def render(self, src_images, src_points, tgt_points):
        return np.ascontiguousarray(src_images[nearest_source(src_points, tgt_points)])


class WarpRenderer:
    """The nearest source frame warped onto the target landmarks (``reenact.warp.warp_images``)."""

    def __init__(self, kind: str = "pa", device: str = "cpu", batch_size: int = 16):
        self.kind, self.device, self.batch_size = kind, device, batch_size

    def render(self, src_images, src_points, tgt_points):
        from reenact.warp import warp_images

        k = nearest_source(src_points, tgt_points)
        return warp_images(src_images[k], src_points[k], tgt_points, self.kind, self.device, self.batch_size)


class ModelRenderer:
    """A meta-learned model through the public API: ``Reenactor.load(checkpoint, device)``, then per clip
    ``personalize(source crops, steps=ft_steps, landmarks=source points)`` and ``render_batch(targets)``.

    Prepared crops of the model's size are given with ``cropped=True``, used as they are (the frame the model was
    trained in, the same pixels the warp reference gets): cropping them again is a near-identity resampling that
    blurs the sources, a handicap the warp does not have. Crops of another size are cropped by the API like any
    photo, and outputs are resized back.
    """

    def __init__(self, checkpoint: str, device: str = "cpu", ft_steps: int = 0, seed: int = 0,
                 batch_size: int = 16, ft_train: str = "all", ft_lr_psi: float | None = None,
                 ft_warp_trust: float = 0.0, ft_identity: float = 0.0, ft_perceptual: float | None = None):
        from reenact.api import Reenactor

        self.reenactor = Reenactor.load(checkpoint, device)
        self.ft_steps, self.seed, self.batch_size = int(ft_steps), int(seed), batch_size
        self.ft_train, self.ft_lr_psi, self.ft_warp_trust = ft_train, ft_lr_psi, float(ft_warp_trust)
        self.ft_identity, self.ft_perceptual = float(ft_identity), ft_perceptual
        self._last: tuple[str, object] | None = None  # (sources' hash, avatar) of the latest personalisation

    def render(self, src_images, src_points, tgt_points):
        import hashlib

        import cv2
        import torch

        # The same sources again (the AV-sync segment after a clip's targets) reuse the avatar: personalisation is
        # seeded, so a second one would give the same avatar at the cost of another fine-tuning.
        h = hashlib.sha1(np.ascontiguousarray(src_images).tobytes())
        h.update(np.ascontiguousarray(src_points, np.float32).tobytes())
        if self._last is not None and self._last[0] == h.hexdigest():
            avatar = self._last[1]
        else:
            torch.manual_seed(self.seed)
            as_is = src_images.shape[1] == self.reenactor.resolution  # see the class docstring
            avatar = self.reenactor.personalize(list(src_images), steps=self.ft_steps, landmarks=list(src_points),
                                                progress=False, seed=self.seed, train=self.ft_train,
                                                lr_psi=self.ft_lr_psi, warp_trust=self.ft_warp_trust,
                                                identity=self.ft_identity, perceptual=self.ft_perceptual,
                                                cropped=as_is)
            self._last = (h.hexdigest(), avatar)
        S, R = src_images.shape[1], avatar.resolution
        out = avatar.render_batch(np.asarray(tgt_points, np.float32) * (R / S), batch_size=self.batch_size)
        if R != S:
            interp = cv2.INTER_AREA if R > S else cv2.INTER_CUBIC
            out = np.stack([cv2.resize(o, (S, S), interpolation=interp) for o in out])
        return out


def make_renderer(method: str, opts: "EvalOptions") -> Renderer:
    """The renderer of a crop protocol's method (``static``, ``warp``, ``model``)."""
    if method == "static":
        return StaticRenderer()
    if method == "warp":
        return WarpRenderer(opts.warp_kind, opts.device, opts.batch_size)
    if method == "model":
        return ModelRenderer(opts.checkpoint, opts.device, opts.ft_steps, opts.seed, opts.batch_size,
                             opts.ft_train, opts.ft_lr_psi, opts.ft_warp_trust,
                             opts.ft_identity, opts.ft_perceptual)
    raise ValueError(f"unknown method {method!r}")


class CachedRenderer:
    """Wraps a renderer (``render(src_images, src_points, tgt_points) -> frames``) with an on-disk cache."""

    def __init__(self, renderer, directory: str | Path, tag: str):
        self.renderer, self.dir, self.tag = renderer, Path(directory), tag
        self.hits = self.misses = 0

    def key(self, src_points: np.ndarray, tgt_points: np.ndarray) -> Path:
        h = hashlib.sha1()
        for a in (src_points, tgt_points):
            a = np.ascontiguousarray(a, np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return self.dir / f"{self.tag}-{h.hexdigest()[:20]}.npz"

    def render(self, src_images, src_points, tgt_points):
        path = self.key(src_points, tgt_points)
        if path.exists():
            with np.load(path, allow_pickle=False) as z:  # plain arrays only: never unpickle
                self.hits += 1
                return z["frames"]
        self.misses += 1
        out = self.renderer.render(src_images, src_points, tgt_points)
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, frames=np.asarray(out, np.uint8))
            os.replace(tmp, path)  # atomic: a killed run leaves no half-written entry
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out


def method_tag(method: str, k: int, opts) -> str:
    """Cache tag of one method at K shots: the settings that change its outputs."""
    if method != "model":
        return f"{method}-{getattr(opts, 'warp_kind', 'pa') if method == 'warp' else 'x'}-k{k}"
    ft = f"ft{int(opts.ft_steps)}"
    if int(opts.ft_steps):  # only settings away from the paper's FT enter the tag
        ft += ("" if opts.ft_train == "all" else opts.ft_train) \
            + ("" if opts.ft_lr_psi is None else f"lr{float(opts.ft_lr_psi):g}") \
            + (f"wt{float(opts.ft_warp_trust):g}" if opts.ft_warp_trust else "") \
            + (f"id{float(opts.ft_identity):g}" if opts.ft_identity else "") \
            + ("" if opts.ft_perceptual is None else f"pc{float(opts.ft_perceptual):g}")
    # "-v2": sources given to the model as they are; caches of the earlier harness, which cropped them again,
    # must not answer for it
    return f"model-{checkpoint_tag(opts.checkpoint)}-{ft}-s{int(opts.seed)}-k{k}-v2"


def checkpoint_tag(checkpoint: str | Path) -> str:
    """A checkpoint's name in cache tags: from its content (meta.json: step, save time), not its path, so a cache
    rendered from a copy on another machine matches the original here. The weights hash that loading caches in
    meta.json (``reenact.checkpoint.checkpoint_hash``) is left out: a first load must not rename the checkpoint."""
    import json

    from reenact.checkpoint import HASH_KEY, resolve_checkpoint

    meta = json.loads((resolve_checkpoint(str(checkpoint)) / "meta.json").read_text())
    meta.pop(HASH_KEY, None)
    # the exact text checkpoint.save_checkpoint writes, so tags of never-loaded checkpoints did not change
    return hashlib.sha1(json.dumps(meta, indent=1, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ sampling

def split_clips(ds, opts: "EvalOptions") -> list[int]:
    """The clips of ``opts.split``: the held-out identities of ``PreparedDataset.split(None, val_fraction)``
    (``val``), the others (``train``) or ``all``."""
    train, val = ds.split(None, opts.val_fraction)
    return {"val": val, "train": train, "all": list(range(len(ds)))}[opts.split]


def seeded_subset(clips: list[int], opts: "EvalOptions") -> list[int]:
    """At most ``opts.clips`` of ``clips``: a subset seeded by ``opts.seed``, in order (all when None)."""
    if opts.clips is not None and opts.clips < len(clips):
        rng = np.random.default_rng(opts.seed)
        return sorted(rng.choice(clips, size=opts.clips, replace=False).tolist())
    return list(clips)


def no_clips(ds, opts: "EvalOptions", what: str = "clips") -> InputError:
    """The error of a split without ``what`` to evaluate."""
    return InputError(ds.root, f"the {opts.split!r} split has no {what}",
                      "use --split all for a small dataset" if opts.split == "val" else None)


def clip_pool(ds, opts: "EvalOptions") -> list[int]:
    """The evaluated clips: :func:`seeded_subset` of :func:`split_clips`; an error when the split is empty."""
    pool = split_clips(ds, opts)
    if not pool:
        raise no_clips(ds, opts)
    return seeded_subset(pool, opts)


def stored_points(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 68, 2) landmarks and (N,) detected flags of a clip's stored frames (``meta['frame_ids']``)."""
    ids = meta["frame_ids"]
    return meta["points"][ids].astype(np.float32), meta["valid"][ids].astype(bool)


def select_frames(valid: np.ndarray, k: int, m: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Source and target indices among a clip's stored frames (``valid``: (N,) landmarks detected there).

    Sources: ``k`` frames evenly spread over the first third; targets: ``m`` frames evenly spaced over the rest.
    Only frames with detected (not interpolated) landmarks are used. Sources are None when the first third has
    fewer than ``k`` such frames.
    """
    n = len(valid)
    third = max(1, n // 3)
    head = np.flatnonzero(valid[:third])
    tail = third + np.flatnonzero(valid[third:])
    src = head[np.round(np.linspace(0, len(head) - 1, k)).astype(int)] if len(head) >= k else None
    tgt = np.unique(tail[np.round(np.linspace(0, len(tail) - 1, m)).astype(int)]) if len(tail) else tail
    return src, tgt


# ------------------------------------------------------------------------------------------------ metrics

def self_metrics(fake: np.ndarray, real: np.ndarray, tgt_points: np.ndarray, real_faces: list, analyzer,
                 sface=None) -> dict:
    """Per-target metrics of one batch of self-reenactment outputs (see the module docstring); values are
    (N,) arrays, NaN where a face was not found (``sface_sim``: where ``sface``, an
    :class:`~reenact.metrics.identity.SFaceScorer`, is None). Also ``face_found`` (N,) bool."""
    from reenact.metrics.identity import acd, csim
    from reenact.metrics.landmarks import eye_aspect_ratio, head_pose, lmd, pose_error
    from reenact.metrics.psnr_ssim import psnr, ssim
    from reenact.metrics.regions import region_metrics
    from reenact.metrics.sharpness import sharpness

    n, h, w = fake.shape[:3]
    out = {"ssim": ssim(fake, real), "psnr": np.minimum(psnr(fake, real), PSNR_CAP)}
    reg = region_metrics(fake, real, tgt_points)
    reg["mouth_psnr"] = np.minimum(reg["mouth_psnr"], PSNR_CAP)
    reg["eyes_psnr"] = np.minimum(reg["eyes_psnr"], PSNR_CAP)
    out.update(reg)
    sh = sharpness(fake, real, tgt_points, real_cpbd=False)  # the real frames' CPBD is measured once per clip
    out["lapvar_ratio"], out["cpbd"] = sh["lapvar_ratio"], sh["cpbd"]
    out["sface_sim"] = np.full(n, np.nan) if sface is None else sface.similarity(fake, real, tgt_points)
    for k in ("acd", "csim", "lmd", "lmd_mouth", "pose_err", "ear_err"):
        out[k] = np.full(n, np.nan)
    found = np.zeros(n, bool)
    for i in range(n):
        f, r = analyzer.analyze(fake[i]), real_faces[i]
        found[i] = f is not None
        if f is None or r is None:
            continue
        out["acd"][i] = acd(f.descriptor, r.descriptor)
        out["csim"][i] = csim(f.descriptor, r.descriptor)
        out["lmd"][i] = lmd(f.points, r.points)
        out["lmd_mouth"][i] = lmd(f.points, r.points, MOUTH)
        out["pose_err"][i] = pose_error(head_pose(f.points, (h, w)), head_pose(r.points, (h, w)))
        out["ear_err"][i] = abs(eye_aspect_ratio(f.points) - eye_aspect_ratio(r.points))
    out["face_found"] = found
    return out


def finite_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (None and NaN/inf left out); None when there are none."""
    a = np.asarray([v for v in values if v is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else None


# ------------------------------------------------------------------------------------------------ running

@dataclass
class EvalReport:
    """What the protocols return (``reenact.metrics.evaluate.run_eval``): the results dict (as in results.json),
    the output folder, the files written and the wall time."""

    results: dict
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Run:
    """What every protocol's run starts with (:func:`start_run`): the dataset, its evaluated clips, the methods
    (name -> what ``make`` built), the dlib face analyzer, the SFace scorer (None without the ``losses`` extra)
    and its status, and the start time."""

    ds: object
    pool: list[int]
    methods: dict
    analyzer: object
    sface: object
    sface_status: dict
    t0: float

    def seconds(self) -> float:
        return round(time.time() - self.t0, 1)


def start_run(data: str | Path, opts: "EvalOptions", make: Callable[[str, "EvalOptions"], object]) -> Run:
    """Open the prepared dataset ``data``, pick its clips (:func:`clip_pool`), build ``make(method, opts)`` for
    each of ``opts.methods``, and load the face analyzer and the SFace scorer."""
    from reenact.data.dataset import PreparedDataset
    from reenact.metrics.identity import FaceAnalyzer, sface_scorer

    t0 = time.time()
    ds = PreparedDataset(data)
    pool = clip_pool(ds, opts)
    methods = {m: make(m, opts) for m in opts.methods}
    sface, sface_status = sface_scorer(opts.device)
    return Run(ds, pool, methods, FaceAnalyzer(), sface, sface_status, t0)


# ------------------------------------------------------------------------------------------------ reports

def fmt(v, spec: str, missing: str = "n/a") -> str:
    if isinstance(v, str):  # a reason the value is missing ("unavailable")
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return missing
    return spec.format(v)


def label(text: str, width: int) -> np.ndarray:
    import cv2

    h = max(16, width // 10)
    strip = np.full((h, width, 3), 255, np.uint8)
    scale = h / 40
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(strip, text, (max(2, (width - tw) // 2), (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def grid_image(rows: list[list[np.ndarray]], labels: list[str]) -> np.ndarray:
    """Tiles (each (S, S, 3) uint8) in rows, at full resolution, under a header of column labels."""
    s = rows[0][0].shape[1]
    header = np.concatenate([label(t, s) for t in labels], 1)
    body = np.concatenate([np.concatenate(r, 1) for r in rows], 0)
    return np.concatenate([header, body], 0)


def write_results(out: Path, res: dict, markdown: str) -> list[Path]:
    """``results.json`` and ``results.md`` of an evaluation, each written atomically; returns their paths."""
    from reenact import io

    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(res, indent=2, default=str))
    with io.atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown)
    return [out / "results.json", out / "results.md"]
