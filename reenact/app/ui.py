"""The Gradio page: three tabs over :class:`reenact.app.handlers.Handlers`. Layout only; the work is there."""
# No `from __future__ import annotations` here: Gradio finds the ``request: gr.Request`` parameter of a handler
# by its annotation, which must then be the class, not a string naming a module imported inside build().
import os
from pathlib import Path
from typing import TYPE_CHECKING

from reenact.app.handlers import DRIVERS, PARTS, Handlers, UserError

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

INTRO = """# reenact
Animate a portrait with another person's video, with speech, or with typed text. Everything runs on this
machine. **Every video made here is marked as synthetic**: a provenance record in the file, an invisible
watermark in the frames (and a C2PA manifest where `c2pa-python` is installed). `reenact verify FILE` reads
them back. Only animate people who agreed to it.
"""


def example_portraits(folder: str | os.PathLike | None) -> list[str]:
    """Images offered as examples: those in ``folder``, else scikit-image's astronaut when installed."""
    if folder:
        files = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        return files[:12]
    try:
        import skimage  # noqa: PLC0415

        astronaut = Path(skimage.__file__).parent / "data" / "astronaut.png"
        return [str(astronaut)] if astronaut.is_file() else []
    except ImportError:
        return []


def _progress_fn(progress: "gr.Progress"):
    def report(fraction: float, stage: str) -> None:
        progress(fraction, desc=stage)

    return report


def _session(request) -> str | None:
    return getattr(request, "session_hash", None)


