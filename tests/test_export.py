"""Exported (fp16, no optimiser) checkpoints and the bundled default model."""
from __future__ import annotations

import numpy as np
import pytest

from reenact.api import Reenactor, default_checkpoint
from reenact.checkpoint import export_checkpoint, load_checkpoint
from reenact.errors import CheckpointError


def _render(ck, image):
    av = Reenactor.load(ck, "cpu").personalize([image], steps=0, progress=False)
    sp = np.asarray(av.source_points)[0]
    return av.render_batch(np.stack([sp, sp + np.array([2.0, 1.0])]).astype(np.float32)).astype(np.float64)


def test_fp16_export_renders_like_the_original(tmp_path, tiny_warp_checkpoint, portrait):
    from reenact import io

    portrait_image = io.read_image(portrait)
    out = export_checkpoint(tiny_warp_checkpoint, tmp_path / "export")
    ck = load_checkpoint(out)
    assert set(ck.weights) <= {"E_ema", "G_ema", "E", "G", "D"} and ck.train_state is None
    assert all(t.dtype.is_floating_point is False or str(t.dtype) == "torch.float16"
               for w in ck.weights.values() for t in w.values())
    assert ck.config.data.root == "" and ck.meta["exported_from"]["dtype"] == "float16"
    a, b = _render(tiny_warp_checkpoint, portrait_image), _render(out, portrait_image)
    assert np.abs(a - b).max() <= 2.0  # fp16 rounding: at most a couple of gray levels
    with pytest.raises(CheckpointError, match="no weights for 'X'"):
        export_checkpoint(tiny_warp_checkpoint, tmp_path / "bad", modules=("X",))


def test_bundled_models_are_small_and_load():
    from reenact.api import BUNDLED

    path = default_checkpoint()
    assert path == BUNDLED["photo"] and sum(f.stat().st_size for f in path.iterdir()) < 10 * 2**20
    r = Reenactor.load(None, "cpu")
    assert r.renderer == "photo" and (path / "MODEL_CARD.md").exists()
    crop = BUNDLED["crop"]
    assert sum(f.stat().st_size for f in crop.iterdir()) < 40 * 2**20 and (crop / "MODEL_CARD.md").exists()
    assert Reenactor.load("crop", "cpu").base.config.model.resolution == 256


def test_transfer_tool_writes_files_under_the_limit_that_load_as_the_original(tmp_path, tiny_warp_checkpoint):
    import importlib.util

    import torch

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("transfer_checkpoint", REPO / "tools" / "transfer_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    limit_mb = 0.05
    assert tool.main([str(tiny_warp_checkpoint), str(tmp_path / "full"), "--full", "--mb", str(limit_mb)]) == 0
    files = list((tmp_path / "full").glob("*.safetensors"))
    assert len(files) > 2 and all(f.stat().st_size <= limit_mb * 2**20 + 8192 for f in files)  # + header
    a, b = load_checkpoint(tiny_warp_checkpoint), load_checkpoint(tmp_path / "full")
    assert set(a.weights) == set(b.weights) and b.step == a.step and b.train_state is not None
    assert all(torch.equal(a.weights[m][k], b.weights[m][k]) for m in a.weights for k in a.weights[m])
