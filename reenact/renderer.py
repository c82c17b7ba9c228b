"""The photo renderer: warp the photo at its own resolution, synthesise the mouth with a region generator.

For each target (68 landmarks in the photo's pixels):

1. the whole photo is warped to the target landmarks (:class:`reenact.photowarp.PhotoWarp`: one bicubic
   resampling of the photo, identity far from the face, so what a warp gets right keeps the photo's pixels);
2. the target's mouth crop (:func:`reenact.regions.region_matrix`, e.g. 128 px) is read from the photo through
   the same warp, its landmark image drawn, and the region generator G paints RGB + a mask (AdaIN parameters
   ``psi`` from the embedder's embedding of the photo's own mouth crops);
3. G's paint goes back into the warped photo through the crop's inverse similarity, blended with
   ``mask x support x window``: ``support`` is the target's inner-lip polygon (teeth, tongue, cavity) grown
   by :data:`SUPPORT_GROW` of the crop and feathered, ``window`` fades to 0 at the crop's edge. So G paints only
   what no warp of the photo has; lips, skin, eyes and hair come from the full-resolution warp.

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

#: The blend's support: the inner-lip polygon dilated by this fraction of the crop side, then feathered. With
#: the outer-lip polygon grown by 0.06 (the first choice) the trained mouth generators painted a dark halo and
#: a bright contour around the lips, measured on 128 held-out hard-pair crops (model r1, 2026-12-03): crop L1
#: 0.133 against the warp's 0.112, SSIM 0.650 against 0.718; the same generators' paint through the inner
#: polygon + 0.03: L1 0.109, SSIM 0.723, interior PSNR 16.85 dB against the warp's 14.85 (outer: 16.86).
SUPPORT_POLYGON = "inner"
SUPPORT_GROW = 0.03
SUPPORT_FEATHER = 0.016
#: The blend fades to 0 over this fraction of the crop side at its edges.
WINDOW_FEATHER = 0.08


def support(points: np.ndarray, spec: RegionSpec, size: int) -> np.ndarray:
    """``(S, S)`` float32 in [0, 1]: where G may paint, from the target's points in crop pixels."""
    m = np.zeros((size, size), np.float32)
    polygon = list(getattr(spec, SUPPORT_POLYGON))
    cv2.fillPoly(m, [np.round(points[polygon] * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
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


def _bucket(n: int, q: int = 32) -> int:
    """``n`` rounded up to a multiple of ``q`` (box sizes: few distinct shapes for compiled cores / graphs)."""
    return -(-int(n) // q) * q


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
        #: torch backend: how the paint goes back ("auto": bicubic when the crop is enlarged, as numpy: one
        #: interpolation per batch unless the batch mixes both; "bicubic" / "bilinear": that one for all)
        self.paste_interp = "auto"
        #: torch backend: the warp's triangulation, "photo" (fixed, all on the device) or "target" (each target's
        #: Delaunay on the host, as numpy; see reenact.photowarp_torch.TorchPhotoWarp)
        self.topology = "photo"
        #: torch backend on CUDA: replay the per-batch core from CUDA graphs (one per batch size and box shape)
        self.cuda_graphs = False
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
    #
    # Per batch: a plan (one small host sync: the union box of the frame the batch can change, the paste boxes'
    # size), then a core of static shapes (tensors in, no host sync, no numpy: torch.compile / CUDA graphs)
    # working on that box only, then one copy of the box into the photo's frames. Rough cost per frame (512 px
    # photo, 128 px crop, ROI ~ h x w of the frame, T ~ 180 triangles, P coarse points ~ h w / 16 + 1.2k):
    #   plan        ~ 30 small kernels on (B, 68, 2), 1 sync
    #   point loc.  3T x 3 x P MACs (bmm) ~ 18 MFLOP at P = 10k; writes 3T P floats (~20 MB) + amin/argmax
    #   maps + warp bilinear map upsample (h w x 2 ch) + bicubic photo read (16 taps x 3 ch): ~ 0.1 GFLOP at
    #               h w = 100k px, ~ 3 MB of float32 out
    #   face mask   convex hull + sub-pixel outline at 1/4 size: ~ 27 x 16k x 25 ops ~ 11 M ops; blur 2 x 81 taps
    #               at 16k px ~ 2.6 MFLOP
    #   drawings    fill polygons (12 x 16k) + 63 lines x 257 steps scatter, support: 17 x 17 dilation + blur at
    #               16k px ~ 5 MFLOP
    #   G           the region generator at 128 px (dominant at large batches: see benchmarks/photo_render.py
    #               --stages)
    #   paste       per crop box bh x bw ~ 170 x 170: bilinear alpha + bicubic paint + blend ~ 3 MFLOP
    #   write       B x h x w x 3 bytes into a clone of the photo (B x H x W x 3 bytes)

    @property
    def torch_warp(self):
        """The :class:`reenact.photowarp_torch.TorchPhotoWarp` of the photo on the model's device (made once, with
        everything per photo: photo tensors, control points, triangulation, constants, the default box sizes)."""
        if self._torch is None or self._torch.device != self.device or self._torch.topology != self.topology:
            from reenact.photowarp_torch import TorchPhotoWarp, window_t

            self._torch = TorchPhotoWarp(self.photo, self.points, self.device, topology=self.topology)
            self._torch_window = window_t(self.size, WINDOW_FEATHER, self.device)
            self._torch_frame = torch.from_numpy(self.photo).to(self.device)[None]  # (1, H, W, 3) uint8
            self._graphs = {}
            self._torch_default = None
            with torch.inference_mode():
                # warm the per-device constants (made outside any compiled region) and size the default boxes on
                # the photo's own landmarks, grown by a head motion of 12% of the face's extent
                pts = torch.as_tensor(self.points, device=self.device)[None]
                plan = self._torch_plan(pts, defaults=False)
                if plan[3][0]:
                    self._torch_core(pts, *plan[:3], *plan[3])
                lo, hi = self.points.min(0), self.points.max(0)
                grow = int(np.ceil(0.12 * float((hi - lo).max())))
                h, w, bh, bw, _i = plan[3]
                H, W = self.photo.shape[:2]
                self._torch_default = (min(H, _bucket(h + 2 * grow)), min(W, _bucket(w + 2 * grow)),
                                       _bucket(bh + grow, 16), _bucket(bw + grow, 16))
        return self._torch

    def render_torch(self, targets, batch_size: int = 16, as_tensor: bool = False):
        """The torch backend of :meth:`render`: each chunk of ``batch_size`` targets in one batched pass, written
        into one preallocated clone of the photo."""
        t = torch.as_tensor(np.asarray(targets, np.float32) if not isinstance(targets, torch.Tensor) else targets)
        t = t.to(self.device, torch.float32)
        self.torch_warp  # noqa: B018 (made once)
        out = self._torch_frame.expand(len(t), -1, -1, -1).clone()
        for i in range(0, len(t), batch_size):
            self.render_torch_chunk(t[i:i + batch_size], out=out[i:i + batch_size])
        return out if as_tensor else out.cpu().numpy()

    @torch.inference_mode()
    def render_torch_chunk(self, targets: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 68, 2)`` float32 targets on the device -> ``(B, H, W, 3)`` uint8 frames on the device (``out``:
        frames holding the photo, written in place over the changed box only)."""
        self.torch_warp  # noqa: B018
        if out is None:
            out = self._torch_frame.expand(len(targets), -1, -1, -1).clone()
        m, off, box_lo, (h, w, bh, bw, interp), (x0, y0) = self._torch_plan(targets)
        if h == 0 or w == 0:
            return out
        core = self._torch_graphed if (self.cuda_graphs and self.device.type == "cuda") else self._torch_core
        out[:, y0:y0 + h, x0:x0 + w] = core(targets, m, off, box_lo, h, w, bh, bw, interp)
        return out

    def _torch_plan(self, targets: torch.Tensor, defaults: bool = True):
        """``(m, off, box_lo, (h, w, bh, bw, interp), (x0, y0))``: the crops' frame -> crop maps ``(B, 2, 3)``
        float32, the changed box of the frame (``h x w`` at ``off`` ``(2,)`` long on the device, ``(x0, y0)`` on
        the host: the union over the batch of the face mask's and the paste's footprints, sizes rounded up to
        the per-photo default / 32 px so that a video's batches share one shape), the paste boxes ``bh x bw``
        at ``box_lo`` ``(B, 2)`` inside it and the paste's interpolation. One host sync."""
        from reenact.photowarp_torch import paste_footprint_t, region_matrix_t

        S, tw = self.size, self._torch
        H, W = self.photo.shape[:2]
        m = region_matrix_t(targets.double(), self.spec, S).float()  # float32, as numpy's region_matrix
        flo, fhi = tw.face_box(targets)
        plo, phi = paste_footprint_t(m, S, H, W)
        inv = m.double()
        cubic = (inv[:, 0, 0].abs() + inv[:, 0, 1].abs()) < 1  # crop enlarged: |inverse| > 1
        psize = (phi - plo).amax(0)
        lo = torch.minimum(flo.amin(0), plo.amin(0))
        hi = torch.maximum(fhi.amax(0), phi.amax(0))
        vals = torch.cat([lo, hi, psize, cubic.all()[None].double(), cubic.any()[None].double()]).tolist()  # sync
        x0, y0 = max(0, int(vals[0])), max(0, int(vals[1]))
        x1, y1 = min(W, int(vals[2])), min(H, int(vals[3]))
        interp = self.paste_interp
        if interp == "auto":
            interp = "bicubic" if vals[6] else "bilinear" if not vals[7] else "mixed"
        if x1 <= x0 or y1 <= y0:
            return m, None, None, (0, 0, 0, 0, interp), (0, 0)
        dh, dw, dbh, dbw = (self._torch_default if defaults and self._torch_default else (0, 0, 0, 0))
        h = min(H, max(dh, _bucket(y1 - y0)))
        w = min(W, max(dw, _bucket(x1 - x0)))
        x0, y0 = min(x0, W - w), min(y0, H - h)  # still covers [x0, x1) x [y0, y1)
        bh = min(h, max(dbh, _bucket(int(vals[5]), 16)))
        bw = min(w, max(dbw, _bucket(int(vals[4]), 16)))
        box = torch.tensor([x0, y0, x0 + w - bw, y0 + h - bh], dtype=torch.float64).to(self.device, non_blocking=True)
        box_lo = torch.minimum(torch.maximum(plo, box[:2]), box[2:])  # (B, 2): each crop's box inside the ROI
        return m, box[:2].long(), box_lo, (h, w, bh, bw, interp), (x0, y0)

    def _torch_geometry(self, targets, m, off, box_lo, h: int = 0, w: int = 0, *_):
        """The warped frames' box ``(B, 3, h, w)`` (face-blended), the crops, their drawings and supports."""
        from reenact.photowarp_torch import draw_region_t, support_t, transform_t

        S, spec = self.size, self.spec
        pts = transform_t(targets, m)
        roi, crops = self._torch.warp_roi_and_region(targets, m.double(), S, off, h, w)
        return roi, crops, draw_region_t(pts, spec, S), support_t(pts, spec, S, SUPPORT_GROW, SUPPORT_FEATHER, SUPPORT_POLYGON)

    def _torch_generate(self, crops, draws, sup):
        """G's paint ``(B, 3, S, S)`` (uint8 values) and the blend's alpha ``(B, S, S)``."""
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        with ctx:
            res = self.G(crops.div(127.5).sub(1), draws, self.psi)
        rgb = ((res.rgb.float().clamp(-1, 1) + 1) * 127.5).round()
        return rgb, res.mask.float()[:, 0] * sup * self._torch_window

    def _torch_paste(self, roi, rgb, alpha, m, off, box_lo, bh, bw, interp):
        from reenact.photowarp_torch import paste_box_t

        cubic = None
        if interp == "mixed":
            inv = m.double()
            cubic = (inv[:, 0, 0].abs() + inv[:, 0, 1].abs()) < 1
        out = paste_box_t(roi, off, rgb, alpha, m, box_lo, bh, bw, interp, cubic)
        return out.to(torch.uint8).permute(0, 2, 3, 1)

    def _torch_core(self, targets, m, off, box_lo, h: int, w: int, bh: int, bw: int, interp: str):
        """Static shapes, tensors in: the changed box ``(B, h, w, 3)`` uint8 of the rendered frames
        (``torch.compile`` target: ``benchmarks/photo_render.py --compile all``)."""
        roi, crops, draws, sup = self._torch_geometry(targets, m, off, box_lo, h, w)
        rgb, alpha = self._torch_generate(crops, draws, sup)
        return self._torch_paste(roi, rgb, alpha, m, off, box_lo, bh, bw, interp)

    def _torch_graphed(self, targets, m, off, box_lo, h, w, bh, bw, interp):
        """:meth:`_torch_core` replayed from a CUDA graph captured once per (batch, shapes): copies the inputs into
        the graph's, returns its output buffer (overwritten by the next replay: consume it first)."""
        key = (targets.shape[0], h, w, bh, bw, interp)
        g = self._graphs.get(key)
        args = (targets, m, off, box_lo)
        if g is None:
            static = [a.clone() for a in args]
            s = torch.cuda.Stream(self.device)
            s.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(s):
                for _ in range(2):
                    self._torch_core(*static, h, w, bh, bw, interp)
            torch.cuda.current_stream(self.device).wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                res = self._torch_core(*static, h, w, bh, bw, interp)
            g = self._graphs[key] = (graph, static, res)
        graph, static, res = g
        for dst, a in zip(static, args):
            dst.copy_(a)
        graph.replay()
        return res

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
