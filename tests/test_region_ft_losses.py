"""Identity and perceptual terms in fine-tuning of the photo renderer (issue 21 item 2): the mouth blend pasted
back into the photo's SFace-aligned face, the weights from FinetuneOptions down to finetune_region."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reenact import pretrained

needs_sface = pytest.mark.skipif(not pretrained.available("sface"),
                                 reason="optional extra `losses` not installed (pip install 'reenact[losses]')")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photo(portrait):
    from reenact import io
    from reenact.landmarks import create_detector

    img = io.read_image(portrait)
    return img, create_detector("dlib").detect_one(img).points.astype(np.float32)


@pytest.fixture(scope="module")
def base():
    from reenact.api import Reenactor

    return Reenactor.load("photo", device="cpu").base


@pytest.fixture(scope="module")
def pairs(base, photo):
    from finetune.region_finetune import make_pairs

    img, pts = photo
    return make_pairs([img], [pts], base.spec, base.size, 2, 0)


@pytest.fixture(scope="module")
def composed(pairs, photo):
    from finetune.region_finetune import ComposedIdentity

    img, pts = photo
    sup = torch.from_numpy(np.stack([q[4] for q in pairs]))[:, None]
    return ComposedIdentity([img], [pts], [q[5] for q in pairs], sup, [0] * len(pairs), "cpu")


@needs_sface
def test_composed_face_is_the_photos_face_when_the_blend_is_the_target(composed, pairs):
    from reenact.renderer import to_net

    tgt = to_net(np.stack([q[1] for q in pairs]), "cpu")
    idx = torch.arange(len(pairs))
    face = composed.compose(tgt, idx)
    alpha = composed.alpha[idx]
    assert alpha.sum() / len(pairs) > 50  # the mouth is pasted somewhere in the face
    diff = (face - composed.faces[0:1]).abs()
    # inside the pasted mouth: two resamplings (photo -> crop -> face) against one, in [-1, 1] units
    assert float((diff * alpha).sum() / (3 * alpha.sum())) < 0.03
    assert float(diff.mean()) < 2e-3
    assert float(composed(tgt, idx)) < 2e-3  # and SFace sees the photo's own face
    # a misplaced paste (the crop read 8 px off) is not the photo: the check above tests the geometry
    shifted = torch.roll(tgt, 8, dims=-1)
    off = (composed.compose(shifted, idx) - composed.faces[0:1]).abs()
    assert float((off * alpha).sum() / (3 * alpha.sum())) > 2 * float((diff * alpha).sum() / (3 * alpha.sum()))


@needs_sface
def test_identity_gradients_reach_the_generator(base, pairs, composed, photo):
    import copy

    from reenact.renderer import embed, to_net

    img, pts = photo
    G = copy.deepcopy(base.G).train().requires_grad_(True)
    psi = base.G.psi(embed(base.E, [img], [pts], base.spec, base.size, "cpu"))
    wi = to_net(np.stack([q[0] for q in pairs]), "cpu")
    di = torch.from_numpy(np.stack([q[2] for q in pairs]))
    si = torch.from_numpy(np.stack([q[4] for q in pairs]))[:, None]
    out = G(wi, di, psi)
    loss = composed(wi + out.mask * si * (out.rgb - wi), torch.arange(len(pairs)))
    loss.backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@needs_sface
def test_finetune_options_reach_region_finetuning(photo):
    from finetune.personalize import FinetuneOptions
    from reenact.api import Reenactor

    img, pts = photo
    r = Reenactor.load("photo", device="cpu")
    opts = FinetuneOptions(steps=2, progress=False, identity=50.0, perceptual=0.5)
    avatar = r.personalize([img], landmarks=[pts], options=opts)
    assert len(avatar.history) == 2
    for h in avatar.history:
        assert h["identity"] > 0 and h["perceptual"] > 0
        parts = ("pyramid", "ssim", "inner", "mask_outside")
        weights = r.base.config.loss
        expected = sum(float(getattr(weights, k)) * h[k] for k in parts) + 50.0 * h["identity"] + 0.5 * h["perceptual"]
        assert h["total"] == pytest.approx(expected, rel=1e-4)
    assert avatar.info["options"]["identity"] == 50.0 and avatar.info["options"]["perceptual"] == 0.5
    plain = r.personalize([img], landmarks=[pts], options=FinetuneOptions(steps=1, progress=False))
    assert "identity" not in plain.history[0] and "perceptual" not in plain.history[0]  # the bundled model's: 0


def test_identity_weights_are_checked_and_refused_by_the_crop_model():
    from finetune.personalize import FinetuneOptions
    from reenact.api import Reenactor
    from reenact.errors import InputError

    with pytest.raises(ValueError):
        FinetuneOptions(identity=-1.0)
    from pathlib import Path

    import reenact

    r = Reenactor.load(str(Path(reenact.__file__).with_name("weights") / "default"), device="cpu")  # the crop model
    assert r.renderer != "photo"
    with pytest.raises(InputError, match="photo renderer"):
        r.personalize([np.zeros((64, 64, 3), np.uint8)], landmarks=[np.zeros((68, 2), np.float32)], steps=1,
                      identity=1.0)
