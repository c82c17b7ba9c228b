"""Evaluation metrics of the papers, each in its own module (dlib, scipy and kornia load on first use):

- ``psnr_ssim``: PSNR, SSIM (kornia, window 11, [0, 1] RGB);
- ``regions``: mouth/eye boxes from the target landmarks, region SSIM/PSNR, mouth opening, the mouth interior
  (PSNR/L1 inside the inner lips of open mouths), "hard frames" of the mouth and of the eyes;
- ``sharpness``: variance of the Laplacian (output / real, at any resolution) and CPBD on the face box;
- ``identity``: dlib 128-D descriptors, ACD (rank by this) and CSIM;
- ``landmarks``: LMD (normalised by the inter-ocular distance), head pose and pose error, eye aspect ratio,
  blinks;
- ``fid``: Frechet distance and an Inception-v3 feature network (only with a local weights file);
- ``sync``: audio-visual sync offset and confidence from the shipped landmark lip-sync expert;
- ``registry``: the per-image metrics by name (``"psnr"``, ``"mouth_interior_psnr"``, ``"acd"``, ...), one call
  shape for protocols, training validation and scripts;
- ``harness``: what every protocol of ``reenact eval`` builds on: clip pool, frame selection, the crop methods'
  renderers and the render cache, the shared per-target metrics, run setup and report writing;
- ``evaluate``: the self / cross reenactment protocols and the dispatcher of all protocols (``run_eval``);
- ``speech``: the speech protocol (its speech-driven renderer comes in as an argument: no stage is imported);
- ``userpath``: the user-path protocol (full-resolution photos, pasted-back frames) and its method registry;
- ``render_cache``: ``python -m reenact.metrics.render_cache`` fills a render cache on another machine.

The package is core: it imports no stage (``meta_learning``, ``finetune``, ``puppeteer``); the lip-sync expert is
:mod:`reenact.models.lipsync`.
"""
from reenact.metrics.landmarks import eye_aspect_ratio, head_pose, inter_ocular, lmd, pose_error
from reenact.metrics.psnr_ssim import psnr, ssim
from reenact.metrics.regions import (eye_boxes, eye_gap, hard_frames, mouth_box, mouth_interior_metrics,
                                     mouth_opening, open_mouth, region_metrics)
from reenact.metrics.sharpness import cpbd, face_box, lapvar_ratio, laplacian_variance

__all__ = ["cpbd", "eye_aspect_ratio", "eye_boxes", "eye_gap", "face_box", "hard_frames", "head_pose",
           "inter_ocular", "lapvar_ratio", "laplacian_variance", "lmd", "mouth_box", "mouth_interior_metrics",
           "mouth_opening", "open_mouth", "pose_error", "psnr", "region_metrics", "ssim"]
