"""Train the speech models on a prepared folder: the lip-sync expert first, then the audio-to-landmark model.

    python -m puppeteer.audio.train --data .devdata/prepared --out runs/audio [--what both|sync|a2l]
        [--device auto] [--sync CHECKPOINT] [--ship puppeteer/audio/weights] [key=value ...]
    python -m puppeteer.audio.train --data .devdata/prepared --export-features .devdata/audio_features.npz

The clips with audio of the identity split's training part (``PreparedDataset.split(None, 0.1)``) train; the
held-out identities validate. ``--data`` is a prepared folder (its audio is decoded: needs PyAV) or a feature file
written by ``--export-features`` (canonical tracks + log-mel of every clip with audio, see
:func:`puppeteer.audio.data.write_features`): all a GPU machine without PyAV needs.

Batches are drawn and assembled on the training device (:class:`puppeteer.audio.data.Batcher`), so a step is a
few milliseconds of GPU work. Each network is validated on the held-out clips every ``val_every`` steps; the
weights of the best validation are kept and saved, and training stops after ``patience`` validations without a
better one (``train_sync.patience=0``: never stop early).

Results: ``OUT/sync`` and ``OUT/a2l`` checkpoint directories (project format, with a ``latest`` pointer),
``OUT/metrics.json`` (held-out metrics and baselines) and ``OUT/MODEL_CARD.md``. ``--ship DIR`` also writes fp16
copies to ``DIR/sync`` and ``DIR/a2l`` with the model card.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from puppeteer.audio.config import AudioConfig, audio_config, build, load_audio_checkpoint, save_audio_checkpoint
from puppeteer.audio.data import ANIMATED, JAW, MOUTH_IN_ANIMATED, Batcher, Clip, load_clips, write_features
from puppeteer.audio.model import AudioToLandmarks
from puppeteer.audio.sync_expert import contrastive_loss, sync_loss
from reenact.audio import features as F
from reenact.checkpoint import atomic_write_text
from reenact.device import resolve_device
from reenact.landmarks.parts import MOUTH
from reenact.models.lipsync import FRAMES, LipSyncExpert, SyncNet

SYNC_VAL_WINDOWS = 256  # held-out windows (fixed, unaugmented) that score the expert at each validation


def _optimizer(net, tc, device: torch.device):
    params = [p for p in net.parameters() if p.requires_grad]
    # One fused kernel for the whole update on a GPU: with networks this small, launches are the cost.
    extra = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, **extra)
    warm = max(1, tc.steps // 20)
    # Linear warm-up then cosine decay: a few thousand steps on tiny data, no schedule to tune.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, tc.steps) / tc.steps)))
    return opt, sched


class _KeepBest:
    """The weights of the best (lowest) held-out score so far, and early stopping: ``update`` says to stop after
    ``patience`` validations in a row without a better score (0: never)."""

    def __init__(self, patience: int):
        self.patience, self.score, self.step, self.stale, self.state = int(patience), math.inf, 0, 0, None

    def update(self, net: torch.nn.Module, score: float, step: int) -> bool:
        if score < self.score:
            self.score, self.step, self.stale = score, step, 0
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            self.stale += 1
        return self.patience > 0 and self.stale >= self.patience

    def restore(self, net: torch.nn.Module) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


class _Clock:
    """Wall time of the training steps alone (validation excluded), synchronised with the device's queue."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self._t = device, 0.0, None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self):
        self._sync()
        self._t = time.perf_counter()

    def stop(self):
        self._sync()
        self.seconds += time.perf_counter() - self._t


def _report(kind: str, log: list, bar, progress: bool, entry: dict, **postfix) -> None:
    """Record one validation: in the run's log, on stderr when there is no progress bar, else on the bar."""
    log.append(entry)
    if not progress:
        print(f"{kind} {entry}", file=sys.stderr, flush=True)
    bar.set_postfix(loss=f"{entry['loss']:.3f}", best=entry["best_step"], **postfix)


