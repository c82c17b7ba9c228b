"""Seconds from upload to finished video in the web app, for a 10 s drive.

    python benchmarks/app.py --checkpoint CKPT [--device cpu] [--seconds 10] [--clip PATH] [--portrait PATH]
                             [--steps 0] [--no-browser] [--compare-watermark]

Starts ``reenact app`` on a free local port and, in Debian's headless Chromium (Playwright, no browser
download), uploads the portrait and a driver (the first ``--seconds`` of a real 512x512 talking clip with its
audio), presses Animate and waits until the page's video element can play the result. Prints one Markdown
table: the wall time a user waits (upload -> playable video), the server's stages (from a handler run before
it, which also warms the model as a running app is) and what provenance costs (watermark embedding, C2PA). ``--no-browser`` (or no Chromium) times the handler alone. ``--compare-watermark`` also
runs the handler once with the watermark off, for the cost of provenance (watermark + C2PA + record).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from end_to_end import cpu_name  # noqa: E402 - the sibling benchmark script (this folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def pick_clip(seconds: float) -> Path:
    """The first 512x512 clip with audio, a face in every sampled frame and at least ``seconds`` of video."""
    with open(DATA / "MANIFEST.tsv") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["file"].startswith("videos/")
                and r["width"] == "512" and r["has_audio"] == "1" and float(r["face_frames_fraction"]) >= 1.0
                and float(r["seconds"]) >= seconds]
    rows.sort(key=lambda r: r["file"])
    return DATA / rows[0]["file"]


def cut(clip: Path, seconds: float, out: Path) -> Path:
    """The first ``seconds`` of ``clip`` with its audio (real footage: written without provenance)."""
    from reenact import io

    info = io.probe(clip)
    n = int(round(seconds * info.fps))
    frames = list(io.read_frames(clip, max_frames=n))
    audio = io.read_audio(clip, 16000)[:round(len(frames) * 16000 / info.fps)] if info.has_audio else None
    return io.write_video(out, frames, info.fps, audio=audio, provenance=None)


class StageClock:
    """Wraps a handler's progress callback: seconds between its stage reports."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.marks: list[tuple[float, str]] = []

    def __call__(self, fraction: float, stage: str) -> None:
        self.marks.append((time.perf_counter() - self.t0, stage))

    def stages(self) -> list[tuple[str, float]]:
        out = []
        for (t, name), (t_next, _) in zip(self.marks, self.marks[1:]):
            out.append((name, t_next - t))
        return out


def provenance_costs(video: Path) -> list[tuple[str, str]]:
    """What stamping costs on this output: embedding the watermark in its frames, signing its C2PA manifest."""
    from reenact import io
    from reenact.provenance import c2pa
    from reenact.provenance.watermark import Watermark

    frames = list(io.read_frames(video))
    h, w = frames[0].shape[:2]
    embed = Watermark().embedder(h, w, 0)
    t = time.perf_counter()
    for f in frames:
        embed(f)
    rows = [(f"of which watermark embedding ({len(frames)} frames, {w}x{h})", f"{time.perf_counter() - t:.1f}")]
    if c2pa.available():
        copy = video.with_name("copy.mp4")
        shutil.copyfile(video, copy)
        t = time.perf_counter()
        c2pa.sign_in_place(copy, {"tool": "reenact", "version": "bench"})
        rows.append(("of which C2PA signing", f"{time.perf_counter() - t:.2f}"))
    return rows


def browser_run(url: str, portrait: Path, driver: Path, chromium: str, timeout_s: float) -> float:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#animate_button")
        t0 = time.perf_counter()
        page.locator("#portrait input[type=file]").set_input_files(str(portrait))
        page.locator("#driver_video input[type=file]").set_input_files(str(driver))
        page.wait_for_selector("#driver_video video")
        page.click("#animate_button")
        page.wait_for_function("() => { const v = document.querySelector('#animate_result video');"
                               " return v && v.readyState >= 2 && v.duration > 0; }", timeout=timeout_s * 1000)
        seconds = time.perf_counter() - t0
        b.close()
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="meta-learned checkpoint (default: the bundled model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--portrait", type=Path, default=DATA / "portraits" / "lp_s5.jpg")
    ap.add_argument("--steps", type=int, default=0, help="fine-tuning steps (the page's default: 0)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--compare-watermark", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600.0)
    a = ap.parse_args()

    from reenact.app import AppConfig, Handlers, launch

    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    try:
        clip = a.clip or pick_clip(a.seconds)
        driver = cut(clip, a.seconds, work / "driver.mp4")
        cfg = AppConfig(checkpoint=a.checkpoint, device=a.device, max_seconds=max(30.0, a.seconds + 1),
                        work_dir=work / "out")
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        use_browser = not a.no_browser and chromium is not None
        rows: list[tuple[str, str]] = []
        handlers = Handlers(cfg)
        model = handlers.describe_model()
        # server-side stages (also warms the model, so the browser run measures a warm app, as a user meets it)
        clock = StageClock()
        out = handlers.animate(str(a.portrait), driver="video", video=str(driver), steps=a.steps, progress=clock)
        personalise = next(sec for name, sec in clock.stages() if name.startswith("personalising"))
        rows.append(("handler: personalise", f"{personalise:.1f}"))
        for name, sec in out.timings.items():
            rows.append((f"handler: {name.replace('_', '-')}", f"{sec:.1f}"))
        total = clock.marks[-1][0]
        rows.append(("handler: total (uploads checked -> video written and verified)", f"{total:.1f}"))
        rows += provenance_costs(out.path)
        if a.compare_watermark:
            clock = StageClock()
            handlers.animate(str(a.portrait), driver="video", video=str(driver), steps=a.steps, progress=clock,
                             watermark=False)
            rows.append(("handler: total, watermark off", f"{clock.marks[-1][0]:.1f}"))
        if use_browser:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            page, url = launch(cfg, port=port, block=False)
            try:
                sec = browser_run(url, a.portrait, driver, chromium, a.timeout)
            finally:
                page.close()
            rows.append(("**browser: upload -> playable video (what a user waits)**", f"**{sec:.1f}**"))
        from reenact import io

        info = io.probe(out.path)
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {model}; driver {clip.name} first {a.seconds:g} s "
              f"({info.num_frames} frames); portrait {a.portrait.name} -> {info.width}x{info.height}; steps {a.steps}"
              + ("" if use_browser else "; no browser"))
        print("\n| stage | seconds |\n|---|---:|")
        for name, sec in rows:
            print(f"| {name} | {sec} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
