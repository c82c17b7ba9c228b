"""The web app: its handlers called directly (every driver, the avatar round trip, the errors a user sees), and
one end-to-end run in a real headless Chromium (Debian's, driven by Playwright): upload a portrait and a driver,
press Animate, get a video the browser plays."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from reenact import io
from reenact.app import AppConfig, Handlers, UserError
from reenact.provenance.verify import verify

DRIVER_FRAMES = 15
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def local_c2pa_keys(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REENACT_C2PA_DIR", str(tmp_path_factory.getbasetemp() / "c2pa-keys"))


@pytest.fixture(scope="module")
def driver(speech_clip, tmp_path_factory) -> Path:
    """0.6 s of a real talking face with its audio (real footage: written without provenance)."""
    info = io.probe(speech_clip)
    frames = list(io.read_frames(speech_clip, max_frames=DRIVER_FRAMES))
    audio = io.read_audio(speech_clip, 16000)[:round(DRIVER_FRAMES * 16000 / info.fps)]
    return io.write_video(tmp_path_factory.mktemp("driver") / "driver.mp4", frames, info.fps, audio=audio,
                          provenance=None)


@pytest.fixture(scope="module")
def photo(portrait, tmp_path_factory) -> Path:
    """The shared portrait at 360 px (fast to write, still large enough to carry the watermark)."""
    import cv2

    img = io.read_image(portrait)
    small = cv2.resize(img, (360, 360), interpolation=cv2.INTER_AREA)
    return io.write_image(tmp_path_factory.mktemp("photo") / "portrait.png", small, provenance=None)


@pytest.fixture(scope="module")
def handlers(tiny_checkpoint, tmp_path_factory):
    h = Handlers(AppConfig(checkpoint=tiny_checkpoint, device="cpu", max_seconds=5.0,
                           work_dir=tmp_path_factory.mktemp("app-out")))
    yield h
    h.close()


def _tts_available() -> bool:
    from puppeteer.audio import tts

    try:
        tts.synthesize("a", sample_rate=16000)
    except tts.TTSUnavailableError:
        return False
    return True


# ------------------------------------------------------------------------------------------ handlers

def test_animate_by_video_reports_stages_and_marks_the_result(handlers, photo, driver):
    stages = []
    o = handlers.animate(str(photo), driver="video", video=str(driver), steps=0,
                         progress=lambda f, s: stages.append((f, s)))
    info = io.probe(o.path)
    assert (info.num_frames, info.width, info.height) == (DRIVER_FRAMES, 360, 360) and info.has_audio
    assert [f for f, _ in stages] == sorted(f for f, _ in stages) and stages[-1] == (1.0, "done")
    assert {"checking the uploads", "loading the model", "done"} <= {s for _, s in stages}
    assert f"{DRIVER_FRAMES} frames" in o.message
    v = verify(o.path)
    assert v.metadata["operation"] == "app animate (video)" and v.watermark.detected
    assert v.metadata["base_model"] == f"sha256:{handlers.reenactor().base_hash}"
    assert "watermark present" in o.verification and str(o.path.parent) not in o.verification


def test_animate_by_audio_and_by_text(handlers, photo, driver, tmp_path):
    speech = tmp_path / "speech.wav"
    import wave

    samples = io.read_audio(driver, 16000)
    with wave.open(str(speech), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    o = handlers.animate(str(photo), driver="audio", audio=str(speech), steps=0)
    assert io.probe(o.path).has_audio and verify(o.path).metadata["operation"] == "app animate (audio)"
    if not _tts_available():
        pytest.skip("no eSpeak NG on this machine (pip install 'reenact[tts]'): the text driver is not tested")
    o = handlers.animate(str(photo), driver="text", text="Hello.", steps=0, paste_back=False)
    info = io.probe(o.path)
    assert info.has_audio and info.width == handlers.reenactor().resolution  # the face crop only
    assert verify(o.path).metadata["watermark"]["state"] in ("embedded", "skipped")


def test_personalise_then_puppeteer_with_the_downloaded_avatar(handlers, photo, driver, tmp_path):
    a = handlers.personalise([str(photo)], steps=1)
    assert a.path.suffix == ".safetensors" and "avatar of 1 photo(s), 1 steps" in a.message
    o = handlers.puppeteer(str(a.path), str(driver), parts=["pose", "mouth"])  # pastes into the recorded photo
    assert io.probe(o.path).width == 360 and verify(o.path).metadata["operation"] == "app puppeteer"
    # the photo it was made from is gone (another machine): it asks for it, or takes an upload
    gone = tmp_path / "gone.png"
    shutil.copy(photo, gone)
    b = handlers.personalise([str(gone)], steps=0)
    gone.unlink()
    with pytest.raises(UserError, match="upload it, or untick 'paste back'"):
        handlers.puppeteer(str(b.path), str(driver))
    o = handlers.puppeteer(str(b.path), str(driver), source=str(photo), watermark=False)
    v = verify(o.path)
    assert v.metadata["watermark"] == {"state": "off", "reason": "turned off in the app"}
    assert not v.watermark.detected


def test_errors_are_messages_with_hints(handlers, photo, driver, data_dir, tmp_path, monkeypatch):
    dog = data_dir / "portraits" / "lp_s32.jpg"  # no human face for dlib
    with pytest.raises(UserError, match=r"lp_s32\.jpg: no face.*landmarks"):
        handlers.animate(str(dog), driver="video", video=str(driver))
    with pytest.raises(UserError, match="nothing uploaded"):
        handlers.animate(None, driver="video", video=str(driver))
    with pytest.raises(UserError, match="driver video: nothing uploaded"):
        handlers.animate(str(photo), driver="video", video=None)
    with pytest.raises(UserError, match="type the text"):
        handlers.animate(str(photo), driver="text", text="  ")
    with pytest.raises(UserError, match="at least one part"):
        handlers.animate(str(photo), driver="video", video=str(driver), parts=[])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(UserError, match="notes.png: not a readable image"):
        handlers.animate(str(text), driver="video", video=str(driver))
    def strict(**limits):
        h = Handlers(AppConfig(checkpoint=handlers.config.checkpoint, work_dir=tmp_path / "s", **limits))
        h._reenactor = handlers.reenactor()
        return h

    with pytest.raises(UserError, match=r"driver\.mp4\) is 0\.6 s long; this app accepts up to 0\.2 s"):
        strict(max_seconds=0.2).animate(str(photo), driver="video", video=str(driver))
    big = tmp_path / "big.png"
    io.write_image(big, np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8), provenance=None)
    with pytest.raises(UserError, match=r"portrait \(big\.png\) is 0\.\d MB; this app accepts up to 0\.05 MB"):
        strict(max_upload_mb=0.05).animate(str(big), driver="text", text="hi")
    with pytest.raises(UserError, match="the text is 11 characters; this app accepts up to 5"):
        strict(max_text_chars=5).animate(str(photo), driver="text", text="hello there")
    with pytest.raises(UserError, match=r"portrait\.png: not a readable safetensors file"):
        handlers.puppeteer(str(photo), str(driver))

    # an unexpected failure deep inside: one line, no traceback, details in the log
    import puppeteer.drive

    def broken(*a, **k):
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(puppeteer.drive, "puppeteer_video", broken)
    with pytest.raises(UserError) as e:
        handlers.animate(str(photo), driver="video", video=str(driver))
    assert str(e.value) == "animating failed unexpectedly (RuntimeError); the details are in the server's log"
    assert list(tmp_path.glob("**/*.mp4")) == []  # nothing half-written


def test_puppeteer_never_reads_a_path_named_inside_an_uploaded_avatar(handlers, photo, driver, tmp_path):
    """An avatar file records its photos' paths; one made elsewhere (or edited) could name any image on the
    server's disk. The app pastes only into photos it took as uploads itself."""
    private = tmp_path / "private.png"  # an image on the server the app never received as an upload
    shutil.copy(photo, private)
    elsewhere = handlers.reenactor().personalize([str(private)], steps=0, progress=False)
    path = elsewhere.save(tmp_path / "made_elsewhere.safetensors")
    assert Path(elsewhere.sources[0].name).resolve() == private.resolve() and private.is_file()
    with pytest.raises(UserError, match="upload it, or untick 'paste back'"):
        handlers.puppeteer(str(path), str(driver))


