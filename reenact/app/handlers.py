"""What the web app's buttons do, as plain Python over the public API (no Gradio here, so tests call it directly).

Each handler checks its uploads (size, duration, text length), runs the same functions the CLI runs
(``Reenactor.personalize``, ``puppeteer_video``, ``speak``), wrapped in ``reenact.provenance.using`` so every
output carries the provenance record, the C2PA manifest (where available) and the watermark, and reports
progress per stage through a ``progress(fraction, stage)`` callable. Problems reach the user as
:class:`UserError` messages with the hint they need (no face: crop closer or pass landmarks), never as a stack
trace: unexpected errors are logged on the server and summarised in one line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from reenact.options import AT_LEAST_1, DEVICE, NON_NEGATIVE, POSITIVE_FLOAT, option

if TYPE_CHECKING:  # pragma: no cover
    from reenact.api import Reenactor

log = logging.getLogger("reenact.app")

Progress = Callable[[float, str], None]
DRIVERS = ("video", "audio", "text")
_DURATION_SLACK = 0.1  # seconds: containers round durations (a 30 s clip may probe as 30.02 s)
PARTS = ("pose", "expression", "mouth", "eyes")


def _no_progress(fraction: float, stage: str) -> None:
    pass


class UserError(Exception):
    """A problem the user can fix; its message is shown in the page as it is."""


@dataclass
class AppConfig:
    """Options of ``reenact app`` (each a command-line flag).

    checkpoint: meta-learned model (None: the bundled default). device: ``auto`` (the GPU when present), ``cpu``,
    ``cuda[:N]``. max_upload_mb: largest upload. max_seconds: longest driver video or speech. max_text_chars:
    longest text for the TTS. max_pixels: largest image. max_steps / max_shots: bounds of the fine-tuning
    options. examples: folder of example portraits. concurrency: jobs run at once; queue_size: jobs that may
    wait. work_dir: where outputs are written (default: a new private temporary folder, deleted when the app
    stops); a browser session's outputs are deleted when its page is closed, any output older than keep_hours
    when a new job starts (Gradio's copies of uploads and results, in a private cache folder of the server,
    after keep_hours too).
    """

    checkpoint: str | os.PathLike | None = option(None, "meta-learned checkpoint (default: the bundled model)")
    device: str = option("auto", "auto (the GPU when present), cpu, cuda, cuda:N", type=DEVICE)
    max_upload_mb: float = option(50.0, "largest upload accepted, MB", type=POSITIVE_FLOAT)
    max_seconds: float = option(30.0, "longest driver video or speech accepted, in seconds", type=POSITIVE_FLOAT)
    max_text_chars: int = option(500, "longest text for speech", type=AT_LEAST_1)
    max_pixels: int = option(25_000_000, "largest image accepted, in pixels", type=AT_LEAST_1)
    max_steps: int = option(300, "most fine-tuning steps a job may ask for", type=NON_NEGATIVE)
    max_shots: int = option(8, "most photos a job may personalise on", type=AT_LEAST_1)
    examples: str | os.PathLike | None = option(None, "folder of example portraits offered in the page",
                                                metavar="DIR")
    concurrency: int = option(1, "jobs run at once", type=AT_LEAST_1)
    queue_size: int = option(16, "jobs that may wait", type=AT_LEAST_1)
    work_dir: str | os.PathLike | None = option(None, "where outputs are written (default: a new private "
                                                      "temporary folder, deleted when the app stops)", metavar="DIR")
    keep_hours: float = option(6.0, "outputs older than this are deleted when a new job starts",
                               type=POSITIVE_FLOAT)
    voices: Sequence[str] = option(help="comma list of eSpeak NG voices offered for text",
                                   default_factory=lambda: ("en", "en-us", "de", "fr", "es", "it"))


@dataclass
class Outcome:
    """What a handler made: the file to offer (video or avatar) and a line for the page."""

    path: Path
    message: str
    verification: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of the pipeline (benchmarks)


@contextlib.contextmanager
def friendly_errors(what: str) -> Iterator[None]:
    """Turn every failure inside into a :class:`UserError` (reenact's own errors keep their message and hint;
    anything else is logged with its traceback and summarised)."""
    from reenact.errors import ReenactError

    try:
        yield
    except UserError:
        raise
    except ReenactError as e:  # InputError, NoFaceError, CheckpointError, TTSUnavailableError, ...
        raise UserError(_strip_temp_dirs(str(e))) from None
    except (MemoryError, _torch_oom()):
        _release_gpu_memory()
        raise UserError(f"{what}: out of memory; try a shorter driver or a smaller image") from None
    except Exception as e:  # noqa: BLE001  (the page gets one line; the log gets the traceback)
        log.exception("%s failed", what)
        raise UserError(f"{what} failed unexpectedly ({type(e).__name__}); the details are in the server's log")\
            from None


def _torch_oom() -> type[BaseException]:
    """torch's CUDA out-of-memory error (a RuntimeError, so not a MemoryError); MemoryError without torch."""
    import sys

    torch = sys.modules.get("torch")  # a job that ran out of GPU memory has imported torch already
    return getattr(torch, "OutOfMemoryError", MemoryError) if torch is not None else MemoryError


