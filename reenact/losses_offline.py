"""Losses from pretrained networks that ship inside wheels (optional extra ``losses``, :mod:`reenact.pretrained`):

- :class:`IdentityLoss`: ``1 - cos(SFace(out), SFace(target))``, both faces cut from the frame by a
  differentiable ``grid_sample`` that maps five points of the 68 (eye centres, nose tip, mouth corners) onto
  SFace's 112 x 112 template, so gradients reach every pixel of the output the crop reads;
- :class:`EfficientPerceptual`: L1 between channel-normalised EfficientNet-Lite0 activations at a few stages
  (the LPIPS recipe without learned weights).

Images are ``(B, 3, H, W)`` RGB in [-1, 1]; landmarks ``(B, 68, 2)`` in pixels of the image (pixel centres at
integer coordinates). The target side is a constant (no gradient through it). Each loss returns an unweighted
scalar; ``reenact.losses.ContentLoss`` names and weights them (``loss.content``: ``identity``, ``efficientnet``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# SFace's (ArcFace's) 5-point template in 112 x 112 pixels: the eye, nose tip and mouth corner on the image's
# left first (the subject's right), as OpenCV's FaceRecognizerSF.alignCrop uses it.
SFACE_TEMPLATE = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                  (70.7299, 92.2041))
SFACE_SIZE = 112
#: Cosine similarity of SFace embeddings above which two faces are the same person (OpenCV's threshold).
SFACE_SAME_PERSON = 0.363
# EfficientNet-Lite0 stages whose activations are compared: 1/4, 1/8, 1/16 and 1/32 of the input side.
PERCEPTUAL_STAGES = (2, 3, 5, 6)


def five_points(points: torch.Tensor) -> torch.Tensor:
    """``(..., 68, 2)`` landmarks -> ``(..., 5, 2)``: the image-left and image-right eye centres, the nose tip
    (30), the image-left and image-right mouth corners (48, 54): the template's order."""
    return torch.stack([points[..., 36:42, :].mean(-2), points[..., 42:48, :].mean(-2), points[..., 30, :],
                        points[..., 48, :], points[..., 54, :]], -2)


def similarity_to(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; Umeyama 1991) mapping ``src`` onto
    ``dst`` ``(B, N, 2)`` -> ``(B, 2, 3)``."""
    src, dst = src.double(), dst.double()
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - ms, dst - md
    # with complex numbers a similarity is z -> a z + b: a = sum(conj(s) d) / sum(|s|^2)
    a_re = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(1)
    a_im = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1)
    norm = s.square().sum((1, 2)).clamp_min(1e-12)
    a_re, a_im = a_re / norm, a_im / norm
    rot = torch.stack([torch.stack([a_re, -a_im], -1), torch.stack([a_im, a_re], -1)], -2)  # (B, 2, 2)
    t = md[:, 0] - (rot @ ms[:, 0, :, None])[..., 0]
    return torch.cat([rot, t[..., None]], -1)


def face_matrix(points: torch.Tensor, size: int = SFACE_SIZE) -> torch.Tensor:
    """``(B, 2, 3)`` float64 similarity from pixels of the ``size`` px SFace-aligned face to pixels of the image
    whose landmarks are ``points`` ``(B, 68, 2)`` (least squares over the five points)."""
    tpl = torch.tensor(SFACE_TEMPLATE, dtype=torch.float64, device=points.device) * (size / SFACE_SIZE)
    return similarity_to(tpl.expand(points.shape[0], -1, -1), five_points(points.detach()))


def sampling_grid(m: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """``grid_sample`` grid ``(B, size, size, 2)`` (``align_corners=False``) that reads, at each pixel ``u`` of a
    ``size`` px output, the pixel ``m @ [u, 1]`` of a ``height`` x ``width`` image; ``m`` ``(B, 2, 3)``. Being
    normalised, the same grid reads a resized copy of that image at the same places."""
    b = m.shape[0]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=m.device),
                            torch.arange(size, dtype=torch.float64, device=m.device), indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)  # (1, size*size, 3)
    src = grid @ m.double().transpose(1, 2)  # (B, size*size, 2) image pixels
    # grid_sample's align_corners=False coordinates: pixel centre x sits at (2x + 1) / W - 1
    norm = torch.stack([(2 * src[..., 0] + 1) / width - 1, (2 * src[..., 1] + 1) / height - 1], -1)
    return norm.view(b, size, size, 2)


def align_faces(images: torch.Tensor, points: torch.Tensor, size: int = SFACE_SIZE) -> torch.Tensor:
    """Faces ``(B, 3, size, size)`` cut from ``images`` ``(B, 3, H, W)`` with the similarity that maps the five
    points of ``points`` ``(B, 68, 2)`` onto :data:`SFACE_TEMPLATE` (scaled to ``size``); bilinear, zeros
    outside, differentiable in the images."""
    _, _, h, w = images.shape
    grid = sampling_grid(face_matrix(points, size), size, h, w).to(images.dtype)  # crop pixels -> image pixels
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_sface_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> SFace's 0..255 RGB."""
    return (images.float() + 1) * 127.5


class IdentityLoss(nn.Module):
    """``forward(fake, real, points) -> 1 - mean cosine`` of the SFace embeddings of both faces, aligned with
    the target landmarks ``points`` (the output is drawn at them). ``net``: a loaded SFace (default
    :func:`reenact.pretrained.load_sface`)."""

    def __init__(self, net: nn.Module | None = None):
        super().__init__()
        if net is None:
            from reenact.pretrained import load_sface

            net = load_sface()
        self.net = net

    def embed(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Unit-norm SFace embeddings ``(B, 128)`` of images in [-1, 1] with their landmarks."""
        return F.normalize(self.net(to_sface_input(align_faces(images.float(), points.float()))), dim=1)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        with torch.autocast(fake.device.type, enabled=False):
            with torch.no_grad():
                target = self.embed(real, points)
            return 1 - (self.embed(fake, points) * target).sum(1).mean()


class EfficientPerceptual(nn.Module):
    """``forward(fake, real) -> scalar``: mean over :data:`PERCEPTUAL_STAGES` of the L1 between EfficientNet-Lite0
    activations, each unit-normalised over channels at every position (so every stage counts alike whatever
    its scale). ``net``: a loaded EfficientNet-Lite0 (default :func:`reenact.pretrained.load_efficientnet_lite0`)."""

    def __init__(self, net: nn.Module | None = None, stages: tuple[int, ...] = PERCEPTUAL_STAGES):
        super().__init__()
        if net is None:
            from reenact.pretrained import load_efficientnet_lite0

            net = load_efficientnet_lite0()
        self.net, self.stages = net, tuple(stages)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.net.features(real.float(), self.stages)
        feats = self.net.features(fake.float(), self.stages)
        total = fake.new_zeros((), dtype=torch.float32)
        for a, b in zip(feats, target):
            total = total + (F.normalize(a.float(), dim=1, eps=1e-6) - F.normalize(b.float(), dim=1, eps=1e-6)).abs().mean()
        return total / len(feats)
