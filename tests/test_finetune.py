"""Stage 2 (few-shot personalisation) on CPU with a briefly meta-learned `tiny` model and a real portrait."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune.avatar import Avatar, decode_generator, encode_generator
from reenact.models.base_model import BaseModel
from finetune.personalize import FinetuneOptions, embed, personalize
from finetune.shots import load_shots
from reenact import io
from reenact.crop import CropParams, box_from_points, crop_matrix
from reenact.errors import InputError, MultipleFacesError, NoFaceError


@pytest.fixture(scope="module")
def base(tiny_checkpoint) -> BaseModel:
    return BaseModel.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def detector():
    from reenact.landmarks import create_detector

    return create_detector("dlib")


@pytest.fixture(scope="module")
def photo(portrait) -> np.ndarray:
    return io.read_image(portrait)


@pytest.fixture(scope="module")
def shots(base, portrait, detector):
    return load_shots([portrait], base.resolution, detector=detector)


@pytest.fixture(scope="module")
def ft40(base, shots):
    return personalize(base, shots, FinetuneOptions(steps=40, progress=False, seed=0))


def _l1(avatar: Avatar, shot) -> float:
    return float(np.abs(avatar.render(shot.crop_points).astype(np.float32) - shot.crop.astype(np.float32)).mean())


def test_shots_use_the_training_crop_convention(base, shots, photo, detector):
    s = shots[0]
    pts = detector.detect_one(photo).points
    m = crop_matrix(box_from_points(pts, CropParams(size=base.resolution)), base.resolution)
    np.testing.assert_allclose(s.matrix, m, atol=1e-6)
    assert s.crop.shape == (base.resolution, base.resolution, 3) and s.crop.dtype == np.uint8
    assert s.size == photo.shape[:2] and s.landmarks_from == "dlib"
    # the face fills the middle of the crop, as in the prepared training data
    lo, hi = s.crop_points.min(0), s.crop_points.max(0)
    assert (lo > 0).all() and (hi < base.resolution).all()
    assert (hi - lo).max() == pytest.approx(base.resolution / 1.8, rel=0.02)


def test_embedding_is_the_mean_over_shots_and_ff_uses_P_e(base, portrait, photo, detector):
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    two = load_shots([portrait, mirrored], base.resolution, detector=detector)
    e2 = embed(base, two)
    e_each = torch.cat([embed(base, [s]) for s in two])
    torch.testing.assert_close(e2, e_each.mean(0, keepdim=True), rtol=1e-5, atol=1e-6)
    ff = personalize(base, two, FinetuneOptions(steps=0))
    assert ff.generator is None
    torch.testing.assert_close(ff.psi, base.G.adain_params(ff.e))


def test_finetuning_lowers_the_reconstruction_error(base, shots, ft40):
    ff = Avatar.from_personalization(base, shots, personalize(base, shots, FinetuneOptions(steps=0)))
    ft = Avatar.from_personalization(base, shots, ft40)
    l1_ff, l1_ft = _l1(ff, shots[0]), _l1(ft, shots[0])
    assert l1_ft < 0.85 * l1_ff, (l1_ff, l1_ft)
    assert ft.mode == "FT" and ft.steps == 40 and ff.mode == "FF" and ff.steps == 0
    assert len(ft40.history) == 40 and all(np.isfinite(h["g_total"]) for h in ft40.history)
    # the base model is untouched by fine-tuning
    assert ff.G is base.G and ft.G is not base.G


def test_psi_only_finetuning_keeps_g_and_fits_psi(base, shots, tmp_path):
    """train="psi": G stays the base generator (the avatar stores psi' alone), and psi' alone still fits the
    photo better than the feed-forward avatar."""
    res = personalize(base, shots, FinetuneOptions(steps=30, progress=False, seed=0, train="psi", lr_psi=1e-2))
    assert res.generator is None and len(res.history) == 30
    ff = Avatar.from_personalization(base, shots, personalize(base, shots, FinetuneOptions(steps=0)))
    av = Avatar.from_personalization(base, shots, res)
    assert av.G is base.G and av.mode == "FT-psi" and av.steps == 30
    assert not torch.equal(av.psi, ff.psi)
    assert _l1(av, shots[0]) < 0.95 * _l1(ff, shots[0]), (_l1(ff, shots[0]), _l1(av, shots[0]))
    with pytest.raises(ValueError, match="train"):
        FinetuneOptions(train="mask")


def test_finetuning_is_repeatable_with_a_seed(base, shots):
    a = personalize(base, shots, FinetuneOptions(steps=3, progress=False, seed=7))
    b = personalize(base, shots, FinetuneOptions(steps=3, progress=False, seed=7))
    torch.testing.assert_close(a.psi, b.psi, rtol=0, atol=0)


def test_generator_encodings(base, ft40):
    """Only tensors that changed are stored; int8 deltas keep the weights within a small error, psi exact."""
    base_sd = {k: v.cpu() for k, v in base.G.state_dict().items()}
    tuned = ft40.generator
    for enc in ("delta-int8", "delta-fp16", "fp16"):
        stored = encode_generator(tuned, base_sd, enc)
        assert not any(".P." in k for k in stored), "P is unused in fine-tuning and must not be stored"
        dec = decode_generator(stored, base_sd)
        for k, v in tuned.items():
            if not v.is_floating_point():
                continue
            err = float((dec[k] - v).abs().max())
            if v.ndim < 2:  # vectors are stored exactly
                assert err == 0, (enc, k)
            elif enc == "fp16":  # fp16 rounding: relative to the weights
                assert err <= 1e-3 * float(v.abs().max()), (enc, k, err)
            else:  # deltas: relative to how far the weights moved (int8: half a step of 1/127 per row)
                moved = float((v - base_sd[k]).abs().max())
                assert err <= (4e-3 if enc == "delta-int8" else 1e-3) * moved + 1e-12, (enc, k, err, moved)
    q8 = sum(t.numel() * t.element_size() for t in encode_generator(tuned, base_sd, "delta-int8").values())
    f16 = sum(t.numel() * t.element_size() for t in encode_generator(tuned, base_sd, "delta-fp16").values())
    assert q8 < f16


def test_landmarks_override(base, portrait, photo, detector, tmp_path):
    pts = detector.detect_one(photo).points
    good = tmp_path / "face.npy"
    np.save(good, pts)
    s = load_shots([portrait], base.resolution, landmarks=[good])[0]  # no detector needed
    np.testing.assert_allclose(s.points, pts)
    assert s.landmarks_from == str(good)
    bad = tmp_path / "wrong.npy"
    np.save(bad, pts[:60])
    with pytest.raises(InputError, match=r"wrong\.npy.*\(68, 2\)"):
        load_shots([portrait], base.resolution, landmarks=[bad])
    with pytest.raises(InputError, match="2 landmark entries for 1 images"):
        load_shots([portrait], base.resolution, landmarks=[good, good])


def test_no_face_asks_for_landmarks_and_an_override_works(base, data_dir, photo, detector):
    dog = data_dir / "portraits" / "lp_s32.jpg"  # a dog: no human face for dlib
    with pytest.raises(NoFaceError, match=r"lp_s32\.jpg: no face.*\(68, 2\) \.npy.*landmarks"):
        load_shots([dog], base.resolution, detector=detector)
    # hand-placed landmarks (here: the portrait's, moved onto the dog's face) make it usable
    img = io.read_image(dog)
    pts = detector.detect_one(photo).points
    pts = (pts - pts.mean(0)) * (0.5 * img.shape[1] / np.ptp(pts[:, 0])) + np.array([128.0, 140.0])
    s = load_shots([dog], base.resolution, landmarks=pts)[0]
    assert s.landmarks_from == "array" and s.crop.shape == (base.resolution, base.resolution, 3)
    ff = personalize(base, [s], FinetuneOptions(steps=0))
    assert torch.isfinite(ff.psi).all()


def test_several_faces(base, photo, detector):
    import cv2

    small = cv2.resize(photo, (photo.shape[1] * 4 // 5, photo.shape[0] * 4 // 5))
    canvas = np.zeros((photo.shape[0], photo.shape[1] + small.shape[1], 3), np.uint8)
    canvas[:, : photo.shape[1]] = photo
    canvas[: small.shape[0], photo.shape[1]:] = small
    with pytest.raises(MultipleFacesError, match="2 faces"):
        load_shots([canvas], base.resolution, detector=detector)
    s = load_shots([canvas], base.resolution, multiple="largest", detector=detector)[0]
    assert s.points[:, 0].max() < photo.shape[1]  # the big face, on the left


def test_mirrored_shots_match_the_augmentation_flip(shots):
    """Fine-tuning mirrors the sources with a mirrored target; the mirror must be the one EpisodeAugment makes."""
    from finetune.personalize import mirror_points, shots_to_tensors
    from reenact.config import AugmentConfig
    from reenact.data.augment import EpisodeAugment

    crops, pts = shots_to_tensors(shots, torch.device("cpu"))
    R = crops.shape[-1]
    aug = EpisodeAugment(AugmentConfig(flip=1.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0,
                                       saturation=0.0, hue=0.0)).train()
    img, p = aug(crops[:, None], pts[:, None])
    assert torch.allclose(p[:, 0], mirror_points(pts, R), atol=1e-3)
    assert (((img[:, 0] + 1) * 127.5 - crops.flip(-1).float()).abs().mean() < 1.0)
    # the semantic parts stay put: the subject's right eye (36-41) is still left of the left eye (42-47)
    m = mirror_points(pts, R)
    assert (m[:, 36:42, 0].mean(1) < m[:, 42:48, 0].mean(1)).all()
    assert torch.equal(mirror_points(m, R), pts)


def test_cropped_shots_are_used_as_they_are(base, shots, tmp_path):
    """cropped=True keeps a prepared crop's pixels and points exactly (a second crop would resample and blur
    them); a crop of the wrong size is refused, naming the image."""
    s = shots[0]
    again = load_shots([s.crop], base.resolution, [s.crop_points], cropped=True)[0]
    assert np.array_equal(again.crop, s.crop) and np.array_equal(again.crop_points, s.crop_points)
    with pytest.raises(InputError, match="cropped=True"):
        load_shots([np.zeros((base.resolution + 2, base.resolution, 3), np.uint8)], base.resolution,
                   [s.crop_points], cropped=True)
