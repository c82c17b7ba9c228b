"""Networks (E, G, D) and losses of stage 1 on the tiny preset (CPU)."""
from __future__ import annotations

import pytest
import torch

from reenact import losses as L
from reenact.config import load_config
from reenact.errors import CheckpointError
from reenact.models import build_discriminator, build_embedder, build_generator, count_params


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture(scope="module")
def nets(cfg):
    torch.manual_seed(0)
    return build_embedder(cfg.model), build_generator(cfg.model), build_discriminator(cfg.model, num_videos=5)


def _episode(cfg, b=2):
    g = torch.Generator().manual_seed(1)
    r, k = cfg.model.resolution, cfg.data.k_shots
    frames = torch.rand(b, k, 3, r, r, generator=g) * 2 - 1
    lmks = torch.rand(b, k, 3, r, r, generator=g) * 2 - 1
    return frames, lmks


def test_shapes_and_ranges(cfg, nets):
    E, G, D = nets
    frames, lmks = _episode(cfg)
    r, d = cfg.model.resolution, cfg.model.embed_dim
    e_mean, e_k = E(frames, lmks)
    assert e_mean.shape == (2, d) and e_k.shape == (2, cfg.data.k_shots, d)
    torch.testing.assert_close(e_mean, e_k.mean(1))
    assert (e_k >= 0).all()  # sum pooling + ReLU
    fake = G(lmks[:, 0], e_mean).image
    assert fake.shape == (2, 3, r, r) and fake.abs().max() <= 1
    score, feats = D(fake, lmks[:, 0], video_index=torch.tensor([0, 3]))
    assert score.shape == (2,)
    assert len(feats) >= 3 and feats[0].shape[0] == 2 and feats[-1].shape[-1] == 4  # ends at 4x4


def test_psi_path_equals_embedding_path(cfg, nets):
    E, G, D = nets
    frames, lmks = _episode(cfg)
    G.eval()  # freeze spectral-norm power iterations so both calls see the same weights
    try:
        e, _ = E(frames, lmks)
        psi = G.adain_params(e)
        assert psi.shape == (2, G.num_adain_params)
        torch.testing.assert_close(G(lmks[:, 0], e).image, G.forward_psi(lmks[:, 0], psi).image)
        # one psi broadcast over a batch of landmark images (fine-tuning a single person)
        out = G.forward_psi(lmks[:, 0], psi[:1]).image
        torch.testing.assert_close(out[0], G.forward_psi(lmks[:1, 0], psi[:1]).image[0])
        with pytest.raises(ValueError, match="psi has"):
            G.forward_psi(lmks[:, 0], psi[:, :-1])
    finally:
        G.train()


def test_discriminator_projection_uses_table_row(cfg, nets):
    E, G, D = nets
    frames, lmks = _episode(cfg)
    x, y = frames[:, 0], lmks[:, 0]
    D.eval()
    try:
        idx = torch.tensor([1, 4])
        s_idx, _ = D(x, y, video_index=idx)
        s_w, _ = D(x, y, w=D.W(idx))
        torch.testing.assert_close(s_idx, s_w)
        s_other, _ = D(x, y, video_index=torch.tensor([2, 2]))
        assert not torch.allclose(s_idx, s_other)  # the per-video row matters
    finally:
        D.train()


def test_gradients_reach_every_parameter(cfg, nets):
    E, G, D = nets
    frames, lmks = _episode(cfg)
    for m in nets:
        m.zero_grad(set_to_none=True)
    e, _ = E(frames, lmks)
    fake = G(lmks[:, 0], e).image
    score, feats = D(fake, lmks[:, 0], video_index=torch.tensor([0, 1]))
    (score.sum() + sum(f.mean() for f in feats) + fake.mean()).backward()
    for name, m in (("E", E), ("G", G), ("D", D)):
        missing = [n for n, p in m.named_parameters() if p.grad is None]
        if name == "D":
            missing = [n for n in missing if n != "W.weight"]  # rows not indexed: gradient exists but is sparse
        assert not missing, f"{name}: no gradient for {missing}"
    assert D.W.weight.grad[2:].abs().sum() == 0 and D.W.weight.grad[:2].abs().sum() > 0


def test_spectral_norm_bounds_weights(cfg):
    conv = build_generator(cfg.model).down[1].c1
    for _ in range(30):  # power iterations converge
        w = conv.weight
    sigma = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv.weight.dtype == torch.float32  # power iteration and sigma stay in fp32


def test_preset_parameter_counts():
    counts = {}
    for preset in ("tiny", "small", "paper"):
        m = load_config(preset).model
        E, G, D = build_embedder(m), build_generator(m), build_discriminator(m, num_videos=1)
        counts[preset] = (count_params(E), count_params(G), count_params(D) - D.W.weight.numel())
    e, g, d = counts["paper"]  # published: E 15M, G 38M, D 20M
    assert abs(e / 1e6 - 15) < 1 and abs(g / 1e6 - 38) < 1.5 and abs(d / 1e6 - 20) < 1
    assert 8e6 <= sum(counts["small"]) <= 16e6
    assert sum(counts["tiny"]) < 200_000


