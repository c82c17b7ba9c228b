"""Metrics with known answers: pixel metrics, regions, sharpness, identity, landmarks/pose/blinks, FID, sync."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from reenact.landmarks.parts import LEFT_EYE, MIRROR_PERMUTATION, MOUTH, RIGHT_EYE
from reenact.metrics import fid as fidm
from reenact.metrics.identity import FaceAnalyzer, acd, csim
from reenact.metrics.landmarks import (POSE_MODEL_INDICES, POSE_MODEL_POINTS, detect_blinks, euler_to_rotation,
                                       eye_aspect_ratio, head_pose, inter_ocular, lmd, pose_error)
from reenact.metrics.psnr_ssim import psnr, ssim
from reenact.metrics.regions import (eye_boxes, eye_gap, hard_frames, mouth_box, mouth_interior_mask,
                                     mouth_interior_metrics, mouth_opening, open_mouth, opening_gap,
                                     region_metrics)
from reenact.metrics.sharpness import cpbd, face_box, lapvar_ratio, laplacian_variance
from reenact.metrics.sync import av_sync


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def face(identity_frames, analyzer):
    """A real frame (full resolution) and its dlib landmarks."""
    img = identity_frames["same"][0]
    f = analyzer.analyze(img)
    assert f is not None
    return img, f.points


# ------------------------------------------------------------------------------------------------ PSNR / SSIM

def test_identical_images_give_ssim_1_and_psnr_inf(face):
    img = face[0]
    assert ssim(img, img)[0] == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(psnr(img, img)[0])


def test_psnr_of_a_known_offset_and_ssim_ordering():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, (2, 40, 40, 3)).astype(np.uint8)
    b = a + 10  # every pixel off by 10: MSE 100
    assert psnr(a, b) == pytest.approx([10 * np.log10(255 ** 2 / 100)] * 2)
    smooth = cv2.GaussianBlur(a[0], (0, 0), 3)
    noisy = np.clip(smooth + rng.normal(0, 5, smooth.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype(np.uint8)
    s1, s2 = ssim(smooth, noisy)[0], ssim(smooth, noisier)[0]
    assert 1 > s1 > s2 > 0
    assert ssim(noisy, smooth)[0] == pytest.approx(s1, abs=1e-6)  # symmetric


# ------------------------------------------------------------------------------------------------ regions

def test_region_boxes_land_on_the_mouth_and_eyes_of_a_real_frame(face):
    img, pts = face
    h, w = img.shape[:2]
    mx0, my0, mx1, my1 = mouth_box(pts, h, w)
    (rx0, ry0, rx1, ry1), (lx0, ly0, lx1, ly1) = eye_boxes(pts, h, w)
    inside = lambda p, b: (b[0] <= p[:, 0]).all() and (p[:, 0] < b[2]).all() and (b[1] <= p[:, 1]).all() \
        and (p[:, 1] < b[3]).all()
    assert inside(pts[MOUTH], (mx0, my0, mx1, my1))
    assert inside(pts[RIGHT_EYE], (rx0, ry0, rx1, ry1)) and inside(pts[LEFT_EYE], (lx0, ly0, lx1, ly1))
    # boxes are tight: a 15-25 % margin, so the mouth box is narrower than the jaw and below the nose tip
    jaw_w = pts[16, 0] - pts[0, 0]
    assert mx1 - mx0 < 0.8 * jaw_w and my0 > pts[30, 1] - 0.05 * jaw_w
    # the eyes sit side by side above the nose tip, the subject's right eye on the image's left, no overlap
    assert rx1 <= lx0 and max(ry1, ly1) < pts[30, 1] and max(ry1, ly1) < my0
    iod = inter_ocular(pts)
    assert 0.3 * iod < rx1 - rx0 < iod


def test_region_metrics_see_a_mouth_only_change(face):
    img, pts = face
    fake = img.copy()
    x0, y0, x1, y1 = mouth_box(pts, *img.shape[:2], margin=0.0)
    fake[y0:y1, x0:x1] = 255 - fake[y0:y1, x0:x1]  # destroy the mouth only
    r = region_metrics(fake[None], img[None], pts[None])
    assert r["mouth_ssim"][0] < 0.5 and r["eyes_ssim"][0] > 0.99 and math.isinf(r["eyes_psnr"][0])


def test_hard_frames_are_the_largest_mouth_opening_gaps(face):
    _, pts = face
    src = pts.copy()
    targets = np.stack([pts.copy() for _ in range(8)])
    for i in range(8):  # open the mouth by i px: lower inner lip down
        targets[i, [65, 66, 67], 1] += i
    gap = opening_gap(src, targets)
    assert np.allclose(gap, mouth_opening(targets) - mouth_opening(src))
    assert np.all(np.diff(gap) > 0)
    assert hard_frames(gap).tolist() == [False] * 6 + [True] * 2  # the quarter with the widest gap


# A real clip whose speaker opens the mouth wide (teeth showing) a second after a closed-mouth start.
OPEN_MOUTH_CLIP = "videos/lp97/driving_d12.mp4"
CLOSED_FRAME, OPEN_FRAME = 0, 34


@pytest.fixture(scope="module")
def open_and_closed(data_dir):
    """(closed frame, its dlib landmarks, open-mouth frame, its landmarks) of one real 512 px clip."""
    from reenact import io
    from reenact.landmarks import create_detector

    det = create_detector("dlib")
    frames = list(io.read_frames(data_dir / OPEN_MOUTH_CLIP, max_frames=OPEN_FRAME + 1))
    closed, opened = frames[CLOSED_FRAME], frames[OPEN_FRAME]
    return closed, det.detect_one(closed).points, opened, det.detect_one(opened).points


def test_open_mouths_are_selected_by_the_inner_lip_gap(open_and_closed):
    _, closed_pts, _, open_pts = open_and_closed
    assert open_mouth(np.stack([closed_pts, open_pts])).tolist() == [False, True]
    # the threshold is in outer-eye-corner distances: a gap just over / under 0.08 of it flips the verdict
    iod = np.linalg.norm(open_pts[36] - open_pts[45])
    gap = float(np.linalg.norm(open_pts[[61, 62, 63]] - open_pts[[67, 66, 65]], axis=-1).mean())
    assert open_mouth(open_pts, gap / iod - 1e-3) and not open_mouth(open_pts, gap / iod + 1e-3)


def test_mouth_interior_scores_real_teeth_above_stretched_lips(open_and_closed):
    from reenact.warp import warp_images

    closed, closed_pts, opened, open_pts = open_and_closed
    h, w = opened.shape[:2]
    mask = mouth_interior_mask(open_pts, h, w)
    inner = cv2.fillPoly(np.zeros((h, w), np.uint8), [np.round(open_pts[60:68]).astype(np.int32)], 1) > 0
    assert inner.sum() > 300 and (mask | ~inner).all() and mask.sum() > inner.sum()  # the polygon, grown
    # the real frame scores a perfect interior
    perfect = mouth_interior_metrics(opened, opened, open_pts)
    assert math.isinf(perfect["interior_psnr"][0]) and perfect["interior_l1"][0] == 0
    # a closed mouth is not scored
    assert np.isnan(mouth_interior_metrics(closed, closed, closed_pts)["interior_psnr"][0])
    # "teeth": the open frame after a lossy codec; "stretched lips": the same frame whose interior is the closed
    # frame warped onto the open landmarks (what any warp of a closed mouth gives)
    ok, jpg = cv2.imencode(".jpg", opened, [cv2.IMWRITE_JPEG_QUALITY, 60])
    teeth = cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED)
    stretched = teeth.copy()
    warped = warp_images(closed[None], closed_pts[None], open_pts[None], "pa")[0]
    stretched[mask] = warped[mask]
    m = mouth_interior_metrics(np.stack([teeth, stretched]), np.stack([opened, opened]), np.stack([open_pts] * 2))
    assert m["interior_psnr"][0] > m["interior_psnr"][1] + 3  # dB
    assert m["interior_l1"][0] < 0.5 * m["interior_l1"][1]
    # outside the interior the two are the same pixels, so whole-frame PSNR barely tells them apart
    assert psnr(teeth, opened)[0] - psnr(stretched, opened)[0] < 0.5 * (m["interior_psnr"][0] - m["interior_psnr"][1])


def test_eye_gap_finds_the_blinks(face):
    _, pts = face
    targets = np.stack([pts.copy() for _ in range(8)])
    for i in range(8):  # close the eyes by i/8: the upper lids (37, 38, 43, 44) move towards the lower ones
        for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
            targets[i, up] += (targets[i, lo] - targets[i, up]) * i / 8
    gap = eye_gap(pts, targets)
    assert gap[0] == pytest.approx(0, abs=1e-9) and np.all(np.diff(gap) > 0)
    assert hard_frames(gap).tolist() == [False] * 6 + [True] * 2
    assert eye_gap(np.stack([pts, targets[7]]), targets[7:])[0] == pytest.approx(0, abs=1e-9)  # a source blinks


# ------------------------------------------------------------------------------------------------ sharpness

def test_blur_lowers_cpbd_and_laplacian_sharpness(face):
    img, pts = face
    box = face_box(pts, *img.shape[:2])
    blurred = cv2.GaussianBlur(img, (0, 0), 1.5)
    assert cpbd(blurred, box) < cpbd(img, box)
    assert laplacian_variance(blurred, box) < 0.5 * laplacian_variance(img, box)
    r = lapvar_ratio(np.stack([img, blurred]), np.stack([img, img]), np.stack([pts, pts]))
    assert r[0] == pytest.approx(1.0) and r[1] < 0.5


def test_cpbd_of_a_sharp_step_is_1_and_of_a_blurred_step_0():
    sq = np.zeros((128, 128, 3), np.uint8)
    sq[32:96, 32:96] = 200
    assert cpbd(sq) == pytest.approx(1.0)
    assert cpbd(cv2.GaussianBlur(sq, (0, 0), 2)) == pytest.approx(0.0)
    assert math.isnan(cpbd(np.full((64, 64, 3), 90, np.uint8)))  # flat: no edges, no verdict


# ------------------------------------------------------------------------------------------------ identity

def test_same_person_is_closer_than_another_person(identity_frames, analyzer):
    a, b = (analyzer.analyze(f) for f in identity_frames["same"])
    c = analyzer.analyze(identity_frames["other"])
    assert a is not None and b is not None and c is not None
    assert acd(a.descriptor, b.descriptor) < 0.6 < acd(a.descriptor, c.descriptor)
    assert csim(a.descriptor, b.descriptor) > csim(a.descriptor, c.descriptor)
    assert csim(a.descriptor, b.descriptor) > 0.95


def test_no_face_is_none_not_a_crash(analyzer):
    assert analyzer.analyze(np.full((128, 128, 3), 127, np.uint8)) is None


def test_descriptor_from_known_landmarks_matches_detection(face, analyzer):
    img, pts = face
    d = analyzer.descriptor_at(img, pts)
    assert acd(d, analyzer.analyze(img).descriptor) < 0.1


# ------------------------------------------------------------------------------------------------ landmarks

def test_lmd_of_a_3px_shift(face):
    _, pts = face
    track = np.stack([pts, pts + [1.0, 0.0]])
    shifted = track + np.array([3.0, 0.0])
    got = lmd(shifted, track)
    assert got == pytest.approx(3.0 / inter_ocular(track))
    assert lmd(track, track) == pytest.approx([0.0, 0.0])


def test_ear_drops_when_the_eyes_close(face):
    _, pts = face
    closed = pts.copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        mid = (pts[upper] + pts[lower]) / 2
        closed[upper] = closed[lower] = mid
    assert eye_aspect_ratio(pts) > 0.18
    assert eye_aspect_ratio(closed) == pytest.approx(0.0, abs=1e-6)


def test_blinks_from_an_ear_track():
    fps = 25.0
    ear = np.full(100, 0.30)  # 4 s
    ear[20:23] = 0.10   # a 3-frame blink
    ear[60:65] = 0.12   # a 5-frame blink
    ear[80] = 0.05      # one frame: a landmark glitch, not a blink
    b = detect_blinks(ear, fps)
    assert b.events == [(20, 23), (60, 65)]
    assert b.rate_per_min == pytest.approx(2 / (4 / 60))
    assert b.mean_duration_s == pytest.approx((3 + 5) / 2 / fps)
    rel = detect_blinks(ear * 2, fps, relative=0.75)  # a detector with another EAR scale
    assert rel.events == b.events and rel.threshold == pytest.approx(0.45)
    none = detect_blinks(np.full(50, 0.3), fps)
    assert none.events == [] and math.isnan(none.mean_duration_s) and none.rate_per_min == 0


def test_pose_recovers_known_angles_of_the_model_projected():
    cam = np.array([[256.0, 0, 128], [0, 256, 128], [0, 0, 1]])
    for ypr in [(0, 0, 0), (20, -5, 3), (-30, 10, -8)]:
        cam_pts = euler_to_rotation(*ypr) @ POSE_MODEL_POINTS.T + np.array([[5.0], [-8.0], [600.0]])
        proj = (cam @ cam_pts)
        pts = np.zeros((68, 2))
        pts[POSE_MODEL_INDICES] = (proj[:2] / proj[2]).T
        assert head_pose(pts, (256, 256)) == pytest.approx(ypr, abs=0.5)


def test_pose_of_a_frontal_face_and_its_mirror(face):
    img, pts = face
    h, w = img.shape[:2]
    yaw, pitch, roll = head_pose(pts, (h, w))
    assert abs(yaw) < 10 and abs(roll) < 10  # a talking head facing the camera
    mirrored = np.stack([w - 1 - pts[:, 0], pts[:, 1]], 1)[MIRROR_PERMUTATION]
    my, mp, mr = head_pose(mirrored, (h, w))
    assert my == pytest.approx(-yaw, abs=1.0) and mp == pytest.approx(pitch, abs=1.0)
    assert pose_error(head_pose(pts, (h, w)), head_pose(pts, (h, w))) == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------------ FID, sync

def test_frechet_distance_of_known_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # diagonal covariances
    assert fidm.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-9)
    # a rotated full covariance against itself: only the means count
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    s = q @ np.diag(v1) @ q.T
    assert fidm.frechet_distance(mu1, s, mu2, s) == pytest.approx(((mu1 - mu2) ** 2).sum(), abs=1e-6)
    # sampled features: the estimate converges on the true value
    rng = np.random.default_rng(1)
    f1 = rng.normal(mu1, np.sqrt(v1), (50_000, 3))
    f2 = rng.normal(mu2, np.sqrt(v2), (50_000, 3))
    assert fidm.fid_from_features(f1, f2) == pytest.approx(want, rel=0.03)


def test_inception_loads_local_weights_only(tmp_path):
    from safetensors.torch import save_file

    from reenact.errors import CheckpointError

    torch.manual_seed(0)
    net = fidm.InceptionV3Features()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["fc.weight"] = torch.zeros(1008, 2048)  # the FID network's classifier: picks the FID variant
    save_file(state, str(tmp_path / "inception.safetensors"))
    model = fidm.load_inception(tmp_path / "inception.safetensors")
    assert model.fid_variant
    imgs = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3)).astype(np.uint8)
    feats = fidm.inception_features(model, imgs)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)
    assert np.allclose(feats, ref.numpy(), atol=1e-4)
    with pytest.raises(CheckpointError, match="not found"):
        fidm.load_inception(tmp_path / "missing.pth")
    save_file({"conv.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not Inception-v3"):
        fidm.load_inception(tmp_path / "other.safetensors")


def test_av_sync_is_unavailable_until_an_expert_exists():
    r = av_sync(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(640, np.float32), 25.0)
    assert r["status"] == "unavailable"

    class Expert:
        def offset_confidence(self, frames, audio, fps, sample_rate):
            return 1, 7.5

    assert av_sync(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(640), 25.0, expert=Expert()) == {
        "status": "ok", "offset": 1.0, "confidence": 7.5}
