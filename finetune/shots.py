"""The K source images of a new person -> face crops at the model's resolution, with their landmarks.

Same crop convention as the training data (``reenact prepare``): ``box_from_points`` + ``crop_matrix`` with
``CropParams`` (side = 1.8 x the landmarks' extent, centre raised by 8 % of the side). Landmarks come from a
detector, or from an override per image (a ``(68, 2)`` array or ``.npy`` file in the image's pixel
coordinates) for faces a detector misses: paintings, drawings, strong profiles.
"""
from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass
from typing import Callable, Sequence, Union

import numpy as np

from reenact.avatar import Source
from reenact.crop import CropParams, box_from_points, crop_image, crop_matrix, transform_points
from reenact.errors import InputError, NoFaceError

ImageLike = Union[str, os.PathLike, np.ndarray]
LandmarksLike = Union[str, os.PathLike, np.ndarray, None]

NO_FACE_HINT = ("pass its landmarks instead: a (68, 2) .npy file of iBUG points in the image's pixel "
                "coordinates (landmarks=[...] in Python, --landmarks on the command line); useful for "
                "paintings and drawings")


@dataclass(frozen=True)
class Shot(Source):
    """One source image, cropped for the model: a :class:`reenact.avatar.Source` (name, size, points,
    crop_points, matrix, landmarks_from: what an avatar file keeps of it, ``Source.of(shot)``) with its pixels.

    crop: ``(R, R, 3)`` uint8 RGB (keyword only). image: the full RGB uint8 image (the photo renderer warps it
    at its own resolution).
    """

    _: KW_ONLY
    crop: np.ndarray
    image: np.ndarray | None = None


def _as_list(x, single_ndim: tuple[int, ...], what: str) -> list:
    """One item (a path, or an array of ``single_ndim`` dims) -> [item]; a sequence or stacked array -> list."""
    if x is None:
        raise InputError(f"<{what}>", f"no {what} given (None)")
    if isinstance(x, (str, os.PathLike)) or (isinstance(x, np.ndarray) and x.ndim in single_ndim):
        return [x]
    try:
        return list(x)
    except TypeError:
        raise InputError(f"<{what}>", f"expected a path, an array or a list of them, got {type(x).__name__}") from None


def read_source_image(image: ImageLike, index: int) -> tuple[np.ndarray, str]:
    """An RGB uint8 image and its display name from a path or an array (gray, RGB or RGBA, converted as the same
    picture in a file would be: ``reenact.io.as_rgb``)."""
    if isinstance(image, (str, os.PathLike)):
        from reenact import io

        return io.read_image(image), str(image)
    from reenact import io

    if image is None:
        raise InputError(f"<image {index}>", "no image given (None)")
    name = f"<image {index}>"
    return io.as_rgb(image, name), name