def test_two_users_at_once(handlers, photo, driver):
    results, errors = [], []

    def job():
        try:
            results.append(handlers.animate(str(photo), driver="video", video=str(driver)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({o.path for o in results}) == 2
    assert all(io.probe(o.path).num_frames == DRIVER_FRAMES for o in results)


def test_closing_a_session_deletes_its_results(handlers, photo, driver):
    o = handlers.animate(str(photo), driver="video", video=str(driver), session="abc123")
    other = handlers.personalise([str(photo)], steps=0, session="def456")
    assert o.path.is_relative_to(handlers.work_dir / "session-abc123")
    handlers.end_session("abc123")
    assert not o.path.exists() and other.path.is_file()


def _get(url: str, host: str) -> int:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def test_server_answers_only_this_machine_and_keeps_no_files(tiny_checkpoint, monkeypatch, capsys):
    """Bound to 127.0.0.1 it refuses requests for other host names (DNS rebinding); its caches are private
    (0700) and gone when it stops, with GRADIO_TEMP_DIR as it was before."""
    from reenact.app import launch

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    page_app, url = launch(AppConfig(checkpoint=tiny_checkpoint, device="cpu"), port=_free_port(), block=False)
    try:
        cache = Path(os.environ["GRADIO_TEMP_DIR"])
        work = Path(capsys.readouterr().out.split("outputs in ", 1)[1].split(",", 1)[0])
        port = url.rstrip("/").rsplit(":", 1)[1]
        assert _get(url, f"127.0.0.1:{port}") == 200 and _get(url, f"localhost:{port}") == 200
        assert _get(url, f"attacker.example:{port}") == 400
        assert all((d.stat().st_mode & 0o777) == 0o700 for d in (cache, work))
    finally:
        page_app.close()
    assert not cache.exists() and not work.exists() and "GRADIO_TEMP_DIR" not in os.environ


def test_app_stopped_by_sigterm_deletes_its_folders(tiny_checkpoint):
    import re
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "reenact.cli", "app", "--checkpoint", str(tiny_checkpoint),
                              "--device", "cpu", "--port", str(_free_port())], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        lines = []
        for line in child.stdout:
            lines.append(line)
            m = re.search(r"outputs in (\S+), uploads in (\S+);", line)
            if m:
                break
        assert m, "".join(lines)
        folders = [Path(m.group(1)), Path(m.group(2))]
        assert all(f.is_dir() and (f.stat().st_mode & 0o777) == 0o700 for f in folders)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
    assert not any(f.exists() for f in folders), folders


# ------------------------------------------------------------------------------------------- browser

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PLAYING = """([sel, old]) => { const v = document.querySelector(sel + ' video');
    return v && v.src !== old && v.readyState >= 2 && v.duration > 0
        && {src: v.src, duration: v.duration, w: v.videoWidth, h: v.videoHeight}; }"""


def _wait_playing(page, sel: str, old: str = "") -> dict:
    """Wait until the result video ``sel`` holds a new file the browser can play; its src, duration, size."""
    return page.wait_for_function(_PLAYING, arg=[sel, old], timeout=180_000).json_value()


def _toast(page, text: str) -> str:
    toast = page.locator(".toast-body", has_text=text).first
    toast.wait_for(timeout=60_000)
    return toast.inner_text()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on this machine (apt-get install chromium): "
                                             "the end-to-end browser test needs Debian's chromium")
