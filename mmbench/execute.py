"""Executors: where trials run. The runner hands an executor trials and records each result as it comes back, so a
new executor (a cluster, say) plugs in without touching the runner.

- InProcess: trials run here, one after another (the default on CPU: no start-up cost, nothing to pickle).
- WorkerPool: N worker subprocesses. A trial that hangs past its timeout, or a worker that dies (segfault, abort,
  killed by the OS for memory), becomes a `timeout` / `crashed` row, and a fresh worker takes the next trial.
  The default on CUDA: a CUDA error can poison a process's context for every later trial.
"""
from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from mmbench.data.registry import TaskData
from mmbench.plan import Trial, task_key
from mmbench.trial import TrialResult, base_row, run_trial

OnStart = Callable[[Trial], None]
STARTED = "started"   # a worker's message: the trial it was sent begins now
START_LIMIT_S = 600.0  # a worker that has not begun its trial by then (imports, task data) is ended


class Executor(Protocol):
    def start(self) -> None:
        """Get ready (start workers) while the caller loads data; optional."""
        ...

    def run(self, trials: Iterable[Trial], tasks: dict[str, TaskData],
            on_start: OnStart | None = None) -> Iterator[tuple[Trial, TrialResult]]:
        """Yield (trial, result) as each finishes, in any order; ``tasks``: each trial's data by task_key. Never
        raises for a failing trial."""
        ...

    def close(self) -> None:
        """Release workers; safe to call twice and after an interrupt."""
        ...


class InProcess:
    def start(self) -> None:
        pass

    def run(self, trials, tasks, on_start=None):
        for trial in trials:
            if on_start:
                on_start(trial)
            yield trial, run_trial(trial, tasks[task_key(trial.task)])

    def close(self) -> None:
        pass


def signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def failure(trial: Trial, status: str, error: str) -> TrialResult:
    result = TrialResult(base_row(trial))
    result.row.update(status=status, error=error)
    return result


@dataclass
class _Worker:
    process: object  # multiprocessing.Process
    conn: object     # the parent's end of the pipe
    trial: Trial | None = None
    deadline: float | None = None
    has_tasks: bool = False
    started: bool = False  # the worker reported that the trial began (its timeout runs from then)


class WorkerPool:
    """Spawned (not forked) workers: a forked child would inherit CUDA state and OpenMP thread pools it cannot use.
    A worker starts (imports torch) as soon as the pool starts, gets the task data with its first trial, then takes
    trials one at a time over a pipe."""

    def __init__(self, workers: int = 1, trial_timeout: float | None = None):
        import multiprocessing as mp

        self.n, self.timeout = max(1, workers), trial_timeout
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []

    def start(self) -> None:
        """Spawn the workers now: their imports overlap the caller's data loading."""
        while len(self._workers) < self.n:
            self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker_main, args=(child,), daemon=True, name="mmbench-worker")
        p.start()
        child.close()
        w = _Worker(p, parent)
        self._workers.append(w)
        return w

    def _retire(self, w: _Worker, *, kill: bool) -> None:
        if kill and w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=10)
        w.conn.close()
        self._workers.remove(w)

    def run(self, trials, tasks, on_start=None):
        from multiprocessing.connection import wait

        pending, idle = deque(trials), self._idle
        busy: list[_Worker] = []
        while pending or busy:
            while pending and len(busy) < self.n:
                w = idle.pop() if idle else self._spawn()
                if not w.has_tasks:
                    w.conn.send(tasks)
                    w.has_tasks = True
                w.trial = pending.popleft()
                # The trial's clock starts when the worker says it started (a fresh worker imports torch first);
                # until then only a generous start-up limit applies.
                w.deadline = time.monotonic() + START_LIMIT_S + self.timeout if self.timeout else None
                w.started = False
                w.conn.send(w.trial.to_dict())
                busy.append(w)
                if on_start:
                    on_start(w.trial)
            deadlines = [w.deadline for w in busy if w.deadline is not None]
            left = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=left))
            now = time.monotonic()
            for w in list(busy):
                trial, result = w.trial, None
                if w.conn in ready or w.process.sentinel in ready:
                    try:
                        if w.conn.poll():  # a result sent just before the worker died still counts
                            msg = w.conn.recv()
                            if msg == STARTED:
                                w.started = True
                                w.deadline = time.monotonic() + self.timeout if self.timeout else None
                                continue
                            row, raw = msg
                            result = TrialResult(row, raw)
                    except (EOFError, OSError):
                        pass
                    if result is None:
                        w.process.join(timeout=5)
                        result = failure(trial, "crashed", f"worker died: {signal_name(w.process.exitcode)}"
                                         + (" (SIGKILL: the OS out-of-memory killer ends processes this way)"
                                            if w.process.exitcode == -signal.SIGKILL else ""))
                        self._retire(w, kill=True)
                    else:
                        idle.append(w)
                elif w.deadline is not None and now >= w.deadline:
                    result = failure(trial, "timeout", f"no result after {self.timeout:g} s; worker ended" if w.started
                                     else f"the worker did not start the trial within {START_LIMIT_S:g} s; ended")
                    self._retire(w, kill=True)
                if result is not None:
                    busy.remove(w)
                    w.trial = w.deadline = None
                    yield trial, result

    def close(self) -> None:
        for w in list(self._workers):
            try:
                w.conn.send(None)  # an idle worker exits on its own; a busy one is killed below
            except (OSError, ValueError):
                pass
            if w.trial is not None:
                w.process.kill()
        for w in list(self._workers):
            w.process.join(timeout=5)
            self._retire(w, kill=True)


def _die_with_parent() -> None:
    """Linux: a worker whose parent is killed (kill -9) is sent SIGKILL too, rather than finishing its trial."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    from mmbench import interrupt

    interrupt.install()  # so a KeyboardInterrupt here is the trial's own: SIGINT is ignored
    _die_with_parent()
    from mmbench.trial import warm_up

    warm_up()  # while the parent loads the data; before any trial's clock starts
    try:
        tasks = conn.recv()
    except (EOFError, OSError):
        return
    if tasks is None:
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        trial = Trial.from_dict(msg)
        try:
            conn.send(STARTED)
        except (BrokenPipeError, OSError):
            return
        result = run_trial(trial, tasks[task_key(trial.task)])
        try:
            conn.send((result.row, result.raw))
        except (BrokenPipeError, OSError):
            return


def make_executor(device: str, workers: int | None = None, trial_timeout: float | None = None) -> Executor:
    """workers None: in this process on CPU, one worker on CUDA. A timeout needs a worker: a call hung in this
    process cannot be ended safely."""
    if workers is None:
        workers = 1 if device.startswith("cuda") else 0
    if trial_timeout is not None:
        workers = max(1, workers)
    return WorkerPool(workers, trial_timeout) if workers > 0 else InProcess()
