"""Executors: where trials run. The runner hands an executor trials and records each result as it comes back, so a
new executor (a cluster, say) plugs in without touching the runner.

- InProcess: trials run here, one after another (the default on CPU: no start-up cost, nothing to pickle).
- WorkerPool: N worker subprocesses. A trial that hangs past its timeout, or a worker that dies (segfault, abort,
  killed by the OS for memory), becomes a `timeout` / `crashed` row, and a fresh worker takes the next trial.
  The default on CUDA, one worker per visible GPU, each pinned to its GPU: a CUDA error poisons a process's context
  for every later trial, so a worker whose trial saw one (`cuda_error` row), or a failed CUDA-graph capture
  (`graph_error`), is retired and replaced.
- RayExecutor (mmbench.ray_executor, optional extra `ray`): one Ray task per trial on a cluster.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Protocol

from mmbench.data.registry import TaskData
from mmbench import store
from mmbench.errors import UserError
from mmbench.interrupt import die_with_parent as _die_with_parent
from mmbench.plan import Trial, task_key
from mmbench.suite import ExecutionSpec
from mmbench.trial import TrialResult, base_row, retires_worker, run_trial

OnStart = Callable[[Trial], None]
STARTED = "started"   # a worker's message: the trial it was sent begins now
READY = "ready"       # a worker's message: its imports are done (it takes no CPU until it is sent a trial)
START_LIMIT_S = 600.0  # a worker that has not begun its trial by then (imports, task data) is ended
START_FAILURES = 3     # workers in a row dying before their first trial: the pool cannot start


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
    """Trials run here, one after another. With ``train_workers`` > 1 (CPU), each trial's training is set aside:
    the costs of every trial are measured here first, alone on the machine, and then the trainings, which no timing
    can disturb any more, run in that many worker processes at one thread each (small models, most of a suite, train
    fastest so: their steps are too small for a second thread). A trial's row is written when its training is in.
    On Linux the workers are forked when first needed (TRAIN_START): for the trainings, after every timing; for
    tuning trials, before the first one.
    Tuning trials (work items of tuning.dispatch, which come before any timing) run in those workers too."""

    def __init__(self, train_workers: int = 1):
        self.train_workers = train_workers
        self._pool: WorkerPool | None = None

    def start(self) -> None:
        if self.train_workers > 1:
            self._pool = WorkerPool(self.train_workers, start_method=TRAIN_START)
            if TRAIN_START == "spawn":  # their imports overlap the caller's data loading, done by the first timing
                self._pool.start()

    def run(self, trials, tasks, on_start=None):
        if self._pool is not None:
            self._pool.wait_ready()
            trials = list(trials)
            if trials and all(t.tune_item is not None for t in trials):  # tuning trials: untimed, all to the pool
                yield from self._pool.run([replace(t, threads=1) for t in trials], tasks, on_start)
                return
        aside: dict[str, tuple[Trial, TrialResult]] = {}
        for trial in trials:
            part = replace(trial, part="costs") if self._pool is not None and _trains(trial) else trial
            if on_start:
                on_start(part)
            result = run_trial(part, tasks[task_key(trial.task)])
            if part.part is None or result.row["status"] != "ok":
                yield trial, result
            else:
                aside[trial.id] = trial, result
        # the longest first (training FLOPs per step), so that no long training starts last
        todo = sorted((replace(t, part="train", threads=1) for t, _ in aside.values()),
                      key=lambda t: -(aside[t.id][1].row.get("train_flops") or 0))
        for part, result in (self._pool.run(todo, tasks, on_start) if todo else ()):
            trial, costs = aside.pop(part.id)
            yield trial, merge_parts(costs, result, self._pool.n)
        if todo:
            self._pool.dismiss()  # they exit while the caller writes its reports

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _trains(trial: Trial) -> bool:
    """A trial whose training can be set aside: one that trains, with any tuning already done by the driver."""
    return trial.tune_item is None and trial.measure.accuracy and (trial.tune is None or trial.tuned is not None)


# base_row's columns but status and error: which trial a row is, the same in both parts
_IDENTITY = frozenset(("trial_id", "task", "method", "label", "dims", "rank", "hparams", "device"))


def merge_parts(costs: TrialResult, train: TrialResult, workers: int) -> TrialResult:
    """One trial's row from its two parts, as one process writes it: the costs part's columns, then the training's
    over them (a column both write, such as optimizer_impl, is the training's, as when it runs second in one process;
    the status is the training's if it failed); ``train_workers``: how many trainings shared the cores meanwhile
    (their train times are theirs together)."""
    row = dict(costs.row)
    row.update({k: v for k, v in train.row.items() if k not in _IDENTITY})
    row["train_workers"] = workers
    return TrialResult(row, {**costs.raw, **train.raw})


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
    slot: int = 0    # which GPU (index into the pool's gpus) or CPU worker place it holds
    trial: Trial | None = None
    deadline: float | None = None
    has_tasks: bool = False
    started: bool = False  # the worker reported that the trial began (its timeout runs from then)
    ready: bool = False    # the worker reported its imports done


# Inductor compiles in a pool of subprocesses when it may use several threads; a daemonic worker may not start
# multiprocessing children (inductor refuses for its fork/spawn pools), and a pool left alive would compete with the
# timed region. One compile thread compiles in the worker itself: slower to compile, nothing else running.
WORKER_ENV = {"TORCHINDUCTOR_COMPILE_THREADS": "1"}


@contextlib.contextmanager
def _environ(extra: dict[str, str]):
    """os.environ with ``extra`` while a worker is spawned: the child reads it before it imports torch."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# InProcess's training workers on Linux: forked when the trainings begin, after every timing. A spawned worker
# imports torch and its optimizers' torch._dynamo (~2.5 s of CPU each) while the parent prepares, on the same cores;
# a forked one has them already. Forking is safe there: no CUDA, and a child that trains at one thread never uses
# the OpenMP pool it inherits (torch's DataLoader workers rely on the same).
TRAIN_START = "fork" if sys.platform == "linux" else "spawn"


class WorkerPool:
    """Spawned workers by default: a forked child would inherit CUDA state and OpenMP thread pools it cannot use
    (InProcess forks its one-thread CPU training workers, TRAIN_START). A spawned worker starts (imports torch) as
    soon as the pool starts; every worker gets the task data with its first trial, then takes trials one at a time
    over a pipe."""

    def __init__(self, workers: int = 1, trial_timeout: float | None = None, gpus: list[str] | None = None,
                 start_method: str = "spawn"):
        """``gpus``: one CUDA_VISIBLE_DEVICES entry per worker (index or UUID): worker i sees only GPU gpus[i], so
        two timed trials never share a GPU. Needs workers <= len(gpus). ``start_method``: "fork" for CPU workers
        only."""
        import multiprocessing as mp

        self.n, self.timeout, self.gpus = max(1, workers), trial_timeout, gpus
        if gpus is not None and self.n > len(gpus):
            raise UserError(f"--workers {self.n}: one timing worker per GPU, and {len(gpus)} GPU"
                            f"{'s are' if len(gpus) != 1 else ' is'} visible; use --workers {len(gpus)} or fewer")
        self._ctx = mp.get_context(start_method)
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self.spawned = 0  # workers started over the pool's life (replacements included)
        self._early_deaths = 0  # workers in a row that died before beginning any trial (START_FAILURES: give up)

    def start(self) -> None:
        """Spawn the workers now: their imports overlap the caller's data loading."""
        while len(self._workers) < self.n:
            self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        used = {w.slot for w in self._workers}
        slot = next(i for i in range(self.n + 1) if i not in used)
        env = dict(WORKER_ENV)
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot]
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker_main, args=(child,), daemon=True, name=f"mmbench-worker-{slot}")
        for stream in (sys.stdout, sys.stderr):  # a forked child would write what is buffered here a second time
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            with _environ(env):
                p.start()
        except OSError as exc:  # no process can be made (EAGAIN, ENOMEM): the pool cannot start
            parent.close()
            child.close()
            raise UserError(f"cannot start a worker process: {exc.strerror or exc}; every trial finished so far "
                            "is recorded") from None
        child.close()
        w = _Worker(p, parent, slot)
        self._workers.append(w)
        self.spawned += 1
        return w

    def wait_ready(self, limit_s: float = START_LIMIT_S) -> None:
        """Until every idle worker has finished its imports (or died: run replaces it), so that nothing timed runs
        beside them."""
        from multiprocessing.connection import wait

        deadline = time.monotonic() + limit_s
        waiting = [w for w in self._idle if not w.ready]
        while waiting and time.monotonic() < deadline:
            for conn in wait([w.conn for w in waiting], timeout=deadline - time.monotonic()):
                w = next(w for w in waiting if w.conn is conn)
                try:
                    w.ready = conn.recv() == READY
                except (EOFError, OSError):
                    pass  # died: run() finds it dead when it sends the first trial
                waiting.remove(w)

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
                try:
                    if not w.has_tasks:
                        w.conn.send(tasks)  # blocks while a fresh worker imports torch
                        w.has_tasks = True
                    w.conn.send(pending[0].to_dict())
                except (OSError, EOFError):  # it died starting up, or idle: the trial was never its own
                    self._died_early(w)
                    continue
                w.trial = pending.popleft()
                # The trial's clock starts when the worker says it started (a fresh worker imports torch first);
                # until then only a generous start-up limit applies.
                w.deadline = time.monotonic() + START_LIMIT_S + self.timeout if self.timeout else None
                w.started = False
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
                            if msg == READY:
                                w.ready = True
                                continue
                            if msg == STARTED:
                                w.started = True
                                self._early_deaths = 0
                                w.deadline = time.monotonic() + self.timeout if self.timeout else None
                                continue
                            row, raw = msg
                            result = TrialResult(row, raw)
                    except (EOFError, OSError):
                        pass
                    if result is not None and retires_worker(result.row):
                        self._retire(w, kill=True)  # its CUDA context is poisoned: the next trial gets a fresh one
                    elif result is None and not w.started:  # died before it began the trial: not the trial's
                        busy.remove(w)
                        pending.appendleft(trial)
                        self._died_early(w)
                        continue
                    elif result is None:
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

    def _died_early(self, w: _Worker) -> None:
        """A worker that died before beginning its trial (killed while importing torch, or while idle) is
        replaced and the trial goes to the next one; START_FAILURES in a row with no trial begun is a pool that
        cannot start, which ends the run in one line."""
        w.process.join(timeout=5)
        why = signal_name(w.process.exitcode)
        self._retire(w, kill=True)
        self._early_deaths += 1
        if self._early_deaths >= START_FAILURES:
            raise UserError(f"the worker pool cannot start: {self._early_deaths} worker processes in a row died "
                            f"before beginning a trial (the last: {why}); every trial finished so far is recorded")

    def dismiss(self) -> None:
        """Tell the idle workers to exit, without waiting for them (close joins them); a later run spawns anew."""
        while self._idle:
            try:
                self._idle.pop().conn.send(None)
            except (OSError, ValueError):
                pass

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


