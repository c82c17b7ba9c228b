"""The render cache returns exactly what the wrapped renderer made, keyed by the inputs."""
from __future__ import annotations

import numpy as np

from reenact.metrics.harness import CachedRenderer


class Counting:
    def __init__(self):
        self.calls = 0

    def render(self, src_images, src_points, tgt_points):
        self.calls += 1
        return (np.arange(len(tgt_points) * 12, dtype=np.uint8).reshape(len(tgt_points), 2, 2, 3) + self.calls)


def test_cache_hits_and_keys(tmp_path):
    r = Counting()
    src, sp, tp = np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 68, 2), np.float32), np.ones((3, 68, 2))
    a = CachedRenderer(r, tmp_path, "m-k1").render(src, sp, tp)
    b = CachedRenderer(Counting(), tmp_path, "m-k1").render(src, sp, tp)  # a fresh process reads the stored file
    assert np.array_equal(a, b) and r.calls == 1
    c = CachedRenderer(r, tmp_path, "m-k1").render(src, sp, tp + 1)  # other targets: rendered again
    d = CachedRenderer(r, tmp_path, "m-k8").render(src, sp, tp)  # other tag: rendered again
    assert r.calls == 3 and not np.array_equal(a, c) and not np.array_equal(a, d)
    assert not list(tmp_path.glob(".tmp-*"))


def test_checkpoint_tag_survives_first_load(tiny_checkpoint, tmp_path):
    """Loading a checkpoint caches its weights hash in meta.json; a cache rendered from a fresh copy on another
    machine must still match the copy here that has been loaded since (a real bug: tags differed)."""
    import hashlib
    import json
    import shutil

    from reenact.checkpoint import HASH_KEY
    from reenact.models.base_model import BaseModel
    from reenact.checkpoint import resolve_checkpoint
    from reenact.metrics.harness import checkpoint_tag

    ck = tmp_path / "ck"
    shutil.copytree(resolve_checkpoint(tiny_checkpoint), ck)
    meta = json.loads((ck / "meta.json").read_text())
    meta.pop(HASH_KEY, None)  # as saved by the trainer, never loaded (other tests may have loaded the fixture)
    clean = json.dumps(meta, indent=1, sort_keys=True)
    (ck / "meta.json").write_text(clean)
    before = checkpoint_tag(ck)
    assert before == hashlib.sha1(clean.encode()).hexdigest()[:12]  # names of never-loaded checkpoints unchanged
    BaseModel.load(ck, device="cpu")
    assert HASH_KEY in (ck / "meta.json").read_text()  # loading did store the hash...
    assert checkpoint_tag(ck) == before  # ...and the tag did not move
