"""Speed of the photo renderer's path: landmarks -> a pasted-back frame of the photo's size.

    python benchmarks/photo_render.py [--checkpoint REGION_CKPT] [--size 512] [--threads 2] [--frames 100]

Drives a 512x512 real portrait (``../shared/data/portraits``, resized to --size) with the landmarks of a real
talking clip (dlib on its frames, moved onto the portrait by the puppeteer's relative retargeting is not needed
for timing: the clip's landmarks are mapped onto the portrait's face by one similarity), batch 1, and prints
frames/s of the whole path and the median ms of each stage (warp of the photo, the region crop read through the
warp, G, paste). Without --checkpoint: the default region config with random weights (same cost as trained).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import cv2

    from reenact import io
    from reenact.config import load_region_config
    from reenact.geometry import fit_similarity, transform
    from reenact.landmarks import create_detector
    from reenact.models.region import RegionEmbedder, RegionGenerator
    from reenact.regions import draw_region, get_region, region_matrix
    from reenact.renderer import PhotoRenderer, embed, support

    data = REPO.parent / "shared" / "data"
    photo = cv2.resize(io.read_image(data / "portraits" / "lp_s5.jpg"), (a.size, a.size), interpolation=cv2.INTER_AREA)
    det = create_detector("dlib")
    pts = det.detect_one(photo).points.astype(np.float32)
    clip = sorted((data / "videos").rglob("*.mp4"))[0]
    drv = [det.detect_one(f, multiple="largest").points for f in io.read_frames(clip, max_frames=a.frames)]
    sim = fit_similarity(drv[0], pts)
    targets = np.stack([transform(np.asarray(d, np.float64), sim) for d in drv]).astype(np.float32)
    dev = torch.device(a.device)
    if a.checkpoint:
        from reenact.models.region_model import RegionModel

        model = RegionModel.load(a.checkpoint, dev)
        E, G, spec, size = model.E, model.G, model.spec, model.size
    else:
        m = load_region_config().model
        E, G = RegionEmbedder(m.size, m.embed_dim, m.e_base).to(dev).eval(), RegionGenerator(m.size, m.embed_dim, m.g_width, m.g_head).to(dev).eval()
        spec, size = get_region(m.region), m.size
    with torch.no_grad():
        psi = G.psi(embed(E, [photo], [pts], spec, size, dev))
    r = PhotoRenderer(photo, pts, G, psi, spec, size)
    for t in targets[:5]:
        r.render(t[None])
    times = {"warp": [], "region": [], "G": [], "paste": [], "total": []}
    for t in targets:
        t0 = time.perf_counter()
        frame = r.warp.warp(photo, t)
        t1 = time.perf_counter()
        mm = region_matrix(t, spec, size)
        crop = r.warp.warp_region(photo, t, mm, size)
        draw = draw_region(transform(t, mm), spec, size)
        sup = support(transform(t, mm), spec, size)
        t2 = time.perf_counter()
        with torch.inference_mode():
            from reenact.renderer import to_net

            out = G(to_net(crop[None], dev), torch.from_numpy(draw[None]).to(dev), psi)
            rgb = ((out.rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
            mask = out.mask.float()[0, 0].cpu().numpy()
        t3 = time.perf_counter()
        r._paste(frame, rgb, mask * sup * r._window, mm)
        t4 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            times[k].append(v * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"photo {a.size}x{a.size}, {len(targets)} frames, batch 1, {a.threads} threads, {a.device}")
    print("median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"frames/s (1 / mean total): {1000 / np.mean(times['total']):.1f}")


if __name__ == "__main__":
    main()
