"""The photo renderer: warp the photo at its own resolution, synthesise the mouth with a region generator.

For each target (68 landmarks in the photo's pixels):

1. the whole photo is warped to the target landmarks (:class:`reenact.photowarp.PhotoWarp`: one bicubic
   resampling of the photo, identity far from the face, so what a warp gets right keeps the photo's pixels);
2. the target's mouth crop (:func:`reenact.regions.region_matrix`, e.g. 128 px) is read from the photo through
   the same warp, its landmark image drawn, and the region generator G paints RGB + a mask (AdaIN parameters
   ``psi`` from the embedder's embedding of the photo's own mouth crops);
3. G's paint goes back into the warped photo through the crop's inverse similarity, blended with
   ``mask x support x window``: ``support`` is the target's outer-lip polygon grown by :data:`SUPPORT_GROW` of
   the crop and feathered, ``window`` fades to 0 at the crop's edge. So G changes only the mouth; skin, eyes
   and hair come from the full-resolution warp.

The output is the photo's size. :meth:`PhotoRenderer.render` has two backends: ``"numpy"`` runs the warp and
the drawing on the CPU (OpenCV, per frame) and G in batches on the model's device; ``"torch"`` runs the whole
path batched on the model's device (:mod:`reenact.photowarp_torch`: a fixed triangulation per photo, brute-force
point location, ``grid_sample``, rasterised drawings), so on a GPU nothing but the landmarks crosses the bus
(``as_tensor=True`` keeps the frames there too). ``"auto"`` (default): torch on CUDA, numpy elsewhere (on a
2-core CPU the OpenCV path is the faster one).
"""
from __future__ import annotations

import contextlib

import cv2
import numpy as np
import torch

from reenact.crop import border_mask
from reenact.geometry import invert, transform
from reenact.photowarp import PhotoWarp
from reenact.regions import RegionSpec, crop_region, draw_region, region_matrix

#: The blend's support: the outer-lip polygon dilated by this fraction of the crop side, then feathered.
SUPPORT_GROW = 0.06
SUPPORT_FEATHER = 0.03
#: The blend fades to 0 over this fraction of the crop side at its edges.
WINDOW_FEATHER = 0.08


