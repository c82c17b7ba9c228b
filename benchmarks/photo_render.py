"""Speed of the photo renderer's path: landmarks -> a pasted-back frame of the photo's size.

    # inputs (needs dlib + av: run where the repo's full environment is), written once:
    python benchmarks/photo_render.py --export-inputs photo_inputs.npz [--size 512] [--frames 100]
    # speed (needs only torch, numpy, opencv, omegaconf, safetensors: no dlib, no av):
    python benchmarks/photo_render.py --inputs photo_inputs.npz --device cuda --backend torch \\
        [--batch-sizes 1,64,256] [--bf16] [--compile g|all] [--checkpoint REGION_CKPT]

Drives a 512x512 real portrait (``../shared/data/portraits/lp_s5.jpg``, resized to --size) with the landmarks of a
real clip (dlib on its frames, mapped onto the portrait's face by one similarity: retargeting does not matter for
timing). ``--export-inputs`` writes the photo, its landmarks and the target landmarks to an .npz; ``--inputs``
reads them (without it, they are computed here with dlib). For each batch size: frames/s of the whole path
(``PhotoRenderer.render``; torch backend: frames left on the device, ``as_tensor=True``, timed with
``torch.cuda.synchronize``) after warm-up, and ms per frame at batch 1. ``--stages`` adds per-stage median ms: the
numpy backend's at batch 1 (warp, region crop + drawing, G, paste), the torch backend's at each batch size (plan,
geometry, G, paste, write; each stage synced). ``--compile all`` compiles the torch backend's per-batch core
(``--compile-mode reduce-overhead`` for inductor's CUDA graphs); ``--cuda-graphs`` replays it from CUDA graphs
without compiling. Without --checkpoint: the default region
config with random weights (same cost as trained).
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


def detect_inputs(size: int, frames: int) -> dict[str, np.ndarray]:
    """Photo + landmarks + target landmarks with dlib (needs dlib and av)."""
    import cv2

    from reenact import io
    from reenact.geometry import fit_similarity, transform
    from reenact.landmarks import create_detector

    data = REPO.parent / "shared" / "data"
    photo = cv2.resize(io.read_image(data / "portraits" / "lp_s5.jpg"), (size, size), interpolation=cv2.INTER_AREA)
    det = create_detector("dlib")
    pts = det.detect_one(photo).points.astype(np.float32)
    clip = sorted((data / "videos").rglob("*.mp4"))[0]
    drv = [det.detect_one(f, multiple="largest").points for f in io.read_frames(clip, max_frames=frames)]
    sim = fit_similarity(drv[0], pts)
    targets = np.stack([transform(np.asarray(d, np.float64), sim) for d in drv]).astype(np.float32)
    return {"photo": photo, "points": pts, "targets": targets, "clip": np.array(str(clip.relative_to(data)))}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_batches(r, targets: np.ndarray, batch: int, backend: str, dev, warmup: int, min_s: float,
                 max_iters: int) -> tuple[float, float]:
    """(frames/s, ms per batch) of ``render`` on ``batch`` targets at a time."""
    reps = -(-batch // len(targets))
    tg = np.concatenate([targets] * reps)[:batch] if reps > 1 else targets[:batch]
    if backend == "torch":
        tg = torch.from_numpy(np.ascontiguousarray(tg)).to(dev)  # landmarks already on the device, as a pipeline has
        call = lambda: r.render(tg, batch_size=batch, backend="torch", as_tensor=True)  # noqa: E731
    else:
        call = lambda: r.render(tg, batch_size=batch, backend="numpy")  # noqa: E731
    for _ in range(warmup):
        call()
    sync(dev)
    times = []
    t_end = time.perf_counter() + min_s
    while len(times) < max_iters and (time.perf_counter() < t_end or len(times) < 3):
        t0 = time.perf_counter()
        call()
        sync(dev)
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    return batch / (ms / 1000), ms


def stages(r, photo, targets, spec, size, G, psi, dev) -> dict[str, float]:
    """The numpy backend's median ms per stage at batch 1."""
    from reenact.geometry import transform
    from reenact.regions import draw_region, region_matrix
    from reenact.renderer import support, to_net

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
            out = G(to_net(crop[None], dev), torch.from_numpy(draw[None]).to(dev), psi)
            rgb = ((out.rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
            mask = out.mask.float()[0, 0].cpu().numpy()
        t3 = time.perf_counter()
        r._paste(frame, rgb, mask * sup * r._window, mm)
        t4 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            times[k].append(v * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def torch_stages(r, targets: np.ndarray, batch: int, dev, reps: int = 10) -> dict[str, float]:
    """The torch backend's median ms per stage for a batch, each stage closed by a device sync (so the sum is a
    little above the pipelined total): plan (region maps, footprints, the one host sync), geometry (point
    location, maps, photo read, face blend, crops, drawings, supports), G, paste (crop boxes), write (the box
    into a clone of the photo)."""
    n = -(-batch // len(targets))
    tg = torch.from_numpy(np.ascontiguousarray(np.concatenate([targets] * n)[:batch])).to(dev)
    r.torch_warp  # noqa: B018
    names = ("plan", "geometry", "G", "paste", "write", "total")
    times = {k: [] for k in names}
    with torch.inference_mode():
        for _ in range(reps + 2):
            t = [time.perf_counter()]
            m, off, box_lo, (h, w, bh, bw, interp), (x0, y0) = r._torch_plan(tg)
            sync(dev); t.append(time.perf_counter())
            roi, crops, draws, sup = r._torch_geometry(tg, m, off, box_lo, h, w)
            sync(dev); t.append(time.perf_counter())
            rgb, alpha = r._torch_generate(crops, draws, sup)
            sync(dev); t.append(time.perf_counter())
            box = r._torch_paste(roi, rgb, alpha, m, off, box_lo, bh, bw, interp)
            sync(dev); t.append(time.perf_counter())
            out = r._torch_frame.expand(batch, -1, -1, -1).clone()
            out[:, y0:y0 + h, x0:x0 + w] = box
            sync(dev); t.append(time.perf_counter())
            for k, a, b in zip(names, t[:-1], t[1:]):
                times[k].append((b - a) * 1000)
            times["total"].append((t[-1] - t[0]) * 1000)
    print(f"  box {w}x{h} at ({x0}, {y0}), paste boxes {bw}x{bh}, paste {interp}")
    return {k: statistics.median(v[2:]) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--frames", type=int, default=100, help="driver frames (export / dlib path)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "numpy"])
    ap.add_argument("--batch-sizes", default="1,64,256")
    ap.add_argument("--inputs", default=None, help=".npz from --export-inputs (photo, points, targets)")
    ap.add_argument("--export-inputs", default=None, metavar="FILE.npz", help="write the inputs and exit")
    ap.add_argument("--compile", default="none", choices=["none", "g", "all"],
                    help="torch.compile G, or the torch backend's whole per-batch core (static shapes, tensors in)")
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"],
                    help="torch.compile mode (reduce-overhead: CUDA graphs by inductor)")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="torch backend on CUDA: replay the per-batch core from CUDA graphs (PhotoRenderer.cuda_graphs)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast around G (torch backend)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=3.0, help="timing per batch size")
    ap.add_argument("--max-iters", type=int, default=200)
    ap.add_argument("--stages", action="store_true",
                    help="per-stage ms: numpy backend at batch 1; torch backend at each batch size (synced stages)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    if a.export_inputs:
        inp = detect_inputs(a.size, a.frames)
        np.savez_compressed(a.export_inputs, **inp)
        print(f"wrote {a.export_inputs}: photo {inp['photo'].shape}, {len(inp['targets'])} target frames "
              f"from {inp['clip']}")
        return
    if a.inputs:
        with np.load(a.inputs) as z:
            photo, pts, targets = z["photo"], z["points"].astype(np.float32), z["targets"].astype(np.float32)
    else:
        inp = detect_inputs(a.size, a.frames)
        photo, pts, targets = inp["photo"], inp["points"], inp["targets"]

    from reenact.config import load_region_config
    from reenact.models.region import RegionEmbedder, RegionGenerator
    from reenact.regions import get_region
    from reenact.renderer import PhotoRenderer, embed

    dev = torch.device(a.device)
    if a.checkpoint:
        from reenact.models.region_model import RegionModel

        model = RegionModel.load(a.checkpoint, dev)
        E, G, spec, size = model.E, model.G, model.spec, model.size
    else:
        m = load_region_config().model
        E = RegionEmbedder(m.size, m.embed_dim, m.e_base).to(dev).eval()
        G = RegionGenerator(m.size, m.embed_dim, m.g_width, m.g_head).to(dev).eval()
        spec, size = get_region(m.region), m.size
    with torch.no_grad():
        psi = G.psi(embed(E, [photo], [pts], spec, size, dev))
    r = PhotoRenderer(photo, pts, G, psi, spec, size, backend=a.backend)
    backend = r.resolve_backend()
    if a.bf16:
        r.autocast_dtype = torch.bfloat16
    mode = None if a.compile_mode == "default" else a.compile_mode
    if a.compile == "g":
        r.G = torch.compile(G, mode=mode)
    elif a.compile == "all":  # the core: no host sync, no numpy inside (the plan's one sync stays outside)
        r._torch_core = torch.compile(r._torch_core, mode=mode, dynamic=False)
    r.cuda_graphs = a.cuda_graphs

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {a.threads} torch threads"
    print(f"photo {photo.shape[1]}x{photo.shape[0]}, {len(targets)} target frames, backend {backend}, {name}, "
          f"compile {a.compile} ({a.compile_mode}), cuda graphs {a.cuda_graphs}, bf16 {a.bf16}")
    for b in [int(x) for x in a.batch_sizes.split(",") if x]:
        fps, ms = time_batches(r, targets, b, backend, dev, a.warmup, a.min_seconds, a.max_iters)
        extra = f", {ms:.2f} ms per batch-1 frame" if b == 1 else ""
        print(f"batch {b:4d}: {fps:9.1f} frames/s, {ms:9.2f} ms per batch{extra}", flush=True)
        if a.stages and backend == "torch":
            med = torch_stages(r, targets, b, dev)
            print("  torch stages, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()), flush=True)
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB")
    if a.stages and backend == "numpy":
        med = stages(r, photo, targets, spec, size, G, psi, dev)
        print("numpy backend, batch 1, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