def _release_gpu_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()  # the other queued job shares the GPU


def _strip_temp_dirs(message: str) -> str:
    """Upload paths are long temporary names; the user knows their file by its base name."""
    import re

    return re.sub(r"(/[^\s:'\"]*/)([^/\s:'\"]+)", lambda m: m.group(2) if "tmp" in m.group(1).lower()
                  or "gradio" in m.group(1).lower() else m.group(0), message)


class Handlers:
    """The app's actions over one loaded model (loaded on first use, shared by all jobs)."""

    def __init__(self, config: AppConfig | None = None):
        self.config = config or AppConfig()
        self._own_work = self.config.work_dir is None
        # mkdtemp makes the folder 0700: other local users cannot list or read the photos and videos in it
        self.work_dir = Path(self.config.work_dir or tempfile.mkdtemp(prefix="reenact-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._reenactor: "Reenactor | None" = None
        self._lock = threading.Lock()
        # Photos this app took as uploads for avatars: the only recorded paths the Puppeteer tab will paste into.
        # An avatar file names its photos' paths in its own (editable) metadata; trusting any such path would let
        # an uploaded file make the server read, and return, any image on its disk.
        self._personalised: set[Path] = set()

    # -- shared ---------------------------------------------------------------------------------------
    def reenactor(self) -> "Reenactor":
        with self._lock:
            if self._reenactor is None:
                from reenact.api import Reenactor

                with friendly_errors("loading the model"):
                    self._reenactor = Reenactor.load(self.config.checkpoint, device=self.config.device)
                    self._reenactor.detector  # built lazily: once here, not by two jobs at once
                log.info("model: %r", self._reenactor)
            return self._reenactor

    def describe_model(self) -> str:
        r = self.reenactor()
        size = "photo renderer, at the photo's resolution" if r.renderer == "photo" else f"{r.resolution} px"
        return (f"model {Path(r.checkpoint).name} ({size}, base {r.base_hash[:12]}) on "
                f"{str(r.device).upper()}")

    def _session_dir(self, session: str | None) -> Path:
        # a browser session's results live together, so that closing the page deletes them (end_session)
        key = "".join(c for c in (session or "") if c.isalnum())[:64] or "no-session"
        return self.work_dir / f"session-{key}"

    def _job_dir(self, session: str | None = None) -> Path:
        self._prune()
        d = self._session_dir(session) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True, mode=0o700)
        return d

    def _prune(self) -> None:
        """Delete jobs older than ``keep_hours`` (and sessions left empty by that)."""
        cutoff = time.time() - self.config.keep_hours * 3600
        for folder in self.work_dir.glob("session-*"):
            for d in list(folder.iterdir()):
                with contextlib.suppress(OSError):
                    if d.is_dir() and d.stat().st_mtime < cutoff:
                        shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def end_session(self, session: str | None) -> None:
        """The page of ``session`` was closed: delete everything made for it."""
        shutil.rmtree(self._session_dir(session), ignore_errors=True)

    def close(self) -> None:
        """Delete the work folder (when the app made it) and every result in it."""
        if self._own_work:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _provenance(self, watermark: bool, operation: str):
        from reenact.provenance import Provenance, using

        return using(Provenance(base_model=self.reenactor().base_hash, watermark=bool(watermark),
                                watermark_off_reason=None if watermark else "turned off in the app",
                                operation=operation))

    # -- checks ---------------------------------------------------------------------------------------
    def _file(self, path, what: str) -> Path:
        if path is None or (isinstance(path, str) and not path.strip()):
            raise UserError(f"{what}: nothing uploaded")
        # gradio hands over paths, or (older versions) temporary-file objects with the path in .name
        p = Path(path) if isinstance(path, (str, os.PathLike)) else Path(path.name)
        if not p.is_file():
            raise UserError(f"{what}: the upload did not arrive (upload it again)")
        mb = p.stat().st_size / 1e6
        if mb > self.config.max_upload_mb:
            raise UserError(f"{what} ({p.name}) is {mb:.1f} MB; this app accepts up to "
                            f"{self.config.max_upload_mb:g} MB")
        return p

    def _image(self, path, what: str):
        from reenact import io

        p = self._file(path, what)
        with friendly_errors(what):
            return p, io.read_image(p, max_pixels=self.config.max_pixels)

    def _video(self, path, what: str) -> Path:
        from reenact import io

        p = self._file(path, what)
        with friendly_errors(what):
            info = io.probe(p)
        if info.duration > self.config.max_seconds + _DURATION_SLACK:
            raise UserError(f"{what} ({p.name}) is {info.duration:.1f} s long; this app accepts up to "
                            f"{self.config.max_seconds:g} s (trim it first)")
        return p

    def _speech(self, audio, text, voice: str) -> dict:
        from reenact import io

        if audio is not None:
            p = self._file(audio, "speech audio")
            with friendly_errors("speech audio"):
                samples = io.read_audio(p, 16000)
            if len(samples) / 16000 > self.config.max_seconds + _DURATION_SLACK:
                raise UserError(f"speech audio ({p.name}) is {len(samples) / 16000:.1f} s long; this app accepts "
                                f"up to {self.config.max_seconds:g} s")
            return {"audio": p}
        text = (text or "").strip()
        if not text:
            raise UserError("type the text to say, or choose another driver")
        if len(text) > self.config.max_text_chars:
            raise UserError(f"the text is {len(text)} characters; this app accepts up to "
                            f"{self.config.max_text_chars}")
        return {"text": text, "voice": voice or "en"}

    def _steps(self, steps) -> int:
        s = int(steps or 0)
        if not 0 <= s <= self.config.max_steps:
            raise UserError(f"fine-tuning steps must be between 0 and {self.config.max_steps}, got {s}")
        return s

    @staticmethod
    def _options(parts):
        from puppeteer.retarget import RetargetOptions

        chosen = [p for p in (parts or []) if p in PARTS]
        if not chosen:
            raise UserError("choose at least one part that follows the driver (pose, expression, mouth, eyes)")
        return RetargetOptions(parts=RetargetOptions.parse_parts(",".join(chosen)))

    # -- actions --------------------------------------------------------------------------------------
    def animate(self, portrait, *, driver: str = "video", video=None, audio=None, text: str | None = None,
                voice: str = "en", extra_photos: Sequence = (), steps: int = 0, parts: Sequence[str] = PARTS,
                paste_back: bool = True, watermark: bool = True, progress: Progress = _no_progress,
                session: str | None = None) -> Outcome:
        """Personalise to ``portrait`` (+ ``extra_photos`` of the same person), then drive it by a ``video``,
        speech ``audio`` or ``text`` (offline TTS). Returns the mp4."""
        if driver not in DRIVERS:
            raise UserError(f"unknown driver {driver!r}: choose one of {', '.join(DRIVERS)}")
        progress(0.0, "checking the uploads")
        src, _ = self._image(portrait, "portrait")  # checked here; read again where it is used
        extras = [self._image(p, f"photo {i + 2}")[0] for i, p in enumerate(extra_photos or [])]
        if 1 + len(extras) > self.config.max_shots:
            raise UserError(f"{1 + len(extras)} photos; this app uses up to {self.config.max_shots}")
        steps = self._steps(steps)
        drv = self._video(video, "driver video") if driver == "video" else None
        speech = self._speech(audio if driver == "audio" else None, text if driver == "text" else None, voice) \
            if driver != "video" else None
        options = self._options(parts) if driver == "video" else None
        progress(0.05, "loading the model")
        r = self.reenactor()
        out = self._job_dir(session) / "animated.mp4"
        personalising = f"personalising ({steps} fine-tuning steps)" if steps else "personalising (feed-forward)"
        # paths, not pixels: errors then name the file (no face in lp_s32.jpg: ...)
        person = dict(reenactor=r, photos=[str(p) for p in extras], multiple="largest", steps=steps, progress=True)
        if driver == "video":
            from puppeteer.oneshot import animate

            progress(0.15, f"{personalising}, then driving: tracking the driver's face, rendering, writing the "
                           "video")
            with friendly_errors("animating"), self._provenance(watermark, f"app animate ({driver})"):
                _, res = animate(str(src), drv, out, crop=not paste_back, options=options, **person)
            msg = (f"{res.frames} frames at {res.fps:g} fps"
                   + (f", {res.audio_seconds:.1f} s of the driver's audio" if res.audio_seconds else "")
                   + (f"; no face in {res.held} driver frame(s), filled in" if res.held else ""))
        else:
            from puppeteer.audio.speak import speak
            from puppeteer.oneshot import personalise_portrait

            progress(0.15, personalising)
            with friendly_errors("personalising"):
                avatar = personalise_portrait(str(src), **person)[1]
            progress(0.5, "speaking: predicting the mouth from the speech, rendering, writing the video")
            with friendly_errors("animating"), self._provenance(watermark, f"app animate ({driver})"):
                res = speak(src, out, avatar=avatar, crop=not paste_back, progress=True, **speech)
            msg = f"{res.frames} frames at {res.fps:g} fps, {res.audio_seconds:.1f} s of speech"
        t = time.perf_counter()
        proof = self.verify_text(out)
        timings = {**res.timings, "verify": time.perf_counter() - t}
        progress(1.0, "done")
        return Outcome(out, f"{msg}. {self._stamp_note(watermark)}", proof, timings)

    def personalise(self, photos: Sequence, *, steps: int | None = None, progress: Progress = _no_progress,
                    session: str | None = None) -> Outcome:
        """Photos of one person -> an avatar file (``.safetensors``) to download (``steps`` None: the
        model's default)."""
        progress(0.0, "checking the uploads")
        photos = [p for p in (photos or []) if p is not None]
        if not photos:
            raise UserError("upload one or more photos of the person")
        if len(photos) > self.config.max_shots:
            raise UserError(f"{len(photos)} photos; this app uses up to {self.config.max_shots}")
        paths = [self._image(p, f"photo {i + 1}")[0] for i, p in enumerate(photos)]
        progress(0.1, "loading the model")
        r = self.reenactor()
        steps = self._steps(r.finetune_steps if steps is None else steps)
        progress(0.2, f"personalising ({steps} fine-tuning steps)" if steps else "personalising (feed-forward)")
        with friendly_errors("personalising"):
            # paths, not pixels: the avatar records where its photos are, for pasting back later
            avatar = r.personalize([str(p) for p in paths], steps=steps, multiple="largest", progress=True)
            out = avatar.save(self._job_dir(session) / "avatar.safetensors")
        with self._lock:
            self._personalised.update(Path(p).resolve() for p in paths)
        progress(1.0, "done")
        kb = out.stat().st_size / 1024
        return Outcome(out, f"avatar of {len(paths)} photo(s), {steps} steps, {kb:.0f} KB, for base model "
                            f"{r.base_hash[:12]}. Keep the first photo: the Puppeteer tab pastes the face back "
                            "into it.")

    def puppeteer(self, avatar_file, video, *, source=None, parts: Sequence[str] = PARTS, paste_back: bool = True,
                  watermark: bool = True, progress: Progress = _no_progress, session: str | None = None) -> Outcome:
        """Drive an avatar file with a driver video; paste back into ``source`` (the avatar's first photo)."""
        progress(0.0, "checking the uploads")
        av_path = self._file(avatar_file, "avatar file")
        drv = self._video(video, "driver video")
        options = self._options(parts)
        into = None
        if paste_back:
            if source is not None:
                into = self._image(source, "the avatar's photo")[1]
        progress(0.1, "loading the model and the avatar")
        r = self.reenactor()
        with friendly_errors("opening the avatar"):
            avatar = r.load_avatar(av_path)
        if paste_back and into is None and avatar.renders_photo:
            into = avatar.photos[0]  # a photo avatar carries its photo in the file
        if paste_back and into is None:
            recorded = Path(avatar.sources[0].name).resolve()
            with self._lock:
                known = recorded in self._personalised
            if not (known and recorded.is_file()):
                raise UserError("pasting the face back needs the photo the avatar was made from: upload it, or "
                                "untick 'paste back' to get the face crop only")
            into = self._image(recorded, "the avatar's photo")[1]
        out = self._job_dir(session) / "puppeteered.mp4"
        progress(0.3, "driving: tracking the driver's face, rendering, writing the video")
        with friendly_errors("driving the avatar"), self._provenance(watermark, "app puppeteer"):
            from puppeteer.drive import puppeteer_video

            res = puppeteer_video(avatar, drv, out, into=into, options=options, detector=r.detector, progress=True)
        progress(1.0, "done")
        held = f"; no face in {res.held} driver frame(s), filled in" if res.held else ""
        return Outcome(out, f"{res.frames} frames at {res.fps:g} fps{held}. {self._stamp_note(watermark)}",
                       self.verify_text(out))

    @staticmethod
    def _stamp_note(watermark: bool) -> str:
        return ("Marked as synthetic: provenance record, watermark" if watermark
                else "Marked as synthetic in its provenance record; watermark turned off (recorded)")

    @staticmethod
    def verify_text(path: Path) -> str:
        from reenact.provenance.verify import verify

        with friendly_errors("verifying"):
            return verify(path, max_frames=16).describe().replace(str(path), path.name, 1)
