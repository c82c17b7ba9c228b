"""``reenact app``: a local web page to animate portraits, make avatars and drive them (Gradio).

    from reenact.app import AppConfig, launch
    launch(AppConfig(checkpoint="runs/warp"))              # http://127.0.0.1:7860, this machine only

The handlers (:mod:`reenact.app.handlers`) are plain Python over the public API and are what the tests call; the
page (:mod:`reenact.app.ui`) only lays them out. Gradio is an optional dependency (``pip install 'reenact[app]'``).
"""
from __future__ import annotations

import os

from reenact.app.handlers import AppConfig, Handlers, Outcome, UserError

__all__ = ["AppConfig", "Handlers", "Outcome", "UserError", "build_app", "launch"]


def _offline_gradio() -> None:
    # set before gradio is imported: no usage reports, no update checks, no font downloads from the page
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _import_gradio():
    _offline_gradio()
    try:
        import gradio  # noqa: PLC0415
    except ImportError as e:
        from reenact.errors import ReenactError

        raise ReenactError("the web app needs Gradio: pip install 'reenact[app]'") from e
    return gradio


def theme():
    """A theme with local fonts only (the default one fetches web fonts, which an offline machine cannot)."""
    gr = _import_gradio()
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build_app(config: AppConfig | None = None, handlers: Handlers | None = None):
    """``(page, handlers)``: the Gradio Blocks, not started."""
    _import_gradio()
    from reenact.app.ui import build

    handlers = handlers or Handlers(config)
    return build(handlers), handlers


def launch(config: AppConfig | None = None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True):
    """Load the model (so a bad checkpoint fails here, not in the page), build the page and serve it.

    ``host`` defaults to this machine only; ``share`` (a public Gradio link) is off unless asked for.
    ``block=False`` returns ``(page, url)`` with the server running in the background (tests).
    """
    config = config or AppConfig()
    page, handlers = build_app(config)
    model = handlers.describe_model()  # fails early, with the CheckpointError's advice, when there is no model
    mb = int(config.max_upload_mb * 1024 * 1024)
    _, url, _ = page.launch(server_name=host, server_port=port, share=share, max_file_size=mb,
                            allowed_paths=[str(handlers.work_dir)], prevent_thread_lock=True, quiet=True,
                            ssr_mode=False, show_error=True, theme=theme(), footer_links=[])
    print(f"reenact app: {url} ({model}); outputs in {handlers.work_dir}; Ctrl-C stops it", flush=True)
    if not block:
        return page, url
    try:
        page.block_thread()
    finally:
        page.close()
        handlers.close()
    return page, url