def support(points: np.ndarray, spec: RegionSpec, size: int) -> np.ndarray:
    """``(S, S)`` float32 in [0, 1]: where G may paint, from the target's points in crop pixels."""
    m = np.zeros((size, size), np.float32)
    cv2.fillPoly(m, [np.round(points[list(spec.outer)] * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    k = max(1, int(round(SUPPORT_GROW * size)))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    return cv2.GaussianBlur(m, (0, 0), max(0.5, SUPPORT_FEATHER * size))


def region_inputs(photo: np.ndarray, points: np.ndarray, spec: RegionSpec, size: int):
    """The photo's own region crop and its landmark image: ``(S, S, 3)`` uint8, ``(3, S, S)`` float32."""
    m = region_matrix(points, spec, size)
    return crop_region(photo, m, size), draw_region(transform(np.asarray(points, np.float32), m), spec, size)


def to_net(images: np.ndarray, device) -> torch.Tensor:
    """uint8 ``(..., S, S, 3)`` -> float ``(..., 3, S, S)`` in [-1, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).movedim(-1, -3).float().div(127.5).sub(1)


@torch.no_grad()
def embed(E: torch.nn.Module, photos: list[np.ndarray], points: list[np.ndarray], spec: RegionSpec, size: int,
          device) -> torch.Tensor:
    """``(1, D)``: the embedder's mean embedding of the photos' region crops."""
    crops, draws = zip(*(region_inputs(p, q, spec, size) for p, q in zip(photos, points)))
    return E(to_net(np.stack(crops), device)[None], torch.from_numpy(np.stack(draws)).to(device)[None])


class PhotoRenderer:
    """One photo and its region generator. ``photo`` RGB uint8 ``(H, W, 3)``, ``points`` ``(68, 2)`` its
    landmarks, ``G`` a :class:`reenact.models.region.RegionGenerator` on its device, ``psi`` ``(1, n)``."""

    def __init__(self, photo: np.ndarray, points: np.ndarray, G: torch.nn.Module, psi: torch.Tensor,
                 spec: RegionSpec, size: int, backend: str = "auto"):
        self.photo = np.ascontiguousarray(photo)
        self.points = np.asarray(points, np.float32)
        self.warp = PhotoWarp(self.points)
        self.G, self.psi, self.spec, self.size = G, psi, spec, int(size)
        self._window = border_mask(self.size, WINDOW_FEATHER)
        self.backend = backend
        #: torch backend: dtype of an autocast around G (e.g. torch.bfloat16 on CUDA), None = G's own
        self.autocast_dtype: torch.dtype | None = None
        #: torch backend: how the paint goes back ("auto": bicubic when the crop is enlarged, as numpy)
        self.paste_interp = "auto"
        #: torch backend: the warp's triangulation, "photo" (fixed, all on the device) or "target" (each target's
        #: Delaunay on the host, as numpy; see reenact.photowarp_torch.TorchPhotoWarp)
        self.topology = "photo"
        self._torch = None

    @property
    def device(self) -> torch.device:
        return self.psi.device

    def resolve_backend(self, backend: str | None = None) -> str:
        b = backend or self.backend
        if b == "auto":
            return "torch" if self.device.type == "cuda" else "numpy"
        if b not in ("torch", "numpy"):
            raise ValueError(f"unknown backend {b!r} (known: auto, torch, numpy)")
        return b

    def render(self, targets, batch_size: int = 16, backend: str | None = None, as_tensor: bool = False):
        """``targets`` ``(N, 68, 2)`` photo pixels (numpy, or a tensor for the torch backend) -> ``(N, H, W, 3)``
        uint8 frames of the photo's size: numpy, or with ``as_tensor`` (torch backend) a tensor on the model's
        device without the copy to the host."""
        if self.resolve_backend(backend) == "torch":
            return self.render_torch(targets, batch_size, as_tensor=as_tensor)
        if as_tensor:
            raise ValueError("as_tensor needs the torch backend")
        targets = np.asarray(targets, np.float32)
        out = np.empty((len(targets),) + self.photo.shape, np.uint8)
        for i in range(0, len(targets), batch_size):
            out[i:i + batch_size] = self._render_chunk(targets[i:i + batch_size])
        return out

    # -- torch backend

    @property
    def torch_warp(self):
        """The :class:`reenact.photowarp_torch.TorchPhotoWarp` of the photo on the model's device (made once)."""
        if self._torch is None or self._torch.device != self.device or self._torch.topology != self.topology:
            from reenact.photowarp_torch import TorchPhotoWarp, window_t

            self._torch = TorchPhotoWarp(self.photo, self.points, self.device, topology=self.topology)
            self._torch_window = window_t(self.size, WINDOW_FEATHER, self.device)
        return self._torch

    def render_torch(self, targets, batch_size: int = 16, as_tensor: bool = False):
        """The torch backend of :meth:`render`: each chunk of ``batch_size`` targets in one batched pass."""
        t = torch.as_tensor(np.asarray(targets, np.float32) if not isinstance(targets, torch.Tensor) else targets)
        t = t.to(self.device, torch.float32)
        chunks = [self.render_torch_chunk(t[i:i + batch_size]) for i in range(0, len(t), batch_size)]
        out = torch.cat(chunks) if chunks else torch.empty((0,) + self.photo.shape, dtype=torch.uint8,
                                                              device=self.device)
        return out if as_tensor else out.cpu().numpy()

    @torch.inference_mode()
    def render_torch_chunk(self, targets: torch.Tensor) -> torch.Tensor:
        """``(B, 68, 2)`` float32 targets on the device -> ``(B, H, W, 3)`` uint8 frames on the device."""
        from reenact.photowarp_torch import draw_region_t, paste_t, region_matrix_t, support_t, transform_t

        S, spec = self.size, self.spec
        tw = self.torch_warp
        m = region_matrix_t(targets.double(), spec, S).float()  # float32, as numpy's region_matrix
        pts = transform_t(targets, m)
        frames, crops = tw.warp_and_region(targets, m.double(), S)
        draws = draw_region_t(pts, spec, S)
        sup = support_t(pts, spec, S, SUPPORT_GROW, SUPPORT_FEATHER)
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
               else contextlib.nullcontext())
        with ctx:
            res = self.G(crops.div(127.5).sub(1), draws, self.psi)
        rgb = ((res.rgb.float().clamp(-1, 1) + 1) * 127.5).round()
        alpha = res.mask.float()[:, 0] * sup * self._torch_window
        out = paste_t(frames, rgb, alpha, m.double(), self.paste_interp)
        return out.to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    # -- numpy backend

    def _render_chunk(self, targets: np.ndarray) -> np.ndarray:
        S, spec = self.size, self.spec
        frames, crops, draws, mats, sup = [], [], [], [], []
        for t in targets:
            m = region_matrix(t, spec, S)
            pts = transform(t, m)
            frames.append(self.warp.warp(self.photo, t))
            crops.append(self.warp.warp_region(self.photo, t, m, S))
            draws.append(draw_region(pts, spec, S))
            mats.append(m)
            sup.append(support(pts, spec, S))
        with torch.inference_mode():
            res = self.G(to_net(np.stack(crops), self.device), torch.from_numpy(np.stack(draws)).to(self.device),
                         self.psi)
            rgb = ((res.rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            mask = res.mask.float()[:, 0].cpu().numpy()
        return np.stack([self._paste(f, c, a * s * self._window, m)
                         for f, c, a, s, m in zip(frames, rgb, mask, sup, mats)])

    def _paste(self, frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Blend a crop's paint into ``frame`` (in place) over the crop's footprint only."""
        H, W = frame.shape[:2]
        inv = invert(np.asarray(m, np.float64))
        S = self.size
        corners = transform(np.array([[0, 0], [S - 1, 0], [0, S - 1], [S - 1, S - 1]], np.float64), inv)
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [W, H])
        if x1 <= x0 or y1 <= y0:
            return frame
        shift = inv.copy()
        shift[:, 2] -= [x0, y0]  # crop pixels -> footprint pixels
        size = (int(x1 - x0), int(y1 - y0))
        flags = cv2.INTER_CUBIC if abs(inv[0, 0]) + abs(inv[0, 1]) > 1 else cv2.INTER_LINEAR
        back = cv2.warpAffine(rgb, shift, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(alpha.astype(np.float32), shift, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(roi + (back.astype(np.float32) - roi) * a + 0.5, 0, 255).astype(np.uint8)
        return frame