def _exit_now() -> None:
    """A dismissed worker leaves at once: it holds nothing to save, and the interpreter's teardown with torch loaded
    (which a spawned child's normal exit runs) takes a second that the parent would wait for."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _worker_main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker has the parent's handler, which stops a run
    from mmbench import interrupt

    interrupt.install()  # so a KeyboardInterrupt here is the trial's own: SIGINT is ignored
    _die_with_parent()
    store.drop_inherited()  # forked: the parent's run lock is the parent's alone
    from mmbench.trial import warm_up

    warm_up()  # while the parent loads the data; before any trial's clock starts
    try:
        conn.send(READY)
        tasks = conn.recv()
    except (EOFError, OSError):
        return
    if tasks is None:
        _exit_now()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            _exit_now()
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
        if retires_worker(result.row):
            return  # every later CUDA call here would fail (or its allocator is mid-capture): the parent replaces it


def gpu_slots() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entry of each GPU this process can see, found without initialising CUDA here:
    NVML's view (UUIDs, in CUDA_VISIBLE_DEVICES's order when it is set), else that variable's entries, else CUDA's
    device count (indices in CUDA's own order, which is how CUDA reads them)."""
    from mmbench.measure.nvml import visible_gpus

    gpus = visible_gpus()
    if gpus:
        return [g["visible"] for g in gpus]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [e.strip() for e in env.split(",") if e.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]  # device_count does not create a context


