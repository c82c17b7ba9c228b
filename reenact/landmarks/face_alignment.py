"""face-alignment backend: S3FD (or BlazeFace) face detector + 2D-FAN-4 heatmap landmarks, GPU-capable.

Uses the ``face-alignment`` package (Bulat & Tzimiropoulos 2017, "How far are we from solving the 2D & 3D Face
Alignment problem?"). That package downloads its weights from the internet on first use; this backend never
lets it: the weight files must already be on disk, in the torch hub checkpoint folder
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) or in ``weights_dir``. The file names
are read from the installed package (they carry a version hash), so :func:`required_files` always names the
files the installed version expects. While the model is built, every download function of the package is
replaced by a local-only lookup, so even an unexpected code path cannot reach the network.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import numpy as np

from reenact.errors import ReenactError
from reenact.landmarks.base import FaceLandmarks, LandmarkDetector

PIP_HINT = "pip install face-alignment"
OFFLINE_HINT = "The default 'dlib' landmark backend works offline with no extra files"

# Used only when the installed package does not expose its URL tables under the names read below
# (face-alignment 1.5.0 values).
_FALLBACK_URLS = {
    "2DFAN-4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "blazeface_weights": "https://github.com/hollance/BlazeFace-PyTorch/blob/master/blazeface.pth?raw=true",
    "blazeface_anchors": "https://github.com/hollance/BlazeFace-PyTorch/blob/master/anchors.npy?raw=true",
}
# face detector name -> keys of the URLs it loads, and the module holding its URL table.
_DETECTOR_KEYS = {
    "sfd": ("face_alignment.detection.sfd.sfd_detector", ("s3fd",)),
    "blazeface": ("face_alignment.detection.blazeface.blazeface_detector",
                  ("blazeface_weights", "blazeface_anchors")),
}
_DOWNLOADERS = ("load_file_from_url", "load_state_dict_from_url")


class BackendUnavailable(ReenactError, RuntimeError):
    """An optional landmark backend cannot run here: its package or its weight files are missing."""


def _import_face_alignment():
    try:
        return importlib.import_module("face_alignment")
    except ImportError as e:
        missing = getattr(e, "name", None)
        what = ("the face-alignment package is not installed" if missing in (None, "face_alignment")
                else f"the face-alignment package cannot be imported ({e})")
        raise BackendUnavailable(f"landmark backend 'face_alignment': {what}; install it with `{PIP_HINT}` "
                                 f"(then put its weight files in place, see required_files()). "
                                 f"{OFFLINE_HINT}") from e


def _lookup_url(tables: list[dict], key: str) -> str:
    """The URL for ``key`` in the package's tables, else the known default.

    Tables are tried in order, plain entries first (a few releases keyed extra tables by torch version and
    fell back to a plain default table for newer torch).
    """
    dicts = [t for t in tables if isinstance(t, dict)]
    for table in dicts:
        if isinstance(table.get(key), str):
            return table[key]
    for table in dicts:
        for nested in table.values():
            if isinstance(nested, dict) and isinstance(nested.get(key), str):
                return nested[key]
    return _FALLBACK_URLS[key]


def _url_filename(url: str) -> str:
    # Same rule as torch.hub / face_alignment: basename of the URL path (query string dropped).
    return os.path.basename(urlparse(url).path)


def required_files(face_detector: str = "sfd") -> dict[str, str]:
    """Weight files the installed face-alignment needs for 2D landmarks: ``{file name: download URL}``.

    Raises BackendUnavailable if the package is not installed, ValueError for an unknown detector.
    """
    if face_detector not in _DETECTOR_KEYS:
        raise ValueError(f"face_detector must be one of {', '.join(_DETECTOR_KEYS)}, got {face_detector!r}")
    fa = _import_face_alignment()
    api = importlib.import_module("face_alignment.api")
    urls = [_lookup_url([getattr(api, "models_urls", None), getattr(api, "default_model_urls", None)],
                        "2DFAN-4")]
    module_name, keys = _DETECTOR_KEYS[face_detector]
    try:
        det_module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(f"face-alignment {getattr(fa, '__version__', '?')} has no usable "
                                 f"{face_detector!r} detector ({e})") from e
    urls += [_lookup_url([getattr(det_module, "models_urls", None)], k) for k in keys]
    return {_url_filename(u): u for u in urls}


def default_weights_dir() -> Path:
    """Where face-alignment itself caches weights: ``torch.hub.get_dir()/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


