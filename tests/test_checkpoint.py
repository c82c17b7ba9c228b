"""Checkpoints and avatars are checked on load: finite tensors, and the weights hash is the hash of the weights
actually read (a stale ``weights_sha256`` in meta.json is caught, not trusted); the one device picker."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from reenact import checkpoint as ckpt
from reenact.device import resolve_device
from reenact.errors import CheckpointError
from reenact.models import BaseModel


@pytest.fixture()
def copy_ck(tiny_checkpoint, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(ckpt.resolve_checkpoint(tiny_checkpoint), dst)
    for f in (dst / ckpt._HASH_CACHE,):
        f.unlink(missing_ok=True)
    return dst


def _rewrite_weights(folder, change) -> None:
    """Rewrite model.safetensors with ``change(tensors)`` applied; meta.json is left as it is."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    stat = path.stat()
    save_file(tensors, str(path))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later write, whatever the clock


def _g_weight(tensors) -> str:
    return next(k for k, t in tensors.items() if k.startswith("G") and t.is_floating_point() and t.ndim >= 2)


def test_tampered_weights_with_the_old_recorded_hash_are_refused(copy_ck):
    good = BaseModel.load(copy_ck, device="cpu")
    assert json.loads((copy_ck / "meta.json").read_text())[ckpt.HASH_KEY] == good.hash

    def nudge(t):
        k = _g_weight(t)
        t[k] = t[k] + 1e-3

    _rewrite_weights(copy_ck, nudge)
    with pytest.raises(CheckpointError, match=r"ck: the weights hash to [0-9a-f]{64}, but meta.json records "
                                              rf"weights_sha256 {good.hash}"):
        BaseModel.load(copy_ck, device="cpu")


def test_an_avatar_of_the_original_weights_is_refused_by_changed_weights(copy_ck, portrait, tmp_path):
    from reenact import Reenactor

    avatar = Reenactor.load(copy_ck, device="cpu").personalize([portrait], steps=0, progress=False)
    path = avatar.save(tmp_path / "a.safetensors")

    def nudge(t):
        k = _g_weight(t)
        t[k] = t[k] * 1.01

    _rewrite_weights(copy_ck, nudge)
    meta = json.loads((copy_ck / "meta.json").read_text())
    meta.pop(ckpt.HASH_KEY)  # accepted as a new model: its hash is that of the new weights
    (copy_ck / "meta.json").write_text(json.dumps(meta))
    changed = Reenactor.load(copy_ck, device="cpu")
    assert changed.base_hash != avatar.base_hash
    with pytest.raises(CheckpointError, match="avatar was made from base model"):
        changed.load_avatar(path)


def test_a_nan_weight_is_refused_naming_the_file_and_tensor(copy_ck):
    name = {}

    def poison(t):
        name["k"] = k = _g_weight(t)
        t[k] = t[k].clone()
        t[k].view(-1)[3] = float("nan")

    _rewrite_weights(copy_ck, poison)
    with pytest.raises(CheckpointError, match=rf"ck: weight '{name['k']}' has 1 NaN or infinite value"):
        BaseModel.load(copy_ck, device="cpu")


def test_the_hash_is_cached_by_size_and_mtime(copy_ck, monkeypatch):
    first = BaseModel.load(copy_ck, device="cpu").hash
    assert (copy_ck / ckpt._HASH_CACHE).exists()
    calls = []
    real = ckpt.weights_hash
    monkeypatch.setattr(ckpt, "weights_hash", lambda w: calls.append(1) or real(w))
    ckpt._hash_memo.clear()
    assert BaseModel.load(copy_ck, device="cpu").hash == first and not calls  # from the file beside the weights
    weights = copy_ck / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert BaseModel.load(copy_ck, device="cpu").hash == first and len(calls) == 1  # touched: hashed again


def test_an_avatar_with_nan_psi_is_refused(tiny_checkpoint, portrait, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from reenact import Reenactor

    r = Reenactor.load(tiny_checkpoint, device="cpu")
    path = r.personalize([portrait], steps=0, progress=False).save(tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["psi"][0, 5] = float("inf")
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"a\.safetensors: tensor 'psi' has 1 NaN or infinite value"):
        r.load_avatar(path)


def test_check_finite_ignores_integer_tensors():
    ckpt.check_finite({"n": torch.arange(3), "x": torch.zeros(2)}, "f")
    with pytest.raises(CheckpointError, match="f: tensor 'x'"):
        ckpt.check_finite({"x": torch.tensor([0.0, np.nan])}, "f")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto", local_rank=0) == torch.device("cuda:0")
        with pytest.raises(ValueError, match="cuda:99.*CUDA device"):
            resolve_device("cuda:99")
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="'cuda:1': CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="'gpu0' is not a device"):
        resolve_device("gpu0")