@dataclass(frozen=True)
class ExecutorOptions:
    """The command line's say in where trials run; None (False) leaves each to the suite's ``execution`` block."""
    executor: str | None = None        # "local" or "ray"
    workers: int | None = None         # local: N worker processes (0: in this process)
    isolate: bool = False              # local: at least one worker process
    trial_timeout: float | None = None
    address: str | None = None         # ray: the cluster

    def kind(self, execution: ExecutionSpec) -> str:
        """"local" or "ray", with these options over the suite's; UserError for options that contradict it."""
        kind = self.executor or execution.executor
        if kind == "ray" and (self.workers is not None or self.isolate):
            raise UserError("--workers and --isolate are for the local executor: on Ray every trial is a task of its "
                            "own")
        if self.address is not None and kind != "ray":
            raise UserError("--address needs --executor ray (or execution: {executor: ray} in the suite)")
        return kind


def make_executor(device: str, execution: ExecutionSpec | None = None, options: ExecutorOptions | None = None,
                  gpus: list[str] | None = None) -> Executor:
    """Where the trials of a run on ``device`` run: the suite's ``execution`` block, each setting overridden by the
    command line's ``options``. Raises UserError for options that contradict each other (ExecutorOptions.kind).

    Local workers, unless set: in this process on CPU, one worker per visible GPU on CUDA (``gpus``: their
    CUDA_VISIBLE_DEVICES entries, found here when None); --isolate asks for at least one. A timeout needs a worker:
    a call hung in this process cannot be ended safely. workers 0 on CUDA runs the trials here, in the parent: its
    own choice; in this process on CPU, execution.train_workers sets the trainings aside (InProcess). "ray": a
    RayExecutor at the address ray_executor.resolve_address finds."""
    e, o = execution or ExecutionSpec(), options or ExecutorOptions()
    kind = o.kind(e)
    timeout = o.trial_timeout if o.trial_timeout is not None else e.trial_timeout
    if kind == "ray":
        from mmbench.ray_executor import RayExecutor, resolve_address

        return RayExecutor(resolve_address(o.address, e.address), timeout, timing_slots=e.timing_slots,
                           accelerator=e.accelerator, gpus=e.gpus, retries=e.retries)
    workers = o.workers if o.workers is not None else (max(1, e.workers or 0) if o.isolate else e.workers)
    if device.startswith("cuda"):
        gpus = gpu_slots() if gpus is None else gpus
        default = max(1, len(gpus))
    else:
        gpus, default = [], 0
    workers = default if workers is None else workers
    if timeout is not None:
        workers = max(1, workers)
    if workers > 0:
        return WorkerPool(workers, timeout, gpus or None)
    return InProcess(train_workers(e.train_workers) if device.startswith("cpu") else 1)


def train_workers(asked: int | str) -> int:
    """execution.train_workers resolved: "auto" is the cores other processes leave free."""
    if asked != "auto":
        return int(asked)
    from mmbench.measure.contention import free_cores

    return free_cores()[0]


def shares_cores(executor: Executor) -> bool:
    """Several local workers without a GPU each: their timed regions run at the same time on the machine's cores."""
    return isinstance(executor, WorkerPool) and executor.n > 1 and executor.gpus is None
