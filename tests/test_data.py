import json

import numpy as np
import pytest
import torch

from reenact.config import AugmentConfig
from reenact.data.augment import EpisodeAugment
from reenact.data.dataset import PreparedDataset
from reenact.data.episodes import EpisodeDataset
from reenact.data.prepare import PrepareOptions, prepare_dataset
from reenact.landmarks.parts import MIRROR_PERMUTATION


def test_prepare_writes_clips_landmarks_and_audio(prepared_dir):
    ds = PreparedDataset(prepared_dir)
    assert len(ds) == 3 and len(ds.identities) == 3
    for i, rec in enumerate(ds.records):
        meta = ds.meta(i)
        frames = ds.frames(i)
        assert frames.shape == (rec.num_stored, 64, 64, 3) and frames.dtype == np.uint8
        assert meta["points"].shape == (rec.num_frames, 68, 2)
        assert rec.num_frames == 50  # 2 s at 25 fps
        # Landmarks sit inside the crop, roughly centred.
        pts = meta["points"][meta["valid"]]
        assert 16 < pts[..., 0].mean() < 48 and 16 < pts[..., 1].mean() < 52
        # Audio kept, 16 kHz, same length as the video within a frame.
        assert rec.has_audio
        audio = ds.audio(i)
        assert abs(len(audio) / 16000 - rec.num_frames / rec.fps) < 1.5 / rec.fps


def test_prepare_is_resumable_and_reports_bad_clips(prepared_dir, tmp_path, data_dir):
    src = tmp_path / "src" / "person"
    src.mkdir(parents=True)
    (src / "broken.mp4").write_bytes(b"not a video at all")
    noface = tmp_path / "src" / "person" / "noface.mp4"
    from reenact import io
    io.write_video(noface, (np.full((64, 64, 3), v, np.uint8) for v in range(0, 200, 10)), fps=25)
    out = tmp_path / "out"
    rep = prepare_dataset(tmp_path / "src", out, PrepareOptions(size=64), workers=1, progress=False)
    assert rep.done == 0 and set(rep.skipped) == {"person/broken", "person/noface"}
    assert "broken.mp4" in rep.skipped["person/broken"]
    assert "face" in rep.skipped["person/noface"]
    lines = [json.loads(x) for x in (out / "report.jsonl").read_text().splitlines()]
    assert {x["key"] for x in lines} == {"person/broken", "person/noface"}
    again = prepare_dataset(tmp_path / "src", out, PrepareOptions(size=64), workers=1, progress=False)
    assert again.done == 0 and again.already == 2 and not again.skipped


def test_episode_shapes_and_reproducible_sampling(prepared_dir, tmp_path):
    ds = EpisodeDataset(prepared_dir, k_shots=4, split="all", cache_dir=tmp_path, draw=True)
    item = ds[(1, 7)]
    assert item["frames"].shape == (5, 3, 64, 64) and item["frames"].dtype == torch.uint8
    assert item["points"].shape == (5, 68, 2)
    assert item["landmark_images"].shape == (5, 3, 64, 64)
    assert int(item["video_index"]) == 1 and ds.num_videos == 3
    again = ds[(1, 7)]
    assert torch.equal(item["frames"], again["frames"]) and torch.equal(item["points"], again["points"])
    # The cached frames equal the decoded ones.
    nocache = EpisodeDataset(prepared_dir, k_shots=4, split="all", cache=False)
    assert torch.equal(nocache[(1, 7)]["frames"], item["frames"])


def test_split_by_identity_is_disjoint(prepared_dir):
    ds = PreparedDataset(prepared_dir)
    ident = ds.identities[0]
    train, val = ds.split([ident])
    assert {ds.records[i].identity for i in val} == {ident}
    assert ident not in {ds.records[i].identity for i in train}


