"""A real interrupt (Ctrl-C, SIGTERM) told apart from a KeyboardInterrupt or SystemExit that a user's module raises.

While a run watches (``install``), the SIGINT handler records the signal before raising KeyboardInterrupt (the CLI's
SIGTERM handler calls ``mark``), so a KeyboardInterrupt seen inside a trial with no signal recorded came from the
code under test: that trial's error, not the end of the run. A worker ignores SIGINT (the parent decides), so in a
worker no KeyboardInterrupt is a signal. Where nobody watches (a trial run from a notebook), a KeyboardInterrupt is
taken for a real one, as Python does. SystemExit is never a signal.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

_received: int | None = None
_watching = False
terminated = False  # a SIGTERM arrived: the command exits 143 (130 for Ctrl-C)


def mark(signum: int) -> None:
    global _received
    _received = signum


def is_signal(exc: BaseException) -> bool:
    """Whether ``exc`` (not an Exception) is a real interrupt that must end the run."""
    return isinstance(exc, KeyboardInterrupt) and (not _watching or _received is not None)


def on_sigterm() -> None:
    """A job killed with SIGTERM (CI cancelling, a scheduler) stops like Ctrl-C: a KeyboardInterrupt recorded as a
    real signal, so the command says where it stopped and exits 143. Installed first thing by the command line."""
    def handler(signum, frame):
        global terminated
        terminated = True
        mark(signum)  # a real signal: the run stops (a trial's own KeyboardInterrupt would not)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        pass


def _on_sigint(signum, frame) -> None:
    mark(signum)
    raise KeyboardInterrupt


def install() -> Callable[[], None]:
    """Watch from now on: record SIGINT (main thread; a SIGINT that is ignored stays ignored). Returns the undo."""
    global _received, _watching
    _received, _watching = None, True
    old = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if old is not None and old is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_sigint)

    def restore() -> None:
        global _watching
        _watching = False
        if old is not None and old is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, old)

    if old is None:  # not the main thread: nobody here sees signals, so none can be told apart
        _watching = False
    return restore


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM only recorded (not raised) while a stop writes where it stopped: a second Ctrl-C, or a
    scheduler's SIGTERM after a Ctrl-C, must not cut the state or the workers' shutdown short. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, old in saved.items():
        if old not in (signal.SIG_IGN, None):
            signal.signal(s, lambda signum, frame: mark(signum))
    try:
        yield
    finally:
        for s, old in saved.items():
            if old not in (signal.SIG_IGN, None):
                signal.signal(s, old)


def said_all() -> None:
    """The command has said its last word: SIGINT and SIGTERM are ignored from now on, through the interpreter's
    shutdown (workers joined, atexit, and after Python resets its own handlers), so the process ends with the
    command's own exit code rather than a silent death by a signal after the work was done and reported. A hang
    there still yields to kill -9."""
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(s, signal.SIG_IGN)
        except ValueError:  # not the main thread: an embedding application's handlers stay
            pass


def die_with_parent() -> None:
    """Linux: a child process whose parent is killed (kill -9) is sent SIGKILL too, rather than going on alone."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
