"""Stage 1 (meta-learning) trainer: optimisers, AMP, DDP, checkpoints, logging, validation.

One step (Zakharov et al. 2019):
  1. sample B episodes of K+1 frames of one clip each; augment them on the device; draw landmark images;
  2. E embeds the K source frames -> e_i; G renders the target landmarks with AdaIN params P e_i;
  3. G/E update on  adv * (-D(fake)) + fm * FM + mch * |W[i] - e_i| + content terms   (D frozen, W detached);
  4. D update(s) on  hinge(real, fake) + mch * |W[i] - e_i|   (e detached): W follows e from D's side.
Splitting L_MCH this way gives each network exactly its own part of the paper's gradient.

Reproducibility: every random draw of a step is a function of (seed, step, rank): the episode indices and
frame choices come from ``EpisodeSampler`` (position in the global sample stream -> clip, seed), the
augmentation from a CPU generator seeded per (seed, step, rank). So resuming from a checkpoint replays exactly
what uninterrupted training would have done (bit-exact on CPU; on GPU up to non-deterministic kernels unless
``train.deterministic``).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Sampler, default_collate

from meta_learning import distributed as dist_utils
from meta_learning.distributed import DistEnv
from reenact.losses import ContentLoss, d_hinge, embedding_match, feature_matching, g_hinge
from reenact.device import resolve_device
from reenact.checkpoint import (LATEST, atomic_write_text, load_checkpoint, prune_checkpoints, save_checkpoint,
                                shard_bytes, write_latest)
from reenact.errors import CheckpointError, NonFiniteLossError
from reenact.gan import update
from reenact.models import GeneratorOutput, build_discriminator, build_embedder, build_generator

__all__ = ["Trainer", "EpisodeSampler", "NonFiniteLossError", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A 32-bit seed from integers (a hash, so nearby inputs give unrelated streams)."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0])


class EpisodeSampler(Sampler):
    """Infinite batch sampler of ``(clip, seed)`` items for ``EpisodeDataset``, sharded by rank.

    The global sample stream is the concatenation of per-epoch permutations of the clips (epoch e shuffled
    with ``mix_seed(seed, e)``); step s covers stream positions ``[s*B*W, (s+1)*B*W)``, rank r the slice
    ``[s*B*W + r*B, s*B*W + (r+1)*B)``. Each item's frame-sampling seed is ``mix_seed(seed, position)``, so
    two ranks with B each draw exactly what one process with 2B draws, and ``start_step`` resumes anywhere.
    """

    def __init__(self, num_clips: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        if num_clips < 1:
            raise ValueError("EpisodeSampler: no clips")
        self.n, self.batch_size, self.seed = num_clips, batch_size, seed
        self.rank, self.world, self.start_step = rank, world_size, start_step
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5EED))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def batch(self, step: int) -> list[tuple[int, int]]:
        base = step * self.batch_size * self.world + self.rank * self.batch_size
        out = []
        for pos in range(base, base + self.batch_size):
            epoch, j = divmod(pos, self.n)
            out.append((int(self._permutation(epoch)[j]), mix_seed(self.seed, pos, 0xE915)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class EmbedderGenerator(nn.Module):
    """E and G as one module (one DDP unit for the G/E update):
    ``forward(src (B,K,3,H,W), src_lmk (B,K,3,H,W), tgt_lmk (B,3,H,W), points (B,K+1,68,2))
    -> (GeneratorOutput, e_mean (B,D))``."""

    def __init__(self, E: nn.Module, G: nn.Module):
        super().__init__()
        self.E, self.G = E, G

    def forward(self, src, src_lmk, tgt_lmk, points):
        e_mean, _ = self.E(src, src_lmk)
        return generate(self.G, tgt_lmk, e_mean, src, points), e_mean


def generate(G: nn.Module, tgt_lmk: torch.Tensor, e: torch.Tensor, src: torch.Tensor,
             points: torch.Tensor) -> GeneratorOutput:
    """G on one episode batch: ``src`` (B, K, 3, H, W) the K shots, ``points`` (B, K+1, 68, 2) their landmarks
    then the target's (a generator that does not read the shots ignores them)."""
    K = src.shape[1]
    return G(tgt_lmk, e, src=src, src_points=points[:, :K], tgt_points=points[:, K])


