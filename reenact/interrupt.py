"""SIGTERM handled like Ctrl-C, so that ``timeout``, ``docker stop`` and systemd leave no half-written file.

The writers clean up on any exception (``reenact.io.atomic_path``, ``VideoWriter``): what they need is for the
signal to arrive as one. Python raises ``KeyboardInterrupt`` for SIGINT by itself; :func:`sigterm_as_interrupt`
makes SIGTERM raise :class:`Terminated`, a ``KeyboardInterrupt``, so every ``except KeyboardInterrupt`` and
``finally`` on the way out runs as it does for Ctrl-C.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["Terminated", "sigterm_as_interrupt", "EXIT_TERMINATED"]

EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM was received (raised in the main thread by :func:`sigterm_as_interrupt`)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the previous handler comes back
    after it. Outside the main thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker inherited this handler: die as a worker should
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
