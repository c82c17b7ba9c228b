"""Episodes for region generators: K source crops of a region + one target crop of the same clip.

Each episode is built on the CPU (DataLoader workers) from the region set of a prepared folder
(:mod:`reenact.data.regions`):

- ``src`` ``(Kmax, S, S, 3)`` uint8 and ``src_draw`` ``(Kmax, 3, S, S)`` uint8 (their landmark images x 255), ``shots`` ``(Kmax,)``: 1 for
  the ``k`` shots the embedder averages, 0 for padding (k is drawn per episode, so one model serves 1-8 shots);
- ``warped``: the first shot warped to the target's landmarks, read through the same piecewise-affine map the
  renderer uses on a photo (:class:`reenact.photowarp.PhotoWarp`, anchors fixed around the face), sampled
  from the first shot's crop;
- ``tgt``, ``tgt_draw``: the target crop and its landmark image; ``inner``: the target's inner polygon
  (dilated 2 px), where teeth and cavity are, weighted in the loss and scored in validation; ``support``
  (uint8 x 255): where the renderer lets G paint (:func:`reenact.renderer.support` x the crop's edge window),
  so training blends exactly as the renderer does;
- ``video``: the clip's row in D's per-video table; ``gain``, ``offset`` ``(3,)``: the episode's colour jitter,
  applied on the training device (:func:`batch_to`), since images travel as uint8 ``(.., S, S, 3)``.

Pairs: with probability ``hard`` the target is one of the quarter of the clip's frames whose opening differs
most from the first shot's (an open mouth from a closed one is what only a learned model can do), else any
frame. Augmentation (training only): one colour jitter per episode, a mirror flip of the whole episode, small
independent zoom/rotation/shift of each crop, and a random blur of the warped input (the renderer samples
from photos of any sharpness).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from reenact.crop import border_mask, invert, transform_points
from reenact.data.dataset import held_out
from reenact.geometry import compose
from reenact.photowarp import PhotoWarp, sample
from reenact.regions import draw_region, get_region, opening
from reenact.renderer import WINDOW_FEATHER, support


@dataclass(frozen=True)
class RegionEpisodeOptions:
    max_shots: int = 8
    hard: float = 0.5  # share of episodes whose target is a hard frame (see module doc)
    augment: bool = True
    flip: float = 0.5
    zoom: float = 0.06  # +- relative
    rotate: float = 5.0  # +- degrees
    shift: float = 0.04  # +- fraction of the crop side
    colour: float = 0.08  # +- per-channel gain and offset
    blur: float = 0.5  # probability of blurring the warped input (sigma up to 1 px)
    shots: int = 0  # > 0: always this many shots (validation); 0: k ~ U[1, max_shots]


class RegionClips:
    """All region crops of some clips in memory: ``frames[c]`` ``(N, S, S, 3)`` uint8, ``matrices[c]``
    ``(N, 2, 3)`` frame -> crop, ``points[c]`` ``(N, 68, 2)`` frame pixels, ``openings[c]`` ``(N,)``."""

    def __init__(self, root, region: str, keys: list[str] | None = None, progress: bool = False):
        from tqdm.auto import tqdm

        from reenact.data.regions import RegionData, read_region_index

        index = read_region_index(root, region)
        self.keys = sorted(index) if keys is None else list(keys)
        self.identities = [index[k].identity for k in self.keys]
        data = RegionData(root, region, self.keys)
        self.spec = get_region(region)
        self.frames, self.matrices, self.points, self.openings = [], [], [], []
        for i in tqdm(range(len(self.keys)), desc=f"load {region}", disable=not progress):
            meta = data.meta(i)
            mats = meta["matrices"].astype(np.float64)
            crop_pts = meta["points"].astype(np.float32)
            self.frames.append(data.frames(i))
            self.matrices.append(mats)
            self.points.append(np.stack([transform_points(p, invert(m)) for p, m in zip(crop_pts, mats)]))
            self.openings.append(opening(self.points[-1]))

    def __len__(self) -> int:
        return len(self.keys)

    def split(self, val_fraction: float = 0.1) -> tuple[list[int], list[int]]:
        """(train, val) clip indices by identity, with :meth:`PreparedDataset.split`'s hash rule."""
        held = held_out(set(self.identities), val_fraction)
        return ([c for c, i in enumerate(self.identities) if i not in held],
                [c for c, i in enumerate(self.identities) if i in held])


def _similarity(rng: np.random.Generator, size: int, o: RegionEpisodeOptions) -> np.ndarray:
    """Random 2x3 similarity about the crop centre (crop pixels -> augmented crop pixels)."""
    z = 1 + rng.uniform(-o.zoom, o.zoom)
    a = np.deg2rad(rng.uniform(-o.rotate, o.rotate))
    t = rng.uniform(-o.shift, o.shift, 2) * size
    c = (size - 1) / 2
    r = z * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([r, (c - r @ [c, c] + t)[:, None]], 1)


def _u8(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img))


def _u8_draw(d: np.ndarray) -> np.ndarray:
    """Landmark images in [0, 1] as uint8 (x 255): a quarter of the bytes through the loader's shared memory."""
    return np.ascontiguousarray(np.round(d * 255), dtype=np.uint8)


