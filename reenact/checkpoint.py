"""Checkpoints: safetensors for every tensor, JSON for scalars, YAML for the config. Loading never unpickles.

Layout of one checkpoint directory (written to ``<name>.tmp-*`` then renamed, so it appears whole or not at all)::

    config.yaml                     resolved config
    meta.json                       step, versions, RNG states of python/numpy, optimiser hyper-parameters, ...
    model.safetensors               module weights, keys "<module>.<param>" (e.g. "G.P.weight")
    train_state.safetensors         optional: optimiser state tensors, torch/CUDA RNG states (uint8)

Each stem is one ``<stem>.safetensors`` file by default. With ``max_file_bytes`` set (``train.shard_mb`` in
stage 1; the tools that move checkpoints between machines with a per-file limit pass one), a larger one is
written as shards ``<stem>-00001-of-0000N.safetensors`` plus ``<stem>.index.json`` (which file holds which key;
tensors larger than the limit are split along their flattened storage into ``<key>@@<j>`` parts). Loading
reads either layout.

``state_dtype="bfloat16"`` stores floating tensors of more than one element in bfloat16 (half the size;
resuming is then approximate); they are cast back to the module's dtype on load.

Loading checks that every weight is finite (a NaN weight renders black frames that provenance would vouch
for) and identifies the weights by :func:`weights_hash`, computed from the tensors read, never taken on trust
from ``meta.json``: see :func:`checkpoint_hash`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenact.errors import CheckpointError

LATEST = "latest"
_SPLIT = "@@"
HASH_KEY = "weights_sha256"  # meta.json: the weights hash recorded at the first load (checked on every later one)
_HASH_CACHE = ".weights_sha256.json"  # beside the weights: their hash, valid while their size + mtime hold
_hash_memo: dict[tuple, str] = {}  # (checkpoint folder, weight files' size + mtime) -> hash, this process


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write_text(Path(tmp), text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_cpu(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    t = t.detach()
    if dtype is not None and t.is_floating_point() and t.numel() > 1:
        t = t.to(dtype)
    t = t.cpu() if t.device.type != "cpu" else t.clone()
    return t.contiguous()


def shard_bytes(shard_mb: float) -> int | None:
    """``max_file_bytes`` for a limit given in MiB (``train.shard_mb``): 0 means one file per stem (None)."""
    if shard_mb < 0:
        raise ValueError(f"shard_mb must be >= 0 (0: one file), got {shard_mb}")
    return int(shard_mb * 1024 * 1024) or None


def save_tensors(folder: Path, stem: str, tensors: dict[str, torch.Tensor],
                 max_file_bytes: int | None = None) -> list[str]:
    """Write ``tensors`` as ``<stem>.safetensors`` (``max_file_bytes`` None: always), or as shards of at most
    ``max_file_bytes`` each + ``<stem>.index.json`` when they are larger; returns the file names."""
    from safetensors.torch import save_file

    if max_file_bytes is None:
        save_file(dict(tensors), str(folder / f"{stem}.safetensors"))
        return [f"{stem}.safetensors"]
    if max_file_bytes <= 0:
        raise ValueError(f"max_file_bytes must be > 0 (or None for one file), got {max_file_bytes}")
    max_bytes = int(max_file_bytes)

    pieces: dict[str, torch.Tensor] = {}
    splits: dict[str, dict[str, Any]] = {}
    for name, t in tensors.items():
        if _SPLIT in name:
            raise ValueError(f"tensor name {name!r} contains {_SPLIT!r}")
        nbytes = t.numel() * t.element_size()
        if nbytes <= max_bytes:
            pieces[name] = t
            continue
        flat = t.reshape(-1)
        per = max(max_bytes // t.element_size(), 1)
        keys = []
        for j, start in enumerate(range(0, flat.numel(), per)):
            key = f"{name}{_SPLIT}{j}"
            pieces[key] = flat[start:start + per].clone()
            keys.append(key)
        splits[name] = {"shape": list(t.shape), "parts": keys}
    total = sum(t.numel() * t.element_size() for t in pieces.values())
    if total <= max_bytes and not splits:
        save_file(pieces, str(folder / f"{stem}.safetensors"))
        return [f"{stem}.safetensors"]
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in pieces.items():
        n = t.numel() * t.element_size()
        if groups[-1] and size + n > max_bytes:
            groups.append({})
            size = 0
        groups[-1][key] = t
        size += n
    files, weight_map = [], {}
    for i, group in enumerate(groups):
        fname = f"{stem}-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(folder / fname))
        files.append(fname)
        weight_map.update({k: fname for k in group})
    _write_text(folder / f"{stem}.index.json", json.dumps({"weight_map": weight_map, "splits": splits}, indent=1))
    return files + [f"{stem}.index.json"]


def load_tensors(folder: Path, stem: str) -> dict[str, torch.Tensor] | None:
    """Inverse of :func:`save_tensors`; ``None`` if neither the file nor an index exists."""
    from safetensors.torch import load_file

    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.index.json"
    try:
        if single.exists():
            return load_file(str(single))
        if not index.exists():
            return None
        spec = json.loads(index.read_text())
        pieces: dict[str, torch.Tensor] = {}
        for fname in sorted(set(spec["weight_map"].values())):
            path = folder / fname
            if not path.exists():
                raise CheckpointError(f"{path}: shard listed in {index.name} is missing")
            pieces.update(load_file(str(path)))
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt / truncated files
        raise CheckpointError(f"{folder}: cannot read {stem} tensors: {exc}") from None
    for name, s in spec.get("splits", {}).items():
        pieces[name] = torch.cat([pieces.pop(k) for k in s["parts"]]).view(s["shape"])
    return pieces


def tensor_files(folder: Path, stem: str) -> list[Path]:
    """The files :func:`load_tensors` reads for ``stem``: ``<stem>.safetensors``, or the index and its shards."""
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.index.json"
    if single.exists():
        return [single]
    if not index.exists():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: unreadable shard index ({exc})") from None
    return [index] + [folder / f for f in shards]


def check_finite(tensors: dict[str, torch.Tensor], source: str | Path, kind: str = "tensor") -> None:
    """CheckpointError naming ``source`` and the first NaN/inf ``kind`` among ``tensors`` (floating ones)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{source}: {kind} {name!r} has {bad} NaN or infinite value(s) of {t.numel()}; "
                                  "the file is corrupt or was written from a diverged model")


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # uint8 view works for every dtype (bfloat16 included, which numpy cannot represent).
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_hash(weights: dict[str, dict[str, torch.Tensor]]) -> str:
    """SHA-256 (hex) of all tensors of a checkpoint, ``weights[module][name]``, over names, dtypes, shapes and
    bytes in sorted order: independent of dict order and of how the files are sharded."""
    h = hashlib.sha256()
    flat = {f"{m}.{k}": t for m, d in weights.items() for k, t in d.items()}
    for key in sorted(flat):
        t = flat[key]
        h.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``weights[module][param] -> tensor``; ``config``: the saved Config (omegaconf);
    ``meta``: JSON scalars (``step`` ...); ``train_state``: flat tensors (optimisers, RNG) or ``None``."""

    path: Path
    weights: dict[str, dict[str, torch.Tensor]]
    config: Any
    meta: dict[str, Any]
    train_state: dict[str, torch.Tensor] | None = None
    modules: list[str] = field(default_factory=list)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    def load_into(self, modules: dict[str, nn.Module], strict: bool = True) -> None:
        """Copy weights into ``modules`` (by name), casting to each parameter's dtype."""
        for name, module in modules.items():
            if name not in self.weights:
                raise CheckpointError(f"{self.path}: no weights for module {name!r} (has: {', '.join(self.weights)})")
            target = module.state_dict()
            sd = {k: v.to(target[k].dtype) if k in target else v for k, v in self.weights[name].items()}
            try:
                module.load_state_dict(sd, strict=strict)
            except RuntimeError as exc:
                raise CheckpointError(f"{self.path}: weights of {name!r} do not fit the model "
                                      f"(different config?): {exc}") from None


