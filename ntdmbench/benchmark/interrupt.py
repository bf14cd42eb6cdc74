"""Ctrl-C that is never swallowed: a SIGINT is remembered, so the harness's broad ``except Exception``
blocks (a failed sample, a failed suite row) re-raise it as ``KeyboardInterrupt`` even when the library
it interrupted turned it into another error (a C++ extension wraps it as a ``RuntimeError``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_requested = False


def _on_sigint(signum: int, frame: object) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembering_sigint() -> Iterator[None]:
    """Install the remembering SIGINT handler for the duration (main thread only; else a no-op)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = False
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def reraise_if_interrupted() -> None:
    """Call in an ``except Exception`` block: a Ctrl-C that arrived meanwhile wins over recording the error."""
    if _requested:
        raise KeyboardInterrupt