def test_augment_flip_mirrors_landmarks_with_pixels(prepared_dir, tmp_path):
    ds = EpisodeDataset(prepared_dir, k_shots=2, split="all", cache_dir=tmp_path)
    item = ds[(0, 0)]
    frames, pts = item["frames"][None], item["points"][None]
    aug = EpisodeAugment(AugmentConfig(flip=1.0, scale=0, shift=0, brightness=0, contrast=0, saturation=0, hue=0))
    out, opts = aug(frames, pts, torch.Generator().manual_seed(0))
    w = frames.shape[-1]
    ref = frames.float().div(255).flip(-1) * 2 - 1
    assert (out - ref).abs().mean() < 0.02
    expect = pts.clone()
    expect[..., 0] = w - 1 - expect[..., 0]
    expect = expect[:, :, torch.as_tensor(MIRROR_PERMUTATION)]
    assert torch.allclose(opts, expect, atol=1e-3)
    # The subject's right eye (36-41) is still left of the left eye (42-47) after the flip.
    assert (opts[..., 36:42, 0].mean() < opts[..., 42:48, 0].mean())
    # Zoom/shift move points with pixels: a shifted episode's points move by the same amount.
    aug = EpisodeAugment(AugmentConfig(flip=0.0, scale=0.0, shift=0.1, brightness=0.2))
    a_out, a_pts = aug(frames, pts, torch.Generator().manual_seed(1))
    assert a_out.shape == out.shape and a_out.min() >= -1 and a_out.max() <= 1
    d = a_pts - pts
    assert torch.allclose(d, d[..., :1, :].expand_as(d), atol=1e-3)  # pure translation
    aug.eval()
    e_out, e_pts = aug(frames, pts)
    assert torch.equal(e_pts, pts)


def test_prepare_with_a_missing_source_creates_nothing(tmp_path, capsys):
    from reenact.cli import main

    out = tmp_path / "out"
    assert main(["prepare", str(tmp_path / "no-such-folder"), str(out)]) == 2
    assert capsys.readouterr().err == f"reenact: error: {tmp_path / 'no-such-folder'}: not a folder of videos\n"
    assert not out.exists()


def test_aliases_of_one_person_fall_on_one_side_and_others_keep_their_side():
    """pc44 and pc51 are one person: held out together at every fraction, while every other identity of the
    shared set is held out exactly as by the plain hash of its own name (the held-out set does not move)."""
    import types
    import zlib

    from conftest import manifest

    from reenact.data.dataset import IDENTITY_ALIASES, canonical_identity
    from reenact.data.region_episodes import RegionClips

    idents = sorted({r["identity"] for r in manifest() if r["file"].startswith("videos/")})
    assert {"pc44", "pc51"} <= set(idents) and canonical_identity("pc51") == canonical_identity("pc44")
    records = [types.SimpleNamespace(identity=i) for i in idents for _ in range(2)]
    fake_ds = types.SimpleNamespace(identities=idents, records=records)
    fake_regions = types.SimpleNamespace(identities=[r.identity for r in records])
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        train, val = PreparedDataset.split(fake_ds, None, fraction)
        held = {records[i].identity for i in val}
        assert not held & {records[i].identity for i in train}
        assert ("pc44" in held) == ("pc51" in held)
        plain = {i for i in idents if zlib.crc32(i.encode()) % 10_000 < fraction * 10_000}
        assert held - set(IDENTITY_ALIASES) == plain - set(IDENTITY_ALIASES)
        r_train, r_val = RegionClips.split(fake_regions, fraction)
        assert (r_train, r_val) == (train, val)  # the region trainer holds out the same people
    # at the default fraction nobody moves: pc44's hash keeps both in training, as pc51's alone did
    train, val = PreparedDataset.split(fake_ds, None, 0.1)
    assert {records[i].identity for i in val} == {i for i in idents if zlib.crc32(i.encode()) % 10_000 < 1000}
    # naming either alias holds out both
    _, val = PreparedDataset.split(fake_ds, ["pc51"])
    assert {records[i].identity for i in val} == {"pc44", "pc51"}