def test_browser_all_three_tabs(tiny_checkpoint, driver, tmp_path):
    """One run through every tab in a real browser: Animate by video and by text, Personalise -> download the
    avatar, Puppeteer with that avatar; each result plays, mistakes come back as messages in the page; the
    uploads stay in the server's private cache, and closing the page deletes its results."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from reenact.app import launch
    from reenact.app.ui import example_portraits

    examples = example_portraits(None)
    portrait = examples[0] if examples else None  # scikit-image's astronaut (public domain)
    if portrait is None:
        pytest.skip("scikit-image's astronaut is not installed")
    # README screenshots: REENACT_APP_SCREENSHOTS=DIR keeps them, REENACT_APP_CHECKPOINT=CKPT shows a real model
    shots = Path(os.environ.get("REENACT_APP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    checkpoint = os.environ.get("REENACT_APP_CHECKPOINT") or tiny_checkpoint
    work = tmp_path / "out"
    page_app, url = launch(AppConfig(checkpoint=checkpoint, device="cpu", work_dir=work), port=_free_port(),
                           block=False)
    assert url.startswith("http://127.0.0.1:")
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    fake = tmp_path / "fake.safetensors"
    fake.write_text("not an avatar")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.goto(url)
            page.wait_for_selector("#animate_button")
            # Animate, by video
            page.locator("#portrait input[type=file]").set_input_files(portrait)
            page.locator("#driver_video input[type=file]").set_input_files(str(driver))
            page.wait_for_selector("#driver_video video")
            page.click("#animate_button")
            got = _wait_playing(page, "#animate_result")
            assert got["src"].startswith(url) and got["src"].endswith(".mp4")
            assert abs(got["duration"] - DRIVER_FRAMES / 25) < 0.1 and got["w"] == 512 == got["h"]
            assert "Marked as synthetic" in page.locator("#animate_status").inner_text()
            page.screenshot(path=str(shots / "app_animate.png"), full_page=True)
            # Animate, by text: a forgotten text is a message in the page, not a stack trace; then it speaks
            page.locator("#driver label").filter(has_text="text").click()
            page.click("#animate_button")
            assert "type the text to say" in _toast(page, "type the text") and "Traceback" not in page.content()
            page.wait_for_timeout(800)  # the toast fades in
            page.screenshot(path=str(shots / "app_error.png"), full_page=True)
            page.locator("#speech_text textarea").fill("Hello.")
            page.click("#animate_button")
            spoken = _wait_playing(page, "#animate_result", got["src"])
            assert spoken["w"] == 512 and 0.2 < spoken["duration"] < 3
            # Personalise -> download the avatar
            page.get_by_role("tab", name="Personalise").click()
            page.locator("#photos input[type=file]").set_input_files(portrait)
            steps = page.locator("#p_steps input[type=number]")
            steps.fill("0")
            steps.press("Enter")
            page.click("#personalise_button")
            page.locator("#personalise_status", has_text="avatar of 1 photo(s), 0 steps").wait_for(timeout=120_000)
            with page.expect_download() as dl:
                page.locator("#avatar_file a").first.click()
            avatar = tmp_path / "downloaded.safetensors"
            dl.value.save_as(avatar)
            assert avatar.stat().st_size > 1000
            # Puppeteer: a file that is no avatar is answered in the page; the downloaded one drives
            page.get_by_role("tab", name="Puppeteer").click()
            page.locator("#q_video input[type=file]").set_input_files(str(driver))
            page.wait_for_selector("#q_video video")
            page.locator("#avatar_in input[type=file]").set_input_files(str(fake))
            page.click("#puppeteer_button")
            assert "fake.safetensors: not a readable safetensors file" in _toast(page, "fake.safetensors")
            page.locator("#avatar_in button[aria-label='Clear']").first.click()
            page.locator("#avatar_in input[type=file]").set_input_files(str(avatar))
            page.click("#puppeteer_button")
            driven = _wait_playing(page, "#puppeteer_result")
            assert abs(driven["duration"] - DRIVER_FRAMES / 25) < 0.1 and driven["w"] == 512
            assert "Marked as synthetic" in page.locator("#puppeteer_status").inner_text()
            page.screenshot(path=str(shots / "app_puppeteer.png"), full_page=True)
            # the uploads went to this server's own cache, which no other local user can enter
            assert (cache.stat().st_mode & 0o777) == 0o700 and list(cache.rglob("astronaut.png"))
            assert len(list(work.glob("session-*/*"))) == 4  # 2 animations, 1 avatar, 1 drive
            browser.close()
        deadline = time.monotonic() + 30  # Gradio notices the closed page by its missing heartbeat
        while list(work.glob("session-*")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(work.glob("session-*")) == [], "closing the page did not delete its results"
    finally:
        page_app.close()
    assert not cache.exists() and os.environ.get("GRADIO_TEMP_DIR") != str(cache)