def batch_to(b: dict, device) -> dict:
    """A collated batch on ``device`` as the networks take it: images float in [-1, 1] ``(..., 3, S, S)`` with
    the episode's colour jitter, landmark images and ``inner`` float in [0, 1]."""
    b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
    g, o = b["gain"], b["offset"]
    for k in ("src", "warped", "tgt"):
        b[k] = colour(b[k], g, o)
    for k in ("src_draw", "tgt_draw", "inner", "support"):
        if k in b:
            b[k] = b[k].float() / 255 if k != "inner" else b[k].float()
    return b


def colour(images: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, ..., H, W, 3)`` + per-episode ``gain``/``offset`` ``(B, 3)`` -> float ``(B, ..., 3, H, W)``
    in [-1, 1] (offset in [0, 1] units)."""
    shape = (images.shape[0],) + (1,) * (images.ndim - 2) + (3,)
    x = images.float().div(255) * gain.view(shape) + offset.view(shape)
    return x.clamp(0, 1).movedim(-1, -3) * 2 - 1


class RegionEpisodes(torch.utils.data.Dataset):
    """``len(self)`` episodes per epoch over ``clips`` (indices into ``data``); item ``i`` is drawn from a
    generator seeded by ``(seed, epoch, i)``, so a run is reproducible with any number of workers."""

    def __init__(self, data: RegionClips, clips: list[int], length: int, seed: int = 0,
                 options: RegionEpisodeOptions = RegionEpisodeOptions(), epoch: int = 0):
        self.data, self.clips, self.length, self.seed, self.o, self.epoch = data, list(clips), length, seed, options, epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        d, o, S = self.data, self.o, self.data.spec.size
        c = self.clips[rng.integers(len(self.clips))]
        n = len(d.frames[c])
        k = o.shots or int(rng.integers(1, o.max_shots + 1))
        src_ids = rng.choice(n, size=min(k, n), replace=False) if n >= k else rng.integers(0, n, k)
        s0 = int(src_ids[0])
        if rng.random() < o.hard:
            diff = np.abs(d.openings[c] - d.openings[c][s0])
            t = int(rng.choice(np.argsort(diff)[-max(1, n // 4):]))
        else:
            t = int(rng.integers(n))
        aug = o.augment
        gain = 1 + (rng.uniform(-o.colour, o.colour, 3) if aug else np.zeros(3))
        offset = rng.uniform(-o.colour, o.colour, 3) if aug else np.zeros(3)
        flip = aug and rng.random() < o.flip

        def look(img):  # the episode's mirror flip
            return img[:, ::-1] if flip else img

        def crop(frame_id, jitter=True):  # augmented crop, its frame -> crop matrix, its drawing (unflipped)
            a = _similarity(rng, S, o) if (aug and jitter) else np.array([[1.0, 0, 0], [0, 1.0, 0]])
            img = cv2.warpAffine(d.frames[c][frame_id], a, (S, S), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT) if aug and jitter else d.frames[c][frame_id]
            m = compose(a, d.matrices[c][frame_id])
            return img, m, draw_region(transform_points(d.points[c][frame_id], m), d.spec)

        srcs, draws = [], []
        m0 = None
        for j, f in enumerate(src_ids):
            img, m, dr = crop(int(f))
            if j == 0:
                src0_img, m0 = img, m
            srcs.append(look(img))
            draws.append(dr[:, :, ::-1] if flip else dr)
        tgt_img, mt, tgt_draw = crop(t)
        # the warp: target crop pixels -> frame (target's matrix) -> source frame by the landmark warp -> the
        # first shot's crop (its matrix); sampled from that crop, before its colour jitter / flip
        pw = PhotoWarp(d.points[c][s0])
        coords = pw.map(d.points[c][t], invert(mt), (S, S))
        coords = transform_points(coords, m0)
        warped = sample(src0_img, coords)
        if aug and rng.random() < o.blur:
            warped = cv2.GaussianBlur(warped, (0, 0), rng.uniform(0.3, 1.0))
        inner = cv2.dilate((tgt_draw[0] > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8))
        sup = support(transform_points(d.points[c][t], mt), d.spec, S) * border_mask(S, WINDOW_FEATHER)
        pad = o.max_shots - len(srcs)
        # numpy, not torch, builds the arrays: a torch op per item costs far more than its work when the
        # process's intra-op threads compete with other processes for the cores
        src_t = torch.from_numpy(np.stack(srcs + [np.zeros((S, S, 3), np.uint8)] * pad))
        draw_t = torch.from_numpy(_u8_draw(np.stack(draws + [np.zeros((3, S, S), np.float32)] * pad)))
        shots = torch.tensor([1.0] * len(srcs) + [0.0] * pad)
        tgt_draw = tgt_draw[:, :, ::-1] if flip else tgt_draw
        inner = inner[:, ::-1] if flip else inner
        sup = sup[:, ::-1] if flip else sup
        return {"src": src_t, "src_draw": draw_t, "shots": shots, "warped": _u8(look(warped)),
                "tgt": _u8(look(tgt_img)), "gain": torch.tensor(gain, dtype=torch.float32),
                "offset": torch.tensor(offset, dtype=torch.float32), "tgt_draw": torch.from_numpy(_u8_draw(tgt_draw)),
                "inner": torch.from_numpy(np.ascontiguousarray(inner, np.uint8))[None],
                "support": torch.from_numpy(_u8_draw(sup))[None],
                "video": torch.tensor(c, dtype=torch.long),
                "open": torch.tensor(float(d.openings[c][t]), dtype=torch.float32)}
