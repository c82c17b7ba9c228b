"""The render cache returns exactly what the wrapped renderer made, keyed by the inputs."""
from __future__ import annotations

import numpy as np

from reenact.metrics.render_cache import CachedRenderer


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
