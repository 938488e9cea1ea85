"""A real interrupt (Ctrl-C, SIGTERM) told apart from a KeyboardInterrupt or SystemExit that a user's module raises.

The runner installs the handler for the length of a run; the handler records the signal before raising
KeyboardInterrupt, so a trial that sees KeyboardInterrupt (or SystemExit) without a recorded signal knows that it
came from the code under test: that trial's error, not the end of the run.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

_received: int | None = None


def received() -> int | None:
    """The signal that interrupted this run, or None."""
    return _received


def mark(signum: int) -> None:
    global _received
    _received = signum


def _on_sigint(signum, frame) -> None:
    mark(signum)
    raise KeyboardInterrupt


def install() -> Callable[[], None]:
    """Record SIGINT from now on (main thread only; elsewhere a no-op); returns what restores the old handler."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.getsignal(signal.SIGINT)
    if old is signal.SIG_IGN:  # a worker, or a parent that asked for Ctrl-C to be ignored: leave it so
        return lambda: None
    signal.signal(signal.SIGINT, _on_sigint)
    return lambda: signal.signal(signal.SIGINT, old)
