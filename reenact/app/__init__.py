"""``reenact app``: a local web page to animate portraits, make avatars and drive them (Gradio).

    from reenact.app import AppConfig, launch
    launch(AppConfig(checkpoint="runs/warp"))              # http://127.0.0.1:7860, this machine only

The handlers (:mod:`reenact.app.handlers`) are plain Python over the public API and are what the tests call; the
page (:mod:`reenact.app.ui`) only lays them out. Gradio is an optional dependency (``pip install 'reenact[app]'``).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

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


# Host names a browser on this machine sends for a server bound to the loopback address. Any other Host header
# is refused there: a web page elsewhere could otherwise reach the local app through DNS rebinding.
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def _host_guard(host: str) -> dict:
    """FastAPI keywords that make a loopback-bound server answer only requests addressed to this machine."""
    if host not in LOCAL_NAMES:
        return {}
    from starlette.middleware import Middleware  # noqa: PLC0415  (gradio's own dependency)
    from starlette.middleware.trustedhost import TrustedHostMiddleware  # noqa: PLC0415

    return {"middleware": [Middleware(TrustedHostMiddleware, allowed_hosts=list(LOCAL_NAMES))]}


class _PrivateCache:
    """A cache folder of this server only (mode 0700) for Gradio's copies of uploads and results.

    Gradio takes its cache folder from ``GRADIO_TEMP_DIR`` when the page is built and again on each upload,
    so it is set for as long as the server runs and put back when it stops; without it every user's photos
    and videos land in the shared, world-readable ``/tmp/gradio`` and stay there."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="reenact-app-cache-"))
        self._previous = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.path)

    def close(self) -> None:
        if os.environ.get("GRADIO_TEMP_DIR") == str(self.path):
            if self._previous is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = self._previous
        shutil.rmtree(self.path, ignore_errors=True)


def launch(config: AppConfig | None = None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True):
    """Load the model (so a bad checkpoint fails here, not in the page), build the page and serve it.

    ``host`` defaults to this machine only (and then requests naming another host are refused, unless
    ``share``); ``share`` (a public Gradio link) is off unless asked for. Uploads and results stay in private
    folders of this server, deleted when it stops (also on SIGTERM, or at interpreter exit).
    ``block=False`` returns ``(page, url)`` with the server running in the background (tests); ``page.close()``
    then stops it and deletes those folders.
    """
    config = config or AppConfig()
    cache = _PrivateCache()
    handlers = None
    done = False

    def cleanup() -> None:
        nonlocal done
        if done:
            return
        done = True
        if handlers is not None:
            handlers.close()
        cache.close()

    try:
        page, handlers = build_app(config)
        model = handlers.describe_model()  # fails early, with the CheckpointError's advice, when there is no model
        mb = int(config.max_upload_mb * 1024 * 1024)
        _, url, _ = page.launch(server_name=host, server_port=port, share=share, max_file_size=mb,
                                allowed_paths=[str(handlers.work_dir)], prevent_thread_lock=True, quiet=True,
                                ssr_mode=False, show_error=True, theme=theme(), footer_links=[],
                                app_kwargs={} if share else _host_guard(host))  # a share link's Host is Gradio's
    except BaseException:
        cleanup()
        raise
    atexit.register(cleanup)
    ready = f"reenact app: {url} ({model}); outputs in {handlers.work_dir}, uploads in {cache.path}; Ctrl-C stops it"
    if not block:
        print(ready, flush=True)
        close = page.close

        def close_and_clean(*args, **kwargs):
            try:
                return close(*args, **kwargs)
            finally:
                cleanup()

        page.close = close_and_clean  # the caller's page.close() also deletes the server's folders
        return page, url
    from reenact.interrupt import sigterm_as_interrupt

    try:
        print(ready, flush=True)
        with sigterm_as_interrupt():  # systemd / docker stop: Gradio's Ctrl-C path, then the folders go
            page.block_thread()
    finally:
        page.close()
        cleanup()
    return page, url