def read_landmarks(lmk: str | os.PathLike | np.ndarray, image_name: str, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A ``(68, 2)`` float32 landmark override (array or ``.npy`` file) and where it came from.

    Raises InputError naming the file when it cannot be read, has the wrong shape, or is not finite.
    """
    if isinstance(lmk, (str, os.PathLike)):
        from reenact import io

        src = origin = str(lmk)
        pts = io.load_array(lmk, "landmarks")
        if isinstance(pts, np.lib.npyio.NpzFile):
            pts.close()
            raise InputError(src, "expected a .npy file of shape (68, 2), got an .npz archive")
    else:
        src, origin = f"landmarks of {image_name}", "array"
        pts = np.asarray(lmk)
    if pts.shape != (68, 2) or not np.issubdtype(pts.dtype, np.number):
        raise InputError(src, f"landmarks must be a (68, 2) array of (x, y) pixels in iBUG order, "
                              f"got {pts.dtype} {tuple(pts.shape)}")
    pts = pts.astype(np.float32)
    if not np.isfinite(pts).all():
        raise InputError(src, "landmarks contain NaN or infinite values")
    extent = float((pts.max(0) - pts.min(0)).max())
    if extent < 4:
        raise InputError(src, f"landmarks span only {extent:.1f} pixels: not a face")
    h, w = size
    centre = pts.mean(0)
    if not (-0.5 * w <= centre[0] <= 1.5 * w and -0.5 * h <= centre[1] <= 1.5 * h):
        raise InputError(src, f"landmarks centred at ({centre[0]:.0f}, {centre[1]:.0f}) are far outside "
                              f"the {w}x{h} image {image_name} (wrong image, or not pixel coordinates?)")
    return pts, origin


def load_shots(images: ImageLike | Sequence[ImageLike], resolution: int,
               landmarks: LandmarksLike | Sequence[LandmarksLike] = None, multiple: str = "error",
               detector: Callable[[], object] | object | None = None, cropped: bool = False) -> list[Shot]:
    """Read, locate and crop the source images.

    images: one or more paths or uint8 arrays (RGB ``(H, W, 3)``, gray ``(H, W)``, RGBA ``(H, W, 4)``). landmarks: ``None`` (detect every face) or
    one entry per image, each ``None`` (detect) or a ``(68, 2)`` array / ``.npy`` path. multiple: ``"error"``
    (several faces raise MultipleFacesError) or ``"largest"``. detector: a LandmarkDetector, or a
    zero-argument factory called only if some image needs detection. cropped: the images are already crops of
    the model's size made by the training crop rule (e.g. frames of ``reenact prepare``): used as they are. A
    second crop would resample them (a near-identity map that kept 0.63 of the face's Laplacian variance on the
    held-out prepared crops). Returns one :class:`Shot` per image.
    """
    if multiple not in ("error", "largest"):
        raise ValueError(f"multiple must be 'error' or 'largest', got {multiple!r}")
    imgs = _as_list(images, (2, 3), "images")  # (H, W) gray or (H, W, C): one image
    if not imgs:
        raise InputError("<images>", "no source images given")
    lmks = _as_list(landmarks, (2,), "landmarks") if landmarks is not None else [None] * len(imgs)
    if len(lmks) != len(imgs):
        raise InputError("<landmarks>", f"{len(lmks)} landmark entries for {len(imgs)} images",
                         "give one per image, None (or '-' on the command line) to detect that one")
    params = CropParams(size=resolution)
    det = None
    shots = []
    for i, (img_in, lmk) in enumerate(zip(imgs, lmks)):
        img, name = read_source_image(img_in, i)
        size = (int(img.shape[0]), int(img.shape[1]))
        if lmk is not None and not (isinstance(lmk, str) and lmk == "-"):
            pts, origin = read_landmarks(lmk, name, size)
        else:
            if det is None:
                det = detector() if callable(detector) and not hasattr(detector, "detect_one") else detector
                if det is None:
                    from reenact.landmarks import create_detector

                    det = create_detector("dlib")
            try:
                face = det.detect_one(img, multiple=multiple, source=name)
            except NoFaceError as exc:
                raise NoFaceError(name, exc.problem, NO_FACE_HINT) from None
            pts, origin = face.points, getattr(det, "name", "detector")
        if cropped:
            if size != (resolution, resolution):
                raise InputError(name, f"is {size[1]}x{size[0]}, but cropped=True needs {resolution}x{resolution} "
                                       "crops", "pass the full photo without cropped=True")
            m = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
            shots.append(Shot(name=name, size=size, points=pts, matrix=m, crop=np.ascontiguousarray(img),
                              crop_points=np.asarray(pts, np.float32), landmarks_from=origin, image=img))
            continue
        m = crop_matrix(box_from_points(pts, params), resolution)
        shots.append(Shot(name=name, size=size, points=pts, matrix=m, crop=crop_image(img, m, resolution),
                          crop_points=transform_points(pts, m), landmarks_from=origin, image=img))
    return shots