def save_checkpoint(path: str | Path, modules: dict[str, nn.Module], config: Any, meta: dict[str, Any],
                    train_state: dict[str, torch.Tensor] | None = None, state_dtype: str = "float32",
                    max_file_bytes: int | None = None) -> Path:
    """Write a checkpoint directory at ``path`` atomically (replacing an existing one) and return it.
    ``max_file_bytes``: None writes each stem as one file; a number shards larger ones (see the module)."""
    from reenact.config import to_yaml

    if state_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"state_dtype must be 'float32' or 'bfloat16', got {state_dtype!r}")
    dtype = torch.bfloat16 if state_dtype == "bfloat16" else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        weights = {f"{m}.{k}": _to_cpu(v, dtype) for m, mod in modules.items() for k, v in mod.state_dict().items()}
        save_tensors(tmp, "model", weights, max_file_bytes)
        if train_state:
            save_tensors(tmp, "train_state", {k: _to_cpu(v, dtype) for k, v in train_state.items()}, max_file_bytes)
        meta = dict(meta)
        meta.setdefault("versions", versions())
        meta["modules"] = list(modules)
        meta["state_dtype"] = state_dtype
        meta["saved_at"] = time.time()
        _write_text(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
        _write_text(tmp / "config.yaml", to_yaml(config) if config is not None else "{}\n")
        _fsync_dir(tmp)
        if path.exists():  # re-saving a step: move the old one aside first (rename is atomic, rmtree is not)
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from itself, a ``checkpoints`` folder or a run folder (via ``latest``)."""
    path = Path(path)
    for cand in (path, path / "checkpoints"):
        if (cand / "meta.json").exists():
            return cand
        if (cand / LATEST).exists():
            target = cand / (cand / LATEST).read_text().strip()
            if (target / "meta.json").exists():
                return target
            raise CheckpointError(f"{cand / LATEST}: points to {target.name}, which is missing or incomplete")
    raise CheckpointError(f"{path}: no checkpoint here (expected meta.json, or a '{LATEST}' pointer file)")


def load_checkpoint(path: str | Path, train_state: bool = True) -> Checkpoint:
    """Read a checkpoint (directory, ``checkpoints`` folder or run folder). Only safetensors, JSON and YAML are
    parsed: nothing is unpickled."""
    from reenact.config import from_yaml, load_region_config

    path = resolve_checkpoint(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'meta.json'}: unreadable ({exc})") from None
    flat = load_tensors(path, "model")
    if flat is None:
        raise CheckpointError(f"{path}: no model.safetensors (or model.index.json)")
    check_finite(flat, path, "weight")
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        module, _, name = key.partition(".")
        weights.setdefault(module, {})[name] = t
    cfg_path = path / "config.yaml"
    # a region model (meta_learning.region_train) has its own config schema
    parse = (lambda text: load_region_config(base=text)) if meta.get("kind") == "region" else from_yaml
    config = parse(cfg_path.read_text()) if cfg_path.exists() else None
    state = load_tensors(path, "train_state") if train_state else None
    return Checkpoint(path=path, weights=weights, config=config, meta=meta, train_state=state,
                      modules=list(meta.get("modules", weights)))


def _files_stamp(ck: Checkpoint) -> list[list]:
    out = []
    for f in tensor_files(ck.path, "model"):
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def checkpoint_hash(ck: Checkpoint, store: bool = True) -> str:
    """The :func:`weights_hash` of the weights ``ck`` holds, i.e. of what was loaded, not of what ``meta.json``
    says. Computing it reads every byte once; the result is cached per process and (``store``) in a hidden file
    beside the weights, both keyed by the weight files' size + mtime_ns, so a second load costs nothing.

    ``meta.json`` records the hash at the first load (``weights_sha256``); a later load whose weights hash
    differently raises CheckpointError: the weight files were changed after the checkpoint was written, and
    avatars and provenance must not claim the old hash for them. A read-only checkpoint is not updated."""
    stamp = _files_stamp(ck)
    memo_key = (str(ck.path.resolve()), json.dumps(stamp))
    digest = _hash_memo.get(memo_key)
    cache_path = ck.path / _HASH_CACHE
    if digest is None:
        try:
            cached = json.loads(cache_path.read_text())
            if cached.get("files") == stamp and isinstance(cached.get("sha256"), str):
                digest = cached["sha256"]
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    if digest is None:
        digest = weights_hash(ck.weights)
        if store:
            try:
                atomic_write_text(cache_path, json.dumps({"sha256": digest, "files": stamp}))
            except OSError:
                pass  # read-only checkpoint: recomputed by the next process
    _hash_memo[memo_key] = digest
    recorded = ck.meta.get(HASH_KEY)
    if recorded is not None and recorded != digest:
        raise CheckpointError(
            f"{ck.path}: the weights hash to {digest}, but meta.json records {HASH_KEY} {recorded}: the weight "
            "files were changed after this checkpoint was written. Restore the original files, or remove "
            f"{HASH_KEY} from meta.json to accept these weights as a new model (avatars made from the old "
            "weights will then be refused)")
    if recorded is None:
        ck.meta[HASH_KEY] = digest
        if store:
            meta_path = ck.path / "meta.json"
            try:
                meta = json.loads(meta_path.read_text())
                if HASH_KEY not in meta:
                    meta[HASH_KEY] = digest
                    atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
            except (OSError, json.JSONDecodeError):
                pass  # the hash is still used for this session; it is recomputed next time
    return digest


def versions() -> dict[str, str | None]:
    import reenact

    return {"reenact": reenact.__version__, "torch": torch.__version__, "cuda": torch.version.cuda}


def write_latest(folder: str | Path, name: str) -> None:
    atomic_write_text(Path(folder) / LATEST, name + "\n")


def prune_checkpoints(folder: str | Path, keep: int, prefix: str = "step_") -> None:
    """Delete all but the newest ``keep`` checkpoint directories (never the one ``latest`` names)."""
    folder = Path(folder)
    if keep <= 0 or not folder.exists():
        return
    latest = (folder / LATEST).read_text().strip() if (folder / LATEST).exists() else None
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix))
    for p in dirs[:-keep]:
        if p.name != latest:
            shutil.rmtree(p, ignore_errors=True)


def export_checkpoint(src: str | Path, dst: str | Path, modules: tuple[str, ...] = ("E_ema", "G_ema", "D"),
                      dtype: str = "float16", meta: dict[str, Any] | None = None,
                      max_file_bytes: int | None = None) -> Path:
    """A compact inference + fine-tuning copy of a stage-1 checkpoint: only ``modules`` (falling back from
    ``E_ema``/``G_ema`` to ``E``/``G`` when a run kept no EMA), floating tensors in ``dtype`` (cast back to fp32
    on load), no optimiser state, machine-specific paths cleared from the config. Written atomically, as one
    weights file unless ``max_file_bytes`` asks for shards."""
    from omegaconf import OmegaConf

    if dtype not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    ck = load_checkpoint(src, train_state=False)
    want = getattr(torch, dtype)
    chosen = []
    for name in modules:
        if name not in ck.weights and name.endswith("_ema") and name[:-4] in ck.weights:
            name = name[:-4]
        if name not in ck.weights:
            raise CheckpointError(f"{ck.path}: no weights for {name!r} (has: {', '.join(ck.weights)})")
        chosen.append(name)
    cfg = ck.config
    if cfg is not None:
        cleared = {"data": {"root": ""}, "train": {"out_dir": "", "resume": "none", "init_weights": ""}}
        # only the keys this config's schema has (region configs have no ``train.resume``)
        cleared = {g: {k: v for k, v in keys.items() if k in cfg.get(g, {})} for g, keys in cleared.items()}
        cfg = OmegaConf.merge(cfg, cleared)

    class _Holder(nn.Module):  # save_checkpoint takes modules; wrap the stored tensors without building nets
        def __init__(self, tensors: dict[str, torch.Tensor]):
            super().__init__()
            self._t = {k: (v.to(want) if v.is_floating_point() else v) for k, v in tensors.items()}

        def state_dict(self, *args, **kwargs):  # noqa: D102 - the stored tensors, in their export dtype
            return dict(self._t)

    info = {k: v for k, v in ck.meta.items()
            if k in ("step", "versions", "seconds", "kind", "region", "num_videos", "val", "clips")}
    info.update(meta or {})
    info["exported_from"] = {"path": str(ck.path), "step": ck.step, "dtype": dtype}
    return save_checkpoint(dst, {n: _Holder(ck.weights[n]) for n in chosen}, cfg, info,
                           max_file_bytes=max_file_bytes)