def test_generator_variants(cfg):
    from reenact.models import Generator, WarpGenerator

    assert isinstance(build_generator(load_config("tiny", ["model.generator=warp"]).model), WarpGenerator)
    assert isinstance(build_generator(load_config("tiny").model), Generator)
    with pytest.raises(ValueError, match="'base', 'warp'"):
        build_generator(load_config("tiny", ["model.generator=nope"]).model)


def test_warp_generator_starts_from_the_warped_source(cfg):
    """At initialisation the residual flow is zero and the mask favours the warp: with the target landmarks equal
    to the source's, the output is close to the source frame, far from another frame."""
    from reenact.models import build_embedder

    m = load_config("tiny", ["model.generator=warp"]).model
    torch.manual_seed(0)
    G, E = build_generator(m).eval(), build_embedder(m).eval()
    R = m.resolution
    src = torch.rand(2, 2, 3, R, R) * 2 - 1
    pts = torch.rand(2, 2, 68, 2) * (R / 2) + R / 4
    e, _ = E(src, torch.zeros_like(src))
    with torch.no_grad():
        res = G(torch.zeros(2, 3, R, R), e, src=src[:, :1], src_points=pts[:, :1], tgt_points=pts[:, 0])
    out = res.image
    assert out.shape == (2, 3, R, R)
    assert set(res.aux) == {"warp", "mask"} and not res.reg  # regularisers only when gradients are on
    assert (out - src[:, 0]).abs().mean() < 0.5 * (out - src[:, 1]).abs().mean()
    with pytest.raises(ValueError, match="needs src"):
        G(torch.zeros(2, 3, R, R), e)


# --- losses -------------------------------------------------------------------------------------------------

def test_hinge_and_matching_values():
    d = L.d_hinge(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5]))
    assert d["d_real"].item() == pytest.approx(0.5) and d["d_fake"].item() == pytest.approx(0.75)
    assert L.g_hinge(torch.tensor([1.0, 3.0]))["adv"].item() == pytest.approx(-2.0)
    fm = L.feature_matching([torch.zeros(2, 3), torch.ones(2, 2)], [torch.ones(2, 3), torch.ones(2, 2)])
    assert fm["fm"].item() == pytest.approx(1.0)
    assert L.embedding_match(torch.zeros(2, 4), torch.full((2, 4), 0.5))["mch"].item() == pytest.approx(0.5)


def test_content_loss_default_is_finite_and_zero_on_identity(cfg):
    content = L.ContentLoss(cfg.loss)
    assert set(content.weights) == {"pyramid", "ssim"}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    same = content(x, x)
    assert same["pyramid"].item() == pytest.approx(0, abs=1e-6) and same["ssim"].item() == pytest.approx(0, abs=1e-4)
    diff = content(x, y)
    assert all(torch.isfinite(v) and v > 0.1 for v in diff.values())
    assert L.ssim(x, x).item() == pytest.approx(1.0, abs=1e-4)


def test_perceptual_backbone_needs_a_local_file(cfg, tmp_path):
    bad = load_config("tiny", ["loss.content=[pyramid,vgg19]"]).loss
    with pytest.raises(CheckpointError, match="vgg19_path"):
        L.ContentLoss(bad)
    missing = load_config("tiny", ["loss.content=[vgg19]", f"loss.vgg19_path={tmp_path / 'none.safetensors'}"]).loss
    with pytest.raises(CheckpointError, match="none.safetensors: weight file not found"):
        L.ContentLoss(missing)


def test_perceptual_backbone_loads_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    net = L._vgg_features(L._VGG16, L._TAPS["vggface"][-1])
    # Caffe-style names (convX_Y), not torchvision's features.N: matched in layer order
    names = [f"conv{b}_{j}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for j in range(1, n + 1)]
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    sd = {}
    for name, c in zip(names, convs):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = c.weight.detach().clone(), c.bias.detach().clone()
    path = tmp_path / "vggface.safetensors"
    save_file(sd, str(path))
    cfg = load_config("tiny", ["loss.content=[vggface]", f"loss.vggface_path={path}"]).loss
    content = L.ContentLoss(cfg)
    loaded = [m for m in content.perceptual["vggface"].net if isinstance(m, torch.nn.Conv2d)]
    torch.testing.assert_close(loaded[3].weight, convs[3].weight)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = content(x, x.flip(-1))
    assert set(out) == {"vggface"} and out["vggface"].item() > 0
    assert content(x, x)["vggface"].item() == pytest.approx(0, abs=1e-6)