def _finish(out: Path, kind: str, net, cfg: AudioConfig, best: _KeepBest, clock: _Clock, steps_run: int,
            t0: float, log: list, extra: dict | None = None) -> dict:
    """Put the best validation's weights back into ``net`` and save them (``OUT/KIND/step_<best step>``);
    returns the run's summary (the checkpoint's metadata without the log)."""
    from reenact.checkpoint import write_latest

    best.restore(net)
    net.eval()
    meta = {"step": best.step, "steps_run": steps_run, "best_val": best.score,
            "stopped_early": steps_run < getattr(cfg, f"train_{kind}").steps, "seconds": time.time() - t0,
            "train_seconds": clock.seconds, "steps_per_second": steps_run / max(clock.seconds, 1e-9), "log": log}
    meta.update(extra or {})
    name = f"step_{best.step:07d}"
    save_audio_checkpoint(out / kind / name, kind, net, cfg, meta)
    write_latest(out / kind, name)
    return {k: v for k, v in meta.items() if k != "log"}


# ------------------------------------------------------------------------------------------- lip-sync expert

def train_sync(cfg: AudioConfig, train: list[Clip], val: list[Clip], out: Path, device: torch.device,
               progress: bool = True) -> tuple[SyncNet, dict]:
    """Train the expert. Validation score: the AV-offset search on the held-out clips, the expert's use as a
    metric (:func:`evaluate_sync`: share of clips passing all three offset tests, plus the mean confidence as the
    tie-break). The held-out contrastive loss is logged but not used: it bottomed out at step 250 of 2500 while
    the offset tests kept improving (58% vs 50% of clips, confidence 0.092 vs 0.035), because most of its
    negatives are other clips' audio, which says little about a clip's own offset. Returns the network (best
    validation's weights, eval mode) and the run's summary (steps, best step, timing)."""
    from tqdm.auto import tqdm

    tc = cfg.train_sync
    torch.manual_seed(cfg.seed)
    net = build("sync", cfg).to(device)
    net.scale.fill_(float(np.concatenate([c.disp[c.valid][:, MOUTH] for c in train]).std()))
    batcher = Batcher(train, FRAMES, cfg.window, pad=cfg.max_offset, seed=cfg.seed, device=device)
    vbatch = Batcher(val, FRAMES, cfg.window, pad=cfg.max_offset, seed=cfg.seed + 1, augment=False,
                     device=device).sample(SYNC_VAL_WINDOWS)
    mouth = torch.as_tensor(MOUTH, device=device)
    vmouth = vbatch["disp"][:, :, mouth]
    opt, sched = _optimizer(net, tc, device)
    best, clock, t0, log, step = _KeepBest(tc.patience), _Clock(device), time.time(), [], 0
    bar = tqdm(total=tc.steps, desc="sync expert", disable=not progress)
    clock.start()
    while step < tc.steps:
        net.train()
        b = batcher.sample(tc.batch_size)
        loss, acc = contrastive_loss(net, b["mel"], b["disp"][:, :, mouth], cfg.max_offset, cfg.min_shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        step += 1
        bar.update()
        if step % tc.val_every == 0 or step == tc.steps:
            clock.stop()
            net.eval()
            with torch.no_grad():
                vl, va = contrastive_loss(net, vbatch["mel"], vmouth, cfg.max_offset, cfg.min_shift)
            search = evaluate_sync(LipSyncExpert(net, cfg.window, device), val)
            stop = best.update(net, -(search["all_three_ok"] + search["mean_confidence"]), step)
            _report("sync", log, bar, progress, {
                "step": step, "loss": loss.item(), "val_loss": vl.item(), "val_acc": va.item(),
                "val_offsets_ok": search["all_three_ok"], "val_confidence": search["mean_confidence"],
                "best_step": best.step}, val_offsets_ok=f"{search['all_three_ok']:.2f}")
            if stop:
                break
            clock.start()
    bar.close()
    return net, _finish(out, "sync", net, cfg, best, clock, step, t0, log,
                        {"val_metric": "-(share of held-out clips passing the 3 offset tests + mean confidence)"})


def evaluate_sync(expert: LipSyncExpert, clips: list[Clip], points: dict[str, np.ndarray] | None = None,
                  shift: int = 5) -> dict:
    """Offset accuracy on held-out clips: the true track must give |offset| <= 1; audio delayed by ``shift``
    frames must give |offset - shift| <= 1, and audio advanced by ``shift`` frames |offset + shift| <= 1.

    ``points``: tracks to score by clip key (default: each clip's own). The shifts are made on the log-mel
    (``shift`` frames of digital silence put before it, or its first ``shift`` frames cut), so no audio is needed."""
    rows = []
    for c in clips:
        pts = c.points if points is None else points[c.key]
        hop = int(round(F.MEL_RATE / c.fps * shift))
        silence = torch.full((hop, c.logmel.shape[1]), float(np.log(F.LOG_FLOOR)))
        late = F.normalize(torch.cat([silence, c.logmel]))
        early = F.normalize(c.logmel[hop:])
        r0 = expert.av_sync(pts, None, c.fps, valid=c.valid, mel=c.mel)
        r1 = expert.av_sync(pts, None, c.fps, valid=c.valid, mel=late)
        r2 = expert.av_sync(pts, None, c.fps, valid=c.valid, mel=early)
        rows.append({"key": c.key, "frames": c.num_frames, "offset": r0["offset"], "confidence": r0["confidence"],
                     "offset_late": r1["offset"], "offset_early": r2["offset"]})
    ok0 = [abs(r["offset"]) <= 1 for r in rows]
    ok1 = [abs(r["offset_late"] - shift) <= 1 for r in rows]
    ok2 = [abs(r["offset_early"] + shift) <= 1 for r in rows]
    return {"clips": len(rows), "in_sync_ok": float(np.mean(ok0)), "late_ok": float(np.mean(ok1)),
            "early_ok": float(np.mean(ok2)), "all_three_ok": float(np.mean(np.logical_and.reduce([ok0, ok1, ok2]))),
            "mean_confidence": float(np.mean([r["confidence"] for r in rows])), "rows": rows}


# ------------------------------------------------------------------------------------------- audio to landmarks

def _point_weights(cfg: AudioConfig, device) -> torch.Tensor:
    w = torch.ones(len(ANIMATED), device=device)
    w[: len(JAW)] = cfg.jaw_weight
    return w


def train_a2l(cfg: AudioConfig, train: list[Clip], val: list[Clip], out: Path, device: torch.device,
              expert: SyncNet | None = None, progress: bool = True) -> tuple[AudioToLandmarks, dict]:
    """Train the audio-to-landmark model; validation score: held-out mouth L2 (:func:`evaluate_a2l`). Returns
    the network (best validation's weights) and the run's summary, as :func:`train_sync`."""
    from tqdm.auto import tqdm

    tc = cfg.train_a2l
    torch.manual_seed(cfg.seed)
    net = build("a2l", cfg).to(device)
    tgt_all = np.concatenate([c.disp[c.valid][:, ANIMATED] for c in train])
    net.scale.copy_(torch.from_numpy(tgt_all.std(0)).clamp_min(1e-3))
    if expert is not None:
        expert = expert.to(device).eval()
        for p in expert.parameters():
            p.requires_grad_(False)
    batcher = Batcher(train, tc.length, cfg.window, seed=cfg.seed, device=device)
    windows = clip_windows(val, cfg, device)  # cut once: every validation scores the same windows
    pw = _point_weights(cfg, device)
    animated = torch.as_tensor(ANIMATED, device=device)  # index tensors on the device: no copy per step
    mouth = torch.as_tensor(MOUTH_IN_ANIMATED, device=device)
    opt, sched = _optimizer(net, tc, device)
    best, clock, t0, log, step = _KeepBest(tc.patience), _Clock(device), time.time(), [], 0
    bar = tqdm(total=tc.steps, desc="audio->landmarks", disable=not progress)
    clock.start()
    while step < tc.steps:
        net.train()
        b = batcher.sample(tc.batch_size)
        mel, valid = b["mel"], b["valid"]
        tgt = b["disp"][:, :, animated]
        pred = net(mel)
        err = ((pred - tgt) / net.scale).abs().sum(-1) * pw  # (B, T, P)
        l_pos = (err.mean(-1) * valid).sum() / valid.sum().clamp_min(1)
        dv = ((pred[:, 1:] - pred[:, :-1]) - (tgt[:, 1:] - tgt[:, :-1])) / net.scale
        vv = valid[:, 1:] * valid[:, :-1]
        l_vel = ((dv.abs().sum(-1) * pw).mean(-1) * vv).sum() / vv.sum().clamp_min(1)
        loss = l_pos + cfg.velocity_weight * l_vel
        l_sync = torch.zeros((), device=device)
        if expert is not None and cfg.sync_weight > 0:
            l_sync = sync_loss(expert, mel, pred[:, :, mouth])
            loss = loss + cfg.sync_weight * l_sync
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        step += 1
        bar.update()
        if step % tc.val_every == 0 or step == tc.steps:
            clock.stop()
            m = evaluate_a2l(net, val, cfg, baselines=False, windows=windows)
            stop = best.update(net, m["model"]["mouth_l2"], step)
            _report("a2l", log, bar, progress, {
                "step": step, "loss": loss.item(), "pos": l_pos.item(), "sync": l_sync.item(),
                "val_mouth_l2": m["model"]["mouth_l2"], "best_step": best.step}, val=f"{m['model']['mouth_l2']:.4f}")
            if stop:
                break
            clock.start()
    bar.close()
    return net, _finish(out, "a2l", net, cfg, best, clock, step, t0, log,
                        {"val_metric": "held-out mouth L2",
                         "sync_weight": cfg.sync_weight if expert is not None else 0.0})


def clip_windows(clips: list[Clip], cfg: AudioConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Each clip's per-frame mel windows ``(T, W, 80)`` on ``device``, by key."""
    return {c.key: F.frame_windows(c.mel, c.num_frames, c.fps, cfg.window).to(device) for c in clips}


@torch.no_grad()
def predict_clip(net: AudioToLandmarks, mel: torch.Tensor, num_frames: int, fps: float, window: int,
                 windows: torch.Tensor | None = None) -> np.ndarray:
    """(num_frames, 37, 2) displacements for a whole utterance's normalised log-mel (or its ready ``windows``)."""
    device = next(net.parameters()).device
    win = F.frame_windows(mel, num_frames, fps, window) if windows is None else windows
    return net.eval()(win.to(device)[None])[0].cpu().numpy()


def calibrate_gain(net: AudioToLandmarks, clips: list[Clip], cfg: AudioConfig) -> float:
    """The factor that gives the predicted inner-lip opening the spread of the real one over ``clips`` (ratio of
    deviations). Trained for least error, the model hedges where speech leaves the mouth uncertain and moves a
    few times too little for a lively face; rendering multiplies by this. The opening, not all points: it is
    what speech drives, while the other points' spread is mostly head pose and landmark noise."""
    pred, tgt = [], []
    for c in clips:
        pred.append(_opening(predict_clip(net, c.mel, c.num_frames, c.fps, cfg.window)[c.valid]))
        tgt.append(_opening(c.disp[:, ANIMATED][c.valid]))
    return float(np.concatenate(tgt).std() / max(np.concatenate(pred).std(), 1e-8))


def _opening(d: np.ndarray) -> np.ndarray:
    """Inner-lip opening (62..66 vertical gap, in ANIMATED index space relative to the neutral) per frame."""
    top, bottom = list(ANIMATED).index(62), list(ANIMATED).index(66)
    return d[:, bottom, 1] - d[:, top, 1]


def _scores(pred: np.ndarray, tgt: np.ndarray, valid: np.ndarray) -> dict:
    pm, tm = pred[:, MOUTH_IN_ANIMATED], tgt[:, MOUTH_IN_ANIMATED]
    mouth = np.linalg.norm(pm - tm, axis=-1).mean(-1)
    # Shape only: both mouths moved to a common centroid. Head pitch and yaw shift the whole mouth against the
    # eyes in the image, which no audio can predict; the shape is what speech changes.
    shape = np.linalg.norm((pm - pm.mean(1, keepdims=True)) - (tm - tm.mean(1, keepdims=True)), axis=-1).mean(-1)
    jaw = np.linalg.norm(pred[:, : len(JAW)] - tgt[:, : len(JAW)], axis=-1).mean(-1)
    po, to = _opening(pred)[valid], _opening(tgt)[valid]
    corr = float(np.corrcoef(po, to)[0, 1]) if po.std() > 1e-8 and to.std() > 1e-8 else 0.0
    return {"mouth": mouth[valid], "shape": shape[valid], "jaw": jaw[valid], "corr": corr}


def evaluate_a2l(net: AudioToLandmarks, clips: list[Clip], cfg: AudioConfig, baselines: bool = True,
                 gain: float | None = None, windows: dict[str, torch.Tensor] | None = None) -> dict:
    """Held-out errors (inter-ocular units, mean over valid frames of all clips) of the model, and with
    ``baselines``: zero displacement (the clip's mean mouth), shuffled audio (the model fed another held-out
    clip's speech, looped to length), and the opening correlation (Pearson, inner-lip gap, mean over clips).
    ``gain``: also score the predictions scaled by it (``model_calibrated``, what rendering uses). ``windows``:
    the clips' mel windows from :func:`clip_windows`, if cut already."""
    rows = {"model": []}
    if gain is not None:
        rows["model_calibrated"] = []
    if baselines:
        rows.update({"mean_mouth": [], "shuffled_audio": []})
    for i, c in enumerate(clips):
        tgt = c.disp[:, ANIMATED]
        pred = predict_clip(net, c.mel, c.num_frames, c.fps, cfg.window, None if windows is None else windows[c.key])
        rows["model"].append(_scores(pred, tgt, c.valid))
        if gain is not None:
            rows["model_calibrated"].append(_scores(pred * gain, tgt, c.valid))
        if baselines:
            rows["mean_mouth"].append(_scores(np.zeros_like(tgt), tgt, c.valid))
            other = clips[(i + 1) % len(clips)]
            reps = int(np.ceil(c.num_frames / other.num_frames)) + 1
            mel = F.normalize(other.logmel.repeat(reps, 1))  # as long as this clip
            rows["shuffled_audio"].append(_scores(predict_clip(net, mel, c.num_frames, c.fps, cfg.window), tgt,
                                                  c.valid))
    out = {}
    for name, lst in rows.items():
        out[name] = {"mouth_l2": float(np.concatenate([r["mouth"] for r in lst]).mean()),
                     "mouth_shape_l2": float(np.concatenate([r["shape"] for r in lst]).mean()),
                     "jaw_l2": float(np.concatenate([r["jaw"] for r in lst]).mean()),
                     "opening_corr": float(np.mean([r["corr"] for r in lst]))}
    return out


# ------------------------------------------------------------------------------------------- model card

def _steps_text(m: dict, steps: int) -> str:
    run, best = m.get("steps_run", steps), m.get("best_step", steps)
    text = f"{run} steps" + (" (stopped early)" if run < steps else "")
    if best != run:
        text += f", weights of the best held-out validation (step {best})"
    if "steps_per_second" in m:
        text += f", {m['steps_per_second']:.0f} steps/s"
    return text


def model_card(metrics: dict, cfg: AudioConfig, data: str, sizes: dict[str, int]) -> str:
    a, s = metrics.get("a2l"), metrics.get("sync")
    lines = ["# Speech models of `puppeteer.audio`", "",
             f"Trained by `python -m puppeteer.audio.train` on `{data}` (prepared, dlib 68-point landmarks, 25 fps): "
             f"the clips with audio of the training identities ({metrics['train_clips']} clips, "
             f"{metrics['train_minutes']:.1f} min); validated on the held-out identities of "
             f"`PreparedDataset.split(None, 0.1)` ({metrics['val_clips']} clips, {metrics['val_minutes']:.1f} min). "
             f"Clips whose audio is silent or not speech-like (no pauses: music beds) are left out of both "
             f"({metrics.get('dropped_clips', 0)} of {metrics.get('audio_clips', 0)} clips with audio). "
             f"Device: {metrics['device']}. Weights: fp16 safetensors in the project checkpoint format. "
             "The weights kept are those of the best validation on these same held-out clips (there are too few "
             "to split them), so the held-out figures below are somewhat optimistic.", ""]
    if s:
        lines += ["## Lip-sync expert (`sync/`)", "",
                  f"SyncNet-like contrastive model: {cfg.window / F.MEL_RATE:g} s log-mel (80 bins) vs {FRAMES} frames "
                  f"of mouth landmarks. {_steps_text(s, cfg.train_sync.steps)}, batch {cfg.train_sync.batch_size}, {s['seconds']:.0f} s. "
                  f"Size {sizes.get('sync', 0) / 1e6:.2f} MB.", "",
                  f"Held-out AV offset search over -{cfg.max_offset}..{cfg.max_offset} frames ({s['eval']['clips']} "
                  "clips):", "",
                  "| test | clips where it holds |", "|---|---|",
                  f"| true track: abs(offset) <= 1 | {s['eval']['in_sync_ok']:.0%} |",
                  f"| audio delayed 5 frames: offset in 4..6 | {s['eval']['late_ok']:.0%} |",
                  f"| audio advanced 5 frames: offset in -6..-4 | {s['eval']['early_ok']:.0%} |",
                  f"| all three | {s['eval']['all_three_ok']:.0%} |", "",
                  f"Mean confidence (median - min distance) on true tracks: {s['eval']['mean_confidence']:.3f}.", "",
                  "Per clip (offset in frames; positive: audio late):", "",
                  "| clip | frames | offset | confidence | audio +5 | audio -5 |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['key']} | {r['frames']} | {r['offset']:+.0f} | {r['confidence']:.3f} | "
                  f"{r['offset_late']:+.0f} | {r['offset_early']:+.0f} |" for r in s["eval"]["rows"]]
        lines.append("")
    if a:
        lines += ["## Audio-to-landmark model (`a2l/`)", "",
                  f"Conv mel encoder + temporal model ({'residual temporal convolutions, +-0.24 s' if cfg.a2l.temporal == 'conv' else 'bidirectional GRU'}) -> displacements of the 37 jaw and mouth points "
                  f"from the clip's neutral (mean) shape in a canonical frame (unit inter-ocular distance). "
                  f"{_steps_text(a, cfg.train_a2l.steps)}, batch {cfg.train_a2l.batch_size} x {cfg.train_a2l.length} "
                  f"frames, "
                  f"sync-expert loss weight {a['sync_weight']}, {a['seconds']:.0f} s. "
                  f"Size {sizes.get('a2l', 0) / 1e6:.2f} MB.", "",
                  "Held-out errors (mean distance per point, inter-ocular units; lower is better; \"shape\": after "
                  "moving both mouths to a common centroid, which removes head pitch/yaw effects audio cannot "
                  "predict) and inner-lip opening correlation with the truth (Pearson, mean over clips; higher "
                  "is better):", "",
                  "| predictor | mouth L2 | mouth shape L2 | jaw L2 | opening corr |", "|---|---|---|---|---|"]
        for name, title in (("model", "model"),
                            ("model_calibrated", f"model x {a.get('render_gain', 1):.2f} (rendering gain)"),
                            ("mean_mouth", "mean mouth (zero displacement)"),
                            ("shuffled_audio", "model on shuffled audio")):
            if name not in a["eval"]:
                continue
            m = a["eval"][name]
            lines.append(f"| {title} | {m['mouth_l2']:.4f} | {m['mouth_shape_l2']:.4f} | {m['jaw_l2']:.4f} | "
                         f"{m['opening_corr']:.3f} |")
        if "render_gain" in a:
            lines += ["", f"Rendering gain {a['render_gain']:.2f}: trained for least error, the model hedges where "
                          "speech leaves the mouth uncertain and moves too little; rendering (`SpeechModel`, "
                          "`reenact speak`) scales its motion to the real motion's spread on the training clips."]
        if "sync_of_predictions" in a:
            sp = a["sync_of_predictions"]
            lines += ["", f"Lip-sync expert on the predicted tracks: abs(offset) <= 1 on {sp['in_sync_ok']:.0%} "
                          f"of held-out clips, mean confidence {sp['mean_confidence']:.3f} (a sanity check: the "
                          "model was trained with this expert's loss)."]
        lines.append("")
    lines += ["Landmark targets come from dlib on 256 px crops: their frame-to-frame jitter (about 0.015 inter-ocular "
              "units on rigid points) bounds how low the errors can go.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- entry point

def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.safetensors"))


def _summary(run: dict) -> dict:
    """What metrics.json keeps of a training run's summary."""
    return {"best_step": run["step"], "steps_run": run["steps_run"], "stopped_early": run["stopped_early"],
            "train_seconds": run["train_seconds"], "steps_per_second": run["steps_per_second"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m puppeteer.audio.train", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True,
                    help="prepared dataset folder (reenact prepare), or a feature file from --export-features")
    ap.add_argument("--out", default="runs/audio", help="output folder")
    ap.add_argument("--export-features", metavar="FILE", default=None,
                    help="only write the tracks + log-mel of every clip with audio of --data (a prepared folder) "
                         "to FILE (.npz), to train later with --data FILE where there is no audio decoder")
    ap.add_argument("--what", choices=["both", "sync", "a2l"], default="both")
    ap.add_argument("--sync", default=None, help="an existing sync-expert checkpoint for --what a2l")
    ap.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    ap.add_argument("--ship", default=None, help="also write fp16 copies + model card here")
    ap.add_argument("--val", default=None, metavar="ID,ID",
                    help="held-out identities (default: the project's fixed split, PreparedDataset.split(None, 0.1))")
    ap.add_argument("--all-audio", action="store_true",
                    help="keep clips whose audio is silent or not speech-like (dropped by default)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train_a2l.steps=500")
    args = ap.parse_args(argv)
    progress = not args.no_progress
    if args.export_features:
        path = write_features(args.data, args.export_features, progress)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
        return 0
    cfg = audio_config(args.overrides + ([f"device={args.device}"] if args.device else []))
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    clips = load_clips(args.data, progress=progress, speech_only=False)
    held = set(args.val.split(",")) if args.val else None
    usable = [c for c in clips if c.speech or args.all_audio]
    val = [c for c in usable if (c.identity in held if held is not None else c.held_out)]
    train = [c for c in usable if (c.identity not in held if held is not None else not c.held_out)]
    if not train or not val:
        raise SystemExit(f"{args.data}: need clips with audio in both splits (got {len(train)} train, {len(val)} val)")
    metrics: dict = {"data": str(args.data), "device": str(device), "train_clips": len(train), "val_clips": len(val),
                     "audio_clips": len(clips), "dropped_clips": len(clips) - len(train) - len(val),
                     "train_minutes": sum(c.num_frames / c.fps for c in train) / 60,
                     "val_minutes": sum(c.num_frames / c.fps for c in val) / 60}

    expert_net = None
    if args.what in ("both", "sync"):
        expert_net, run = train_sync(cfg, train, val, out, device, progress)
        ev = evaluate_sync(LipSyncExpert(expert_net, cfg.window, device), val)
        metrics["sync"] = {"seconds": run["seconds"], **_summary(run), "eval": ev}
        print(f"sync expert: in-sync {ev['in_sync_ok']:.0%}, +5 {ev['late_ok']:.0%}, -5 {ev['early_ok']:.0%} "
              f"of {ev['clips']} held-out clips (best step {run['step']} of {run['steps_run']}, "
              f"{run['steps_per_second']:.1f} steps/s)", file=sys.stderr)
    elif args.sync:
        expert_net, _, _ = load_audio_checkpoint(args.sync, "sync")
    if args.what in ("both", "a2l"):
        net, run = train_a2l(cfg, train, val, out, device, expert_net, progress)
        gain = calibrate_gain(net, train, cfg)
        ev = evaluate_a2l(net, val, cfg, gain=gain)
        metrics["a2l"] = {"seconds": run["seconds"], **_summary(run), "eval": ev, "render_gain": gain,
                          "sync_weight": run["sync_weight"]}
        if expert_net is not None:
            from puppeteer.audio.model import full_displacement

            preds = {}
            for c in val:
                pred = predict_clip(net, c.mel, c.num_frames, c.fps, cfg.window)
                preds[c.key] = c.neutral + full_displacement(torch.from_numpy(pred)).numpy()
            sp = evaluate_sync(LipSyncExpert(expert_net, cfg.window, device), val, preds)
            metrics["a2l"]["sync_of_predictions"] = {k: v for k, v in sp.items() if k != "rows"}
        print("audio->landmarks held-out mouth L2: " + ", ".join(f"{k} {v['mouth_l2']:.4f}" for k, v in ev.items())
              + f" (best step {run['step']} of {run['steps_run']}, {run['steps_per_second']:.1f} steps/s)",
              file=sys.stderr)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    sizes = {}
    if args.ship:
        ship = Path(args.ship)
        for kind, net_ in (("sync", expert_net if "sync" in metrics else None),
                           ("a2l", net if "a2l" in metrics else None)):
            if net_ is not None:
                summary = {k: v for k, v in metrics[kind].items() if k != "eval"}
                summary["eval"] = {k: v for k, v in metrics[kind]["eval"].items() if k != "rows"}
                meta = {"step": metrics[kind]["best_step"], "metrics": summary}
                if kind == "a2l":
                    meta["render_gain"] = metrics["a2l"]["render_gain"]
                p = save_audio_checkpoint(ship / kind, kind, net_.cpu(), cfg, meta, half=True)
                sizes[kind] = _dir_size(p)
    card = model_card(metrics, cfg, args.data, sizes)
    atomic_write_text(out / "MODEL_CARD.md", card)
    if args.ship:
        atomic_write_text(Path(args.ship) / "MODEL_CARD.md", card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