def build(handlers: Handlers) -> "gr.Blocks":
    """The page. Handler errors become ``gr.Error`` messages (shown in the page, no traceback)."""
    import gradio as gr

    cfg = handlers.config
    steps_kw = dict(minimum=0, maximum=cfg.max_steps, step=10)

    def run(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except UserError as e:
            raise gr.Error(str(e), duration=None) from None

    def animate(portrait, extras, driver, video, audio, text, voice, steps, parts, paste_back, watermark,
                request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        extra_files = [getattr(f, "name", f) for f in (extras or [])]
        o = run(handlers.animate, portrait, driver=driver, video=video, audio=audio, text=text, voice=voice,
                extra_photos=extra_files, steps=steps, parts=parts, paste_back=paste_back, watermark=watermark,
                progress=_progress_fn(progress), session=_session(request))
        return str(o.path), o.message, o.verification

    def personalise(photos, steps, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        files = [getattr(f, "name", f) for f in (photos or [])]
        o = run(handlers.personalise, files, steps=steps, progress=_progress_fn(progress), session=_session(request))
        return str(o.path), o.message

    def puppeteer(avatar_file, source, video, parts, paste_back, watermark, request: gr.Request,
                  progress=gr.Progress(track_tqdm=True)):
        o = run(handlers.puppeteer, getattr(avatar_file, "name", avatar_file), video, source=source, parts=parts,
                paste_back=paste_back, watermark=watermark, progress=_progress_fn(progress),
                session=_session(request))
        return str(o.path), o.message, o.verification

    def driver_visibility(driver):
        return (gr.update(visible=driver == "video"), gr.update(visible=driver == "audio"),
                gr.update(visible=driver == "text"), gr.update(visible=driver == "text"),
                gr.update(visible=driver == "video"))

    limits = (f"Uploads up to {cfg.max_upload_mb:g} MB; driver videos and speech up to {cfg.max_seconds:g} s; "
              f"text up to {cfg.max_text_chars} characters. One job runs at a time, others wait in a queue.")
    keep = max(60, int(cfg.keep_hours * 3600))
    # Gradio's copies of uploads and results are deleted once they are keep_hours old (checked hourly at most)
    with gr.Blocks(title="reenact", delete_cache=(min(3600, keep), keep)) as page:
        gr.Markdown(INTRO)
        gr.Markdown(f"*{limits}*", elem_id="limits")
        with gr.Tab("Animate", id="animate"):
            with gr.Row():
                with gr.Column():
                    portrait = gr.Image(type="filepath", label="Portrait", sources=["upload"], elem_id="portrait")
                    examples = example_portraits(cfg.examples)
                    if examples:
                        gr.Examples(examples=[[e] for e in examples], inputs=[portrait], label="Example portraits")
                    extras = gr.File(label="More photos of the same person (optional)", file_count="multiple",
                                     file_types=["image"])
                    driver = gr.Radio(list(DRIVERS), value="video", label="Driven by", elem_id="driver")
                    video = gr.Video(label="Driver video (a face talking)", sources=["upload"], elem_id="driver_video")
                    audio = gr.Audio(label="Speech audio", type="filepath", sources=["upload"], visible=False)
                    text = gr.Textbox(label="Text to say (offline TTS)", lines=3, visible=False, elem_id="speech_text")
                    voice = gr.Dropdown(list(cfg.voices), value="en", label="Voice", visible=False)
                    with gr.Accordion("Options", open=False):
                        steps = gr.Slider(value=0, label="Fine-tuning steps (0: instant, feed-forward)", **steps_kw)
                        parts = gr.CheckboxGroup(list(PARTS), value=list(PARTS), label="What follows the driver")
                        paste = gr.Checkbox(value=True, label="Paste the face back into the portrait")
                        wm = gr.Checkbox(value=True, label="Invisible watermark (turning it off is recorded)")
                    go = gr.Button("Animate", variant="primary", elem_id="animate_button")
                with gr.Column():
                    out_video = gr.Video(label="Result", elem_id="animate_result", interactive=False)
                    status = gr.Markdown(elem_id="animate_status")
                    proof = gr.Textbox(label="Provenance (reenact verify)", lines=5, interactive=False)
            driver.change(driver_visibility, driver, [video, audio, text, voice, parts])
            go.click(animate, [portrait, extras, driver, video, audio, text, voice, steps, parts, paste, wm],
                     [out_video, status, proof], concurrency_id="jobs")
        with gr.Tab("Personalise", id="personalise"):
            with gr.Row():
                with gr.Column():
                    photos = gr.File(label="Photos of one person (1 to %d)" % cfg.max_shots, file_count="multiple",
                                     file_types=["image"], elem_id="photos")
                    # the model's own default (launch has loaded it already, to describe it)
                    p_steps = gr.Slider(value=min(handlers.reenactor().finetune_steps, cfg.max_steps),
                                        label="Fine-tuning steps", elem_id="p_steps", **steps_kw)
                    p_go = gr.Button("Make the avatar", variant="primary", elem_id="personalise_button")
                with gr.Column():
                    avatar_out = gr.File(label="Avatar file (download)", interactive=False, elem_id="avatar_file")
                    p_status = gr.Markdown(elem_id="personalise_status")
            p_go.click(personalise, [photos, p_steps], [avatar_out, p_status], concurrency_id="jobs")
        with gr.Tab("Puppeteer", id="puppeteer"):
            with gr.Row():
                with gr.Column():
                    avatar_in = gr.File(label="Avatar file (.safetensors)", file_types=[".safetensors"],
                                        elem_id="avatar_in")
                    source = gr.Image(type="filepath", label="The avatar's first photo (for pasting back)",
                                      sources=["upload"])
                    q_video = gr.Video(label="Driver video", sources=["upload"], elem_id="q_video")
                    with gr.Accordion("Options", open=False):
                        q_parts = gr.CheckboxGroup(list(PARTS), value=list(PARTS), label="What follows the driver")
                        q_paste = gr.Checkbox(value=True, label="Paste the face back into the photo")
                        q_wm = gr.Checkbox(value=True, label="Invisible watermark (turning it off is recorded)")
                    q_go = gr.Button("Drive", variant="primary", elem_id="puppeteer_button")
                with gr.Column():
                    q_out = gr.Video(label="Result", interactive=False, elem_id="puppeteer_result")
                    q_status = gr.Markdown(elem_id="puppeteer_status")
                    q_proof = gr.Textbox(label="Provenance (reenact verify)", lines=5, interactive=False)
            q_go.click(puppeteer, [avatar_in, source, q_video, q_parts, q_paste, q_wm], [q_out, q_status, q_proof],
                       concurrency_id="jobs")
    def end_session(request: gr.Request):
        handlers.end_session(_session(request))

    page.unload(end_session)  # the tab was closed: its results go
    page.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
    return page
