"""Optional landmark backends: clear errors when unavailable, never a download, correct output mapping."""
from __future__ import annotations

import importlib.util
import socket
import sys
import time
import types

import numpy as np
import pytest
import torch

from reenact.errors import ReenactError
from reenact.landmarks.face_alignment import BackendUnavailable, FaceAlignmentDetector, required_files
from reenact.landmarks.mediapipe import IBUG68_FROM_MESH, MediaPipeDetector, mesh_to_ibug68
from reenact.landmarks.parts import MIRROR_PERMUTATION

FAN_URL = "https://example.invalid/python-fan/2DFAN4-0123456789.pth.tar"
S3FD_URL = "https://example.invalid/python-fan/s3fd-0123456789.pth"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


class _Recorder:
    built: list[dict] = []


def _fake_face_alignment(monkeypatch, extra_url: str | None = None) -> types.SimpleNamespace:
    """A stand-in for the face-alignment package with the same module layout and download helpers.

    Its original download helpers fail the test if called; its FaceAlignment loads weights through them,
    like the real package.
    """
    def download(*args, **kwargs):
        raise AssertionError("face_alignment tried to download")

    pkg = types.ModuleType("face_alignment")
    pkg.__path__ = []
    pkg.__version__ = "0.0-test"
    api = types.ModuleType("face_alignment.api")
    api.models_urls = {"2DFAN-4": FAN_URL, "3DFAN-4": "https://example.invalid/3DFAN4-x.pth.tar"}
    api.load_file_from_url = download
    detection = types.ModuleType("face_alignment.detection")
    detection.__path__ = []
    sfd = types.ModuleType("face_alignment.detection.sfd")
    sfd.__path__ = []
    sfd_detector = types.ModuleType("face_alignment.detection.sfd.sfd_detector")
    sfd_detector.models_urls = {"s3fd": S3FD_URL}
    sfd_detector.load_state_dict_from_url = download
    built: list[dict] = []

    class LandmarksType:
        TWO_D = 1

    class FaceAlignment:
        def __init__(self, landmarks_type, device="cuda", flip_input=True, face_detector="sfd",
                     face_detector_kwargs=None, verbose=False, compile=True):
            # resolved at call time through the module attributes, as in the real package
            self.fan_path = api.load_file_from_url(FAN_URL)
            self.detector_state = sfd_detector.load_state_dict_from_url(S3FD_URL)
            if extra_url:
                api.load_file_from_url(extra_url)
            built.append(dict(landmarks_type=landmarks_type, device=device, flip_input=flip_input,
                              face_detector=face_detector, compile=compile))

        def get_landmarks_from_image(self, image, detected_faces=None, return_bboxes=False,
                                     return_landmark_score=False):
            if detected_faces is None:
                detected_faces = [np.array([10, 20, 110, 140, 0.99], np.float32),
                                  np.array([150, 30, 220, 120, 0.75], np.float32)]
            points = [np.tile(np.asarray(d[:2], np.float32), (68, 1)) + np.arange(68, dtype=np.float32)[:, None]
                      for d in detected_faces]
            return points, [np.ones(68, np.float32)] * len(points), detected_faces

    pkg.FaceAlignment, pkg.LandmarksType, pkg.api, pkg.detection = FaceAlignment, LandmarksType, api, detection
    detection.sfd, sfd.sfd_detector = sfd, sfd_detector
    for name, module in [("face_alignment", pkg), ("face_alignment.api", api),
                         ("face_alignment.detection", detection), ("face_alignment.detection.sfd", sfd),
                         ("face_alignment.detection.sfd.sfd_detector", sfd_detector)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(built=built, api=api, sfd_detector=sfd_detector, download=download)


def _write_weights(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "2DFAN4-0123456789.pth.tar").write_bytes(b"not read by the fake")
    torch.save({"conv.weight": torch.zeros(2)}, folder / "s3fd-0123456789.pth")


# ---------------------------------------------------------------- face-alignment


def test_face_alignment_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # import fails as if not installed
    from reenact.landmarks import create_detector

    with pytest.raises(BackendUnavailable) as err:
        create_detector("face_alignment")
    msg = str(err.value)
    assert "pip install face-alignment" in msg and "'dlib'" in msg
    assert isinstance(err.value, ReenactError) and isinstance(err.value, RuntimeError)


def test_face_alignment_missing_weights_fails_fast_without_download(monkeypatch, empty_torch_home, no_network):
    fake = _fake_face_alignment(monkeypatch)
    assert list(required_files()) == ["2DFAN4-0123456789.pth.tar", "s3fd-0123456789.pth"]
    start = time.perf_counter()
    with pytest.raises(BackendUnavailable) as err:
        FaceAlignmentDetector(device="cpu")
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    assert str(checkpoints) in msg
    assert "2DFAN4-0123456789.pth.tar" in msg and "s3fd-0123456789.pth" in msg and FAN_URL in msg
    assert "never downloads" in msg and "'dlib'" in msg
    assert fake.built == []                       # the package's model was never constructed
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_face_alignment_partial_weights_names_only_the_missing_file(monkeypatch, tmp_path, no_network):
    _fake_face_alignment(monkeypatch)
    _write_weights(tmp_path / "w")
    (tmp_path / "w" / "s3fd-0123456789.pth").unlink()
    with pytest.raises(BackendUnavailable) as err:
        FaceAlignmentDetector(device="cpu", weights_dir=tmp_path / "w")
    assert "s3fd-0123456789.pth" in str(err.value) and "2DFAN4" not in str(err.value)


def test_face_alignment_with_local_weights(monkeypatch, tmp_path, empty_torch_home, no_network):
    fake = _fake_face_alignment(monkeypatch)
    _write_weights(tmp_path / "w")
    det = FaceAlignmentDetector(device="auto", weights_dir=tmp_path / "w")
    assert det.device == ("cuda" if torch.cuda.is_available() else "cpu")
    (kwargs,) = fake.built
    assert kwargs["compile"] is False and kwargs["flip_input"] is False and kwargs["face_detector"] == "sfd"
    # weights were read from weights_dir through the local-only loaders ...
    assert det._fa.fan_path == str(tmp_path / "w" / "2DFAN4-0123456789.pth.tar")
    torch.testing.assert_close(det._fa.detector_state["conv.weight"], torch.zeros(2))
    # ... which are removed again afterwards
    assert fake.api.load_file_from_url is fake.download
    assert fake.sfd_detector.load_state_dict_from_url is fake.download

    image = np.zeros((240, 320, 3), np.uint8)
    faces = det.detect(image)
    assert len(faces) == 2
    assert faces[0].points.shape == (68, 2) and faces[0].points.dtype == np.float32
    np.testing.assert_allclose(faces[0].points[5], [15, 25])
    np.testing.assert_allclose(faces[0].box, [10, 20, 110, 140])
    assert faces[0].score == pytest.approx(0.99) and faces[1].score == pytest.approx(0.75)
    assert det.detect_one(image, multiple="largest").score == pytest.approx(0.99)
    refined = det.refine(image, np.array([30, 40, 90, 100]))
    np.testing.assert_allclose(refined.box, [30, 40, 90, 100])
    np.testing.assert_allclose(refined.points[0], [30, 40])
    with pytest.raises(ValueError):
        det.detect(np.zeros((240, 320), np.uint8))


def test_face_alignment_unexpected_download_is_refused(monkeypatch, tmp_path, no_network):
    fake = _fake_face_alignment(monkeypatch, extra_url="https://example.invalid/other-model.pth")
    _write_weights(tmp_path / "w")
    with pytest.raises(BackendUnavailable, match="other-model.pth"):
        FaceAlignmentDetector(device="cpu", weights_dir=tmp_path / "w")
    assert fake.api.load_file_from_url is fake.download


@pytest.mark.skipif(importlib.util.find_spec("face_alignment") is None, reason="face-alignment not installed")
def test_real_face_alignment_package_without_weights(empty_torch_home, no_network):
    names = required_files()
    assert any(n.startswith("2DFAN4") for n in names) and any(n.startswith("s3fd") for n in names)
    with pytest.raises(BackendUnavailable, match="2DFAN4"):
        FaceAlignmentDetector(device="cpu")


# ---------------------------------------------------------------- mediapipe

# Facts about the FaceMesh topology for the vertices the table uses: mirror pairs as (subject's right, left)
# and vertices on the face's midline.
MESH_MIRROR_PAIRS = {
    33: 263, 37: 267, 39: 269, 58: 288, 61: 291, 63: 293, 66: 296, 70: 300, 78: 308, 82: 312, 84: 314,
    87: 317, 91: 321, 93: 323, 97: 326, 98: 327, 105: 334, 107: 336, 127: 356, 132: 361, 133: 362, 144: 373,
    150: 379, 153: 380, 158: 385, 160: 387, 162: 389, 172: 397, 176: 400, 234: 454,
}
MESH_MIDLINE = {0, 1, 2, 4, 5, 6, 8, 9, 10, 13, 14, 17, 152, 164, 168, 175, 195, 197, 199, 200}
# iBUG points on the subject's right (image left in a frontal face); their mirrors are on the left.
IBUG_RIGHT = set(range(0, 8)) | set(range(17, 22)) | {31, 32} | set(range(36, 42)) | {48, 49, 50, 58, 59} \
    | {60, 61, 67}


def _vertices(entry) -> tuple[int, ...]:
    return entry if isinstance(entry, tuple) else (entry,)


def test_mediapipe_unavailable_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    from reenact.landmarks import create_detector

    with pytest.raises(BackendUnavailable) as err:
        create_detector("mediapipe")
    msg = str(err.value)
    assert 'pip install "mediapipe==0.10.21"' in msg and "numpy<2" in msg and "'dlib'" in msg


def test_mesh_table_shape_and_indices():
    assert len(IBUG68_FROM_MESH) == 68
    for entry in IBUG68_FROM_MESH:
        assert isinstance(entry, int) or (isinstance(entry, tuple) and len(entry) == 2)
        assert all(isinstance(v, int) and 0 <= v < 468 for v in _vertices(entry))  # mesh vertices, not iris
    singles = [e for e in IBUG68_FROM_MESH if isinstance(e, int)]
    assert len(set(singles)) == len(singles)


def test_mesh_table_sides_and_mirror_symmetry():
    mirror = {**MESH_MIRROR_PAIRS, **{l: r for r, l in MESH_MIRROR_PAIRS.items()}, **{m: m for m in MESH_MIDLINE}}
    side = {**{r: -1 for r in MESH_MIRROR_PAIRS}, **{l: 1 for l in MESH_MIRROR_PAIRS.values()},
            **{m: 0 for m in MESH_MIDLINE}}
    ibug_left = {int(MIRROR_PERMUTATION[i]) for i in IBUG_RIGHT}
    for i, entry in enumerate(IBUG68_FROM_MESH):
        expected = -1 if i in IBUG_RIGHT else 1 if i in ibug_left else 0
        assert {side[v] for v in _vertices(entry)} == {expected}, f"iBUG {i} -> {entry} on the wrong side"
        mirrored = tuple(mirror[v] for v in _vertices(entry))
        assert set(mirrored) == set(_vertices(IBUG68_FROM_MESH[MIRROR_PERMUTATION[i]])), f"iBUG {i}"


def test_mesh_to_ibug68_on_synthetic_mesh():
    rng = np.random.default_rng(0)
    mesh = rng.normal(size=(478, 3)).astype(np.float32)
    # lay out a frontal face: x from the side of each vertex, y increasing down the midline order
    for r, l in MESH_MIRROR_PAIRS.items():
        mesh[r, 0], mesh[l, 0] = -1 - rng.random(), 1 + rng.random()
    for m in MESH_MIDLINE:
        mesh[m, 0] = 0
    out = mesh_to_ibug68(mesh)
    assert out.shape == (68, 3) and out.dtype == np.float32
    for i, entry in enumerate(IBUG68_FROM_MESH):
        np.testing.assert_allclose(out[i], mesh[list(_vertices(entry))].mean(0), rtol=1e-6)
    assert (out[36:42, 0] < 0).all() and (out[42:48, 0] > 0).all()      # right eye left of the left eye
    assert (out[0:8, 0] < 0).all() and (out[9:17, 0] > 0).all() and out[8, 0] == 0
    batch = np.stack([mesh, mesh * 2])[None].repeat(3, 0)                # (3, 2, 478, 3)
    got = mesh_to_ibug68(batch[..., :2])
    assert got.shape == (3, 2, 68, 2)
    np.testing.assert_allclose(got[1, 1], 2 * out[:, :2], rtol=1e-6)
    assert mesh_to_ibug68(mesh[:468]).shape == (68, 3)
    with pytest.raises(ValueError):
        mesh_to_ibug68(mesh[:100])


def test_mediapipe_on_a_real_portrait(portrait):
    pytest.importorskip("mediapipe.python.solutions.face_mesh")
    import cv2

    rgb = np.ascontiguousarray(cv2.imread(str(portrait))[:, :, ::-1])
    det = MediaPipeDetector(max_faces=2)
    try:
        face = det.detect_one(rgb)
    finally:
        det.close()
    h, w = rgb.shape[:2]
    assert ((face.points >= 0) & (face.points < [w, h])).all()
    assert face.points[36:42, 0].mean() < face.points[27:31, 0].mean() < face.points[42:48, 0].mean()
    assert face.points[27, 1] < face.points[30, 1] < face.points[51, 1] < face.points[57, 1] < face.points[8, 1]