def _state_to_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _state_from_tensors(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = collections.defaultdict(dict)
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, k = key[len(prefix) + 1:].split(".", 1)
            state[int(pid)][k] = v.float() if k == "step" else v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state[int(pid)][k] = v
    return {"state": dict(state), "param_groups": meta["param_groups"]}


class Trainer:
    """Meta-learning of E, G, D from a Config (``cfg.data``, ``cfg.model``, ``cfg.loss``, ``cfg.train``).

    ``dataset`` / ``val_dataset`` / ``augment`` / ``rasterize`` default to the project's ``EpisodeDataset``
    (splits "train"/"val" of ``cfg.data.root``), ``EpisodeAugment`` and ``reenact.draw.rasterize``; tests and
    benchmarks inject stand-ins with the same interfaces. ``env``: distributed placement (single process if
    omitted). Use :meth:`fit` to train, :meth:`train_step` for one step on a collated batch.
    """

    def __init__(self, cfg, *, env: DistEnv | None = None, dataset=None, val_dataset=None,
                 augment: nn.Module | None = None, rasterize: Callable | None = None):
        self.cfg = cfg
        tc = cfg.train
        self.tc = tc
        self.env = env or DistEnv(device=resolve_device(tc.device))
        self.device = self.env.device
        self.is_main = self.env.is_main
        self.out_dir = Path(tc.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.K = int(cfg.data.k_shots)
        self.R = int(cfg.model.resolution)
        self.batch_size = int(tc.batch_size)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = not tc.deterministic
            torch.backends.cudnn.deterministic = bool(tc.deterministic)
        if tc.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"train.amp must be 'auto', 'bf16' or 'off', got {tc.amp!r}")
        self.amp = tc.amp == "bf16" or (tc.amp == "auto" and cuda)
        self.channels_last = bool(tc.channels_last and cuda)

        if dataset is None:
            from reenact.data.episodes import EpisodeDataset

            if not cfg.data.root:
                raise ValueError("data.root is not set (a folder written by `reenact prepare`)")
            dataset = EpisodeDataset(cfg.data.root, self.K, split="train",
                                     val_identities=list(cfg.data.val_identities) or None,
                                     val_fraction=cfg.data.val_fraction, seed=tc.seed)
        self.dataset = dataset
        self._val_dataset = val_dataset

        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.E = build_embedder(cfg.model)
        self.G = build_generator(cfg.model)
        self.D = build_discriminator(cfg.model, dataset.num_videos)
        self.E_ema = self.G_ema = None
        if tc.ema > 0:
            self.E_ema = copy.deepcopy(self.E).eval().requires_grad_(False)
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for m in self._modules().values():
            m.to(self.device, memory_format=fmt)

        betas = tuple(float(b) for b in tc.betas)
        self.opt_g = torch.optim.Adam(list(self.E.parameters()) + list(self.G.parameters()), lr=tc.lr_g,
                                      betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=tc.lr_d, betas=betas)
        self.content = ContentLoss(cfg.loss).to(self.device)
        self.weights = {"adv": cfg.loss.adv_weight, "fm": cfg.loss.fm_weight, "mch": cfg.loss.mch_weight,
                        **self.content.weights}
        # regularisers a generator reports in its output's ``reg`` (warp-guided G), by the name it reports them under
        self.reg_weights = {name: float(wt) for name, wt in (("flow_tv", cfg.loss.flow_tv_weight),
                                                             ("synth_use", cfg.loss.warp_trust_weight)) if wt > 0}
        self.weights.update(self.reg_weights)
        if augment is None:
            from reenact.data.augment import EpisodeAugment

            augment = EpisodeAugment(cfg.data.augment)
        self.augment = augment.to(self.device)
        if rasterize is None:
            from reenact.draw import rasterize
        self.rasterize = rasterize

        self.step = 0
        self.history: collections.deque = collections.deque(maxlen=10_000)
        self._last_images: dict[str, torch.Tensor] = {}
        self._resume()

        E, G, D = self.E, self.G, self.D
        if tc.compile:
            E, G, D = torch.compile(E), torch.compile(G), torch.compile(D)
        self._D_fast = D
        self._eg = dist_utils.wrap(EmbedderGenerator(E, G), self.env)
        self._d = dist_utils.wrap(D, self.env)

    # ------------------------------------------------------------------ helpers
    def _modules(self) -> dict[str, nn.Module]:
        mods = {"E": self.E, "G": self.G, "D": self.D}
        if self.E_ema is not None:
            mods.update(E_ema=self.E_ema, G_ema=self.G_ema)
        return mods

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _to_net(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def prepare(self, batch: dict, step: int, augment: bool = True):
        """Collated episodes -> device tensors ``frames (B,K+1,3,R,R)`` in [-1,1], landmark images (same
        shape) in [-1,1], their ``points (B,K+1,68,2)`` in pixels of R, ``video_index (B,)``. Augmentation
        randomness is seeded by (seed, step, rank)."""
        dev = self.device
        frames = batch["frames"].to(dev, non_blocking=True)
        points = batch["points"].to(dev, non_blocking=True).float()
        vid = batch["video_index"].to(dev, non_blocking=True).long().view(-1)
        was = self.augment.training
        self.augment.train(bool(augment and self.tc.augment))
        gen = torch.Generator().manual_seed(mix_seed(self.tc.seed, step, self.env.rank, 0xA06))
        frames, points = self.augment(frames, points, generator=gen)
        self.augment.train(was)
        b, n, c, h, w = frames.shape
        if (h, w) != (self.R, self.R):
            frames = F.interpolate(frames.flatten(0, 1), size=(self.R, self.R), mode="bilinear",
                                   antialias=True, align_corners=False).view(b, n, c, self.R, self.R)
            scale = torch.tensor([self.R / w, self.R / h], device=dev)
            points = (points + 0.5) * scale - 0.5  # pixel centres stay pixel centres
        lmk = self.rasterize(points, self.R) * 2 - 1
        return frames, lmk, points, vid

    def shots(self, step: int) -> int:
        """Shots E and G see at ``step``: K, or with ``train.shots_min`` > 0 uniform in [shots_min, K], so a model
        used with 1 photo was trained with 1 (the warp-guided G fuses fewer, sharper but less complete warps)."""
        lo = int(self.tc.shots_min)
        if lo <= 0 or lo >= self.K:
            return self.K
        return random.Random(mix_seed(self.tc.seed, step, 0x5407)).randint(lo, self.K)

    def _update(self, opt: torch.optim.Optimizer, terms: dict[str, torch.Tensor], step: int, phase: str,
                **kw) -> dict[str, float]:
        """``reenact.gan.update`` with this trainer's clipping, mean over ranks and advice on a non-finite loss."""
        def hint() -> str:
            last = (self.ckpt_dir / LATEST).read_text().strip() if (self.ckpt_dir / LATEST).exists() else None
            where = f"the last good checkpoint is {self.ckpt_dir / last}" if last else "no checkpoint was written"
            return (f"training stopped before applying it, nothing was saved after it ({where}). "
                    "Try a lower learning rate, train.grad_clip, or check the data.")

        return update(opt, terms, grad_clip=float(self.tc.grad_clip),
                      reduce=lambda v: dist_utils.all_reduce_mean(v, self.env),
                      where=f"step {step + 1} ({phase} update)", hint=hint, **kw)

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = float(self.tc.ema)
        for live, ema in ((self.E, self.E_ema), (self.G, self.G_ema)):
            torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1.0 - d)
            for b_ema, b in zip(ema.buffers(), live.buffers()):
                b_ema.copy_(b)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict) -> dict[str, float]:
        """One G/E update and ``d_steps`` D updates on a collated batch; returns the losses (mean over ranks)."""
        step = self.step
        frames, lmk, points, vid = self.prepare(batch, step)
        K, B = self.K, frames.shape[0]
        k = self.shots(step)
        if k < K:  # this step sees only the first k shots (the same k on every rank: one graph shape)
            points = torch.cat([points[:, :k], points[:, K:K + 1]], 1)
        src, src_l = frames[:, :k], lmk[:, :k]
        tgt, tgt_l = self._to_net(frames[:, K]), self._to_net(lmk[:, K])
        w = self.weights

        # --- G/E update (D frozen; W detached: its side of L_MCH is applied in the D update)
        self.D.requires_grad_(False)
        with self._autocast():
            out, e_mean = self._eg(src, src_l, tgt_l, points)
            fake = out.image
            w_i = self.D.W(vid).detach()
            scores, feats = self._D_fast(torch.cat([tgt, fake]), torch.cat([tgt_l, tgt_l]),
                                         w=torch.cat([w_i, w_i]))
        terms = {}
        terms.update(g_hinge(scores[B:]))
        terms.update(feature_matching([f[:B] for f in feats], [f[B:] for f in feats]))
        terms.update(embedding_match(w_i, e_mean))
        with self._autocast():
            terms.update(self.content(fake, tgt, points[:, -1]))  # the target's landmarks come last
        terms.update({name: out.reg[name] for name in self.reg_weights if name in out.reg})
        logs = self._update(self.opt_g, terms, step, "generator", weights=w, total_name="g_total")

        # --- D update(s)
        self.D.requires_grad_(True)
        fake_d, e_d = fake.detach(), e_mean.detach()
        for _ in range(max(int(self.tc.d_steps), 1)):
            with self._autocast():
                scores, _ = self._d(torch.cat([tgt, fake_d]), torch.cat([tgt_l, tgt_l]),
                                    video_index=torch.cat([vid, vid]))
            dterms = d_hinge(scores[:B], scores[B:])
            dterms["mch_d"] = embedding_match(self.D.W(vid), e_d)["mch"]
            seen = {"real_score": scores[:B].detach().float().mean(),  # logged with the same host sync
                    "fake_score": scores[B:].detach().float().mean()}
            dlogs = self._update(self.opt_d, dterms, step, "discriminator", weights={"mch_d": w["mch"]},
                                 total_name="d_total", logged=seen)
        logs.update(dlogs)
        if self.E_ema is not None:
            self._update_ema()
        every = int(self.tc.sample_every)
        if every and (step + 1) % every == 0:  # keep copies only when a grid is due (no batch kept alive)
            n = min(B, 4)
            cols = [("source", src[:, 0]), ("landmarks", lmk[:, K]), ("generated", fake_d), ("target", tgt)]
            # warp-guided G: the fused warp and its blend mask
            cols[2:2] = [(k, out.aux[k].expand(-1, 3, -1, -1)) for k in ("warp", "mask") if k in out.aux]
            self._last_images = {k: v[:n].detach().float().clone() for k, v in cols}
        self.step += 1
        self.history.append((self.step, logs))
        return logs

    # ------------------------------------------------------------------ loop
    def loader(self, start_step: int | None = None) -> DataLoader:
        """Infinite loader of this rank's batches from ``start_step`` (default: the current step)."""
        sampler = EpisodeSampler(len(self.dataset), self.batch_size, self.tc.seed, self.env.rank,
                                 self.env.world_size, self.step if start_step is None else start_step)
        # Presets are sized for a GPU machine (small: 8 workers); never more workers than this process may use
        # CPUs: on a 2-core laptop 8 workers only thrash. Batches do not depend on the worker count.
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        nw = min(int(self.cfg.data.num_workers), cpus)
        kw = {"persistent_workers": True, "prefetch_factor": 4} if nw > 0 else {}
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=nw,
                          pin_memory=self.device.type == "cuda", **kw)

    def fit(self, steps: int | None = None) -> list[tuple[int, dict[str, float]]]:
        """Train until ``steps`` (default ``train.steps``) total steps are done; returns this call's
        per-step losses. Checkpoints every ``checkpoint_every`` steps and at the end (rank 0)."""
        tc = self.tc
        total = int(steps if steps is not None else tc.steps)
        done: list[tuple[int, dict[str, float]]] = []
        if self.step >= total:
            return done
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
        logger = _Logger(self, total) if self.is_main else None
        it = iter(self.loader())
        window: list[dict[str, float]] = []
        t_window, n_window = time.perf_counter(), 0
        try:
            while self.step < total:
                logs = self.train_step(next(it))
                done.append((self.step, logs))
                window.append(logs)
                n_window += 1
                s = self.step
                if logger:
                    logger.bar_update(logs)
                record: dict[str, Any] = {}
                if s % tc.log_every == 0 or s == total:
                    dt = time.perf_counter() - t_window
                    record["train"] = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    record["samples_per_s"] = n_window * self.batch_size * self.env.world_size / max(dt, 1e-9)
                    window, n_window = [], 0
                if self.is_main and tc.val_every and s % tc.val_every == 0:
                    val = self.validate()
                    if val:
                        record["val"] = val
                if logger and record:
                    logger.log(s, record)
                if self.is_main and tc.sample_every and s % tc.sample_every == 0:
                    path = self.save_samples()
                    if logger:
                        logger.image(s, path)
                if s % tc.checkpoint_every == 0 or s == total:
                    self.save()
                if not n_window:  # a new throughput window starts after logging / validation / saving
                    t_window = time.perf_counter()
        finally:
            if logger:
                logger.close()
            del it
        return done

    # ------------------------------------------------------------------ validation & samples
    def val_dataset(self):
        if self._val_dataset is None and self.cfg.data.root:
            from reenact.data.episodes import EpisodeDataset

            try:
                self._val_dataset = EpisodeDataset(self.cfg.data.root, self.K, split="val",
                                                   val_identities=list(self.cfg.data.val_identities) or None,
                                                   val_fraction=self.cfg.data.val_fraction, seed=self.tc.seed)
            except ValueError as exc:  # no held-out identities
                print(f"validation disabled: {exc}", file=sys.stderr)
                self._val_dataset = False
        return self._val_dataset or None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """L1 and content loss of G on ``val_episodes`` fixed held-out episodes (EMA weights if kept)."""
        ds = self.val_dataset()
        if ds is None:
            return {}
        E, G = (self.E_ema, self.G_ema) if self.E_ema is not None else (self.E, self.G)
        modes = (E.training, G.training)
        E.eval(), G.eval()
        n = int(self.tc.val_episodes)
        items = [(j % len(ds), mix_seed(self.tc.seed, j, 0x7A1)) for j in range(n)]
        sums: dict[str, float] = collections.defaultdict(float)
        for start in range(0, n, self.batch_size):
            chunk = items[start:start + self.batch_size]
            frames, lmk, points, _ = self.prepare(default_collate([ds[it] for it in chunk]), 0, augment=False)
            with self._autocast():
                e, _ = E(frames[:, :self.K], lmk[:, :self.K])
                fake = generate(G, self._to_net(lmk[:, self.K]), e, frames[:, :self.K], points).image
                tgt = frames[:, self.K]
                terms = self.content(fake, tgt, points[:, self.K])
            sums["l1"] += float((fake.float() - tgt.float()).abs().mean()) * len(chunk)
            sums["content"] += float(sum(self.weights[k] * v for k, v in terms.items())) * len(chunk)
        E.train(modes[0]), G.train(modes[1])
        return {k: v / n for k, v in sums.items()}

    def save_samples(self) -> Path | None:
        """PNG grid, one row per episode: source frame | target landmarks | [warp | mask |] generated | target."""
        if not self._last_images:
            return None
        from PIL import Image

        cols = [v.float().clamp(-1, 1) for v in self._last_images.values()]
        grid = torch.cat([torch.cat(list(c), dim=1) for c in cols], dim=2)  # (3, n*R, 4*R)
        img = ((grid + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        folder = self.out_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{self.step:07d}.png"
        tmp = folder / f".{path.name}.tmp"
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path | None:
        """Checkpoint ``checkpoints/step_XXXXXXX`` (rank 0 only), update ``latest``, prune old ones."""
        if not self.is_main:
            return None
        tensors, meta_opt = {}, {}
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            t, m = _state_to_tensors(name, opt)
            tensors.update(t)
            meta_opt[name] = m
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        np_state = np.random.get_state()
        py_state = random.getstate()
        meta = {
            "step": self.step, "seed": self.tc.seed, "world_size": self.env.world_size,
            "batch_size": self.batch_size, "samples_seen": self.step * self.batch_size * self.env.world_size,
            "num_videos": self.D.num_videos, "optimizers": meta_opt,
            "rng_numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
        }
        name = f"step_{self.step:07d}"
        path = save_checkpoint(self.ckpt_dir / name, self._modules(), self.cfg, meta, tensors,
                               state_dtype=self.tc.state_dtype, max_file_bytes=shard_bytes(self.tc.shard_mb))
        write_latest(self.ckpt_dir, name)
        prune_checkpoints(self.ckpt_dir, int(self.tc.keep_checkpoints))
        return path

    def _resume(self) -> None:
        r = str(self.tc.resume or "none")
        if r.lower() in ("none", "false", "no", ""):
            r = ""
        elif r == "auto":
            r = str(self.ckpt_dir) if (self.ckpt_dir / LATEST).exists() else ""
        if r:
            self.load(r)
        elif self.tc.init_weights:
            self.load_weights(self.tc.init_weights)

    def load_weights(self, path: str | Path) -> None:
        """Start from a checkpoint's network weights only (fresh optimisers, step 0): continue a run whose
        optimiser state was not kept, or adapt a trained model to new data. The model config must match."""
        ck = load_checkpoint(path)
        self._check_model_config(ck)
        mods = self._modules()
        # An exported model (``export_checkpoint``, e.g. the bundled default) keeps only the EMA copies of E and
        # G: training then starts from those (what the exported model renders with).
        for live in ("E", "G"):
            if live not in ck.weights and f"{live}_ema" in ck.weights:
                ck.weights[live] = ck.weights[f"{live}_ema"]
        have = [n for n in mods if n in ck.weights]
        if not {"E", "G", "D"} <= set(have):
            raise CheckpointError(f"{ck.path}: needs E, G and D weights to initialise training, has {sorted(have)}")
        ck.load_into({n: mods[n] for n in have})
        if self.E_ema is not None and "G_ema" not in have:
            self.E_ema.load_state_dict(self.E.state_dict())
            self.G_ema.load_state_dict(self.G.state_dict())
        if self.is_main:
            print(f"initialised weights from {ck.path} (step {ck.step}); optimisers start fresh", file=sys.stderr)

    def _check_model_config(self, ck) -> None:
        if ck.config is None:
            return
        saved = OmegaConf.to_container(ck.config.model)
        now = OmegaConf.to_container(self.cfg.model)
        diff = {k: (saved.get(k), now.get(k)) for k in set(saved) | set(now) if saved.get(k) != now.get(k)}
        if diff:
            raise CheckpointError(f"{ck.path}: model config differs from the checkpoint's (saved, now): {diff}")

    def load(self, path: str | Path) -> None:
        """Restore weights, optimiser states, RNG and the step counter from a checkpoint."""
        ck = load_checkpoint(path)
        self._check_model_config(ck)
        mods = self._modules()
        missing_ema = [n for n in ("E_ema", "G_ema") if n in mods and n not in ck.weights]
        for n in missing_ema:  # EMA switched on after this checkpoint: start it from the live weights
            mods.pop(n)
        ck.load_into(mods)
        if missing_ema:
            self.E_ema.load_state_dict(self.E.state_dict())
            self.G_ema.load_state_dict(self.G.state_dict())
        if ck.train_state is None:
            raise CheckpointError(f"{ck.path}: no train_state (optimiser) tensors; cannot resume training")
        opt_meta = ck.meta.get("optimizers", {})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            if name not in opt_meta:
                raise CheckpointError(f"{ck.path}: meta.json has no state of optimiser {name}")
            opt.load_state_dict(_state_from_tensors(name, ck.train_state, opt_meta[name]))
        if "rng.torch" in ck.train_state:
            torch.set_rng_state(ck.train_state["rng.torch"])
        cuda_states = [ck.train_state[k] for k in sorted(ck.train_state) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        if "rng_numpy" in ck.meta:
            n = ck.meta["rng_numpy"]
            np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
        if "rng_python" in ck.meta:
            p = ck.meta["rng_python"]
            random.setstate((p[0], tuple(p[1]), p[2]))
        self.step = ck.step
        if self.is_main:
            print(f"resumed from {ck.path} at step {self.step}", file=sys.stderr)


class _Logger:
    """Rank-0 logging: tqdm bar, ``metrics.jsonl`` (one JSON per line), optional wandb."""

    def __init__(self, trainer: Trainer, total: int):
        self.t = trainer
        self.t0 = time.time()
        self.path = trainer.out_dir / "metrics.jsonl"
        self.bar = None
        if trainer.tc.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=trainer.step, desc="meta-learning",
                            unit="step", dynamic_ncols=True)
        self.wandb = None
        if trainer.tc.wandb:
            try:
                import wandb
            except ImportError:
                print("wandb is not installed: logging to metrics.jsonl only", file=sys.stderr)
            else:
                self.wandb = wandb.init(project=trainer.tc.wandb_project, mode=trainer.tc.wandb_mode,
                                        dir=str(trainer.out_dir), resume="allow",
                                        config=OmegaConf.to_container(trainer.cfg, resolve=True))

    def bar_update(self, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, step: int, record: dict[str, Any]) -> None:
        rec = {"step": step, "time": round(time.time() - self.t0, 3), **record}
        with open(self.path, "a") as fh:  # one short line per write: a crash leaves at most a torn last line
            fh.write(json.dumps(rec) + "\n")
        if self.bar is not None and "train" in record:
            tr = record["train"]
            self.bar.set_postfix({k: f"{tr[k]:.3f}" for k in ("g_total", "d_total", "pyramid", "fm") if k in tr}
                                 | {"eps/s": f"{record['samples_per_s']:.1f}"}, refresh=False)
        if self.wandb is not None:
            flat = {}
            for k, v in record.items():
                if isinstance(v, dict):
                    flat.update({f"{k}/{kk}": vv for kk, vv in v.items()})
                elif k != "step":
                    flat[k] = v
            self.wandb.log(flat, step=step)

    def image(self, step: int, path: Path | None) -> None:
        if self.wandb is not None and path is not None:
            import wandb

            self.wandb.log({"samples": wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