class FaceAlignmentDetector(LandmarkDetector):
    """68 landmarks from face-alignment's 2D-FAN-4 after its face detector.

    device: ``"auto"`` (CUDA when available), ``"cuda"``, ``"cuda:N"`` or ``"cpu"``.
    weights_dir: folder holding the weight files (see :func:`required_files`); default the torch hub
    checkpoint folder. face_detector: ``"sfd"`` (S3FD, accurate) or ``"blazeface"`` (fast, frontal).
    flip_input: also run FAN on the mirrored crop and average (slightly more accurate, twice the cost).
    Scores are the detector's confidence in ``[0, 1]``.

    Raises BackendUnavailable, naming the missing files and where to put them, when the package or a
    weight file is missing; nothing is ever downloaded.
    """

    name = "face_alignment"

    def __init__(self, device: str = "auto", weights_dir: str | os.PathLike | None = None,
                 face_detector: str = "sfd", flip_input: bool = False):
        files = required_files(face_detector)           # imports the package (or raises BackendUnavailable)
        folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        missing = [name for name in files if not (folder / name).is_file()]
        if missing:
            listing = "; ".join(f"{name} (from {files[name]})" for name in missing)
            raise BackendUnavailable(
                f"landmark backend 'face_alignment': weight file(s) missing in {folder}: {listing}. "
                f"Download them on a machine with internet access and copy them into {folder} "
                f"(or pass weights_dir=... / set TORCH_HOME); this backend never downloads. {OFFLINE_HINT}")
        import face_alignment

        from reenact.device import resolve_device

        device = str(resolve_device(device))  # face_alignment takes a string
        self.device = device
        kwargs = dict(device=device, flip_input=flip_input, face_detector=face_detector)
        if "compile" in _parameters(face_alignment.FaceAlignment.__init__):
            # torch.compile costs minutes on first use and writes a cache under ~/.cache.
            kwargs["compile"] = False
        importlib.import_module(_DETECTOR_KEYS[face_detector][0])   # so its downloader gets patched too
        with _local_only(folder, files):
            self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        return self._run(_check_image(image), None)

    def refine(self, image: np.ndarray, box: np.ndarray) -> FaceLandmarks:
        """FAN on a given face box ``(x0, y0, x1, y1)`` without running the detector. FAN's crop is scaled
        for S3FD-style boxes (forehead to chin), e.g. a previous ``FaceLandmarks.box`` of this backend."""
        box = np.asarray(box, np.float32).reshape(4)
        faces = self._run(_check_image(image), [np.concatenate([box, [1.0]])])
        return faces[0]

    def _run(self, image: np.ndarray, boxes: list[np.ndarray] | None) -> list[FaceLandmarks]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No faces were detected")
            points, _, detected = self._fa.get_landmarks_from_image(
                image, detected_faces=boxes, return_bboxes=True, return_landmark_score=True)
        if points is None:
            return []
        faces = []
        for pts, det in zip(points, detected):
            det = np.asarray(det, np.float32).reshape(-1)
            score = float(det[4]) if det.size > 4 else 1.0
            faces.append(FaceLandmarks(np.asarray(pts, np.float32)[:, :2], det[:4], score))
        return faces


@contextmanager
def _local_only(folder: Path, files: dict[str, str]) -> Iterator[None]:
    """Replace face_alignment's download helpers with lookups in ``folder`` for the duration."""

    def local_path(url: str, file_name: str | None = None) -> str:
        name = file_name or _url_filename(url)
        path = folder / name
        if not path.is_file():
            raise BackendUnavailable(f"landmark backend 'face_alignment' asked for {url}; put {name} in "
                                     f"{folder} (this backend never downloads). {OFFLINE_HINT}")
        return str(path)

    def load_file_from_url(url, model_dir=None, progress=True, check_hash=False, file_name=None, **_):
        return local_path(url, file_name)

    def load_state_dict_from_url(url, model_dir=None, map_location=None, progress=True, check_hash=False,
                                 file_name=None, weights_only=True, **_):
        import torch

        return torch.load(local_path(url, file_name), map_location=map_location, weights_only=True)

    replacements: dict[str, Callable] = {"load_file_from_url": load_file_from_url,
                                         "load_state_dict_from_url": load_state_dict_from_url}
    saved = []
    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == "face_alignment" or mod_name.startswith("face_alignment.")):
            continue
        for attr in _DOWNLOADERS:
            if attr in vars(module):
                saved.append((module, attr, vars(module)[attr]))
                setattr(module, attr, replacements[attr])
    try:
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


def _parameters(fn) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    return np.ascontiguousarray(image)


__all__ = ["BackendUnavailable", "FaceAlignmentDetector", "default_weights_dir", "required_files"]
