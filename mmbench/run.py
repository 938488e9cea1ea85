"""The Runner: load the tasks, expand the plan, measure each trial, record each result as soon as it exists."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from mmbench import data as datasets
from mmbench import fits, interrupt, profiling
from mmbench.errors import UserError
from mmbench.measure import heap
from mmbench.measure.env import environment
from mmbench.methods.registry import search_modules_in
from mmbench.plan import (Trial, check_measure_axes, expand, resolve_device, resolve_task, resolve_threads, task_key,
                          task_label)
from mmbench.store import RunDir, check_out, disown, own, owns
from mmbench.suite import Suite, locate
from mmbench.execute import Executor, ExecutorOptions, InProcess, make_executor, shares_cores
from mmbench.trial import TrialResult


class Progress(Protocol):
    def skipped(self, n: int) -> None: ...  # trials a resumed run already holds
    def start(self, trial: Trial) -> None: ...
    def done(self, trial: Trial, result: TrialResult) -> None: ...


@dataclass
class Prepared:
    """Everything checked and built before anything is written: the device (resolved here once, for every later
    stage), data per task, the trials, and the executor when one was asked for."""
    suite: Suite
    device: str
    tasks: dict[str, datasets.TaskData]  # by task_key
    trials: list[Trial]
    threads: int | None = None           # every trial's thread count (resolve_threads)
    warnings: tuple[str, ...] = ()       # said once, before the run (e.g. more threads asked than cores free)
    executor: Executor | None = None     # started; run_suite runs the trials on it (None: in this process)

    @property
    def contention_note(self) -> str | None:
        """Said before a run whose worker processes time their trials at the same time, on the same cores."""
        if self.suite.measure.latency is None or not shares_cores(self.executor):
            return None
        return (f"{self.executor.n} workers time their trials at the same time: latencies contend for the machine's "
                "cores")


def prepare(suite: Suite, device: str | None = None, executor: ExecutorOptions | None = None) -> Prepared:
    """Validate fully (datasets load, every trial's module builds on the meta device). Raises UserError.

    ``device``: overrides the suite's measure.device. ``executor``: build the run's executor (make_executor: the
    suite's execution block with these overrides) and start it, so a local pool's workers import torch while the
    data loads and the trials are checked (seconds each, in parallel rather than one after the other); it is closed
    again if anything here fails."""
    if executor is not None:
        executor.kind(suite.execution)  # options that contradict each other are refused first
    try:
        dev = resolve_device(device or suite.measure.device)
    except UserError as exc:
        raise exc.at(**locate(suite, "measure", "device")) from None
    suite_dir = Path(getattr(suite, "_source", ".")).resolve().parent  # data paths in a suite are relative to it
    search_modules_in(suite_dir)  # and its own modules are found there first (by workers too: set before they start)
    runner = None
    if executor is not None:
        runner = make_executor(dev, suite.execution, executor)
        runner.start()
    try:
        return replace(_prepare(suite, dev, suite_dir), executor=runner)
    except BaseException:
        if runner is not None:
            runner.close()
        raise


def _prepare(suite: Suite, dev: str, suite_dir: Path) -> Prepared:
    tasks: dict[str, datasets.TaskData] = {}
    counts = []
    for i, spec in enumerate(suite.task_list):
        where = ("task",) if suite.task is not None else ("tasks", i)
        try:
            data = datasets.load(spec.dataset, base_dir=suite_dir, **spec.params)
        except UserError as exc:
            if exc.key and exc.key.startswith("params."):  # a parameter of the task: point at it
                path = where + tuple(exc.key.split(".", 1))
                raise UserError(exc.message, key=".".join(map(str, path)), **locate(suite, *path)) from None
            raise exc.at(key=".".join(map(str, where)), **locate(suite, *where)) from None
        tasks[task_key(resolve_task(suite, i))] = data
        counts.append(len(data.modalities))
    threads, warnings = resolve_threads(suite.measure.threads, dev)
    trials = expand(suite, counts, dev, threads)
    _check_inputs(suite, trials, tasks)

    def method_at(t: Trial) -> dict:
        mi = next(i for i, m in enumerate(suite.methods) if m.method == t.method)
        return {"key": f"methods.{mi}", **locate(suite, "methods", mi)}

    fits.check_trials(trials, tasks, task_key, method_at)  # what cannot fit in memory fails now, not inside torch
    check_measure_axes(suite, trials)
    return Prepared(suite, dev, tasks, trials, threads, tuple(warnings + _instruction_warnings(trials)))


def _instruction_warnings(trials: list[Trial]) -> list[str]:
    """Said before a run (and by validate) when trials ask for instruction counts this machine cannot take."""
    from mmbench.measure import instructions

    asked = [t for t in trials if instructions.wanted(t)]
    why = instructions.unavailable() if asked else None
    if why:
        return [f"measure.instructions: {why}; the instruction columns of {len(asked)} trial(s) will be empty"]
    skipped = {r for t in asked if (r := instructions.skip_reason(t))}
    return [f"measure.instructions: {r}" for r in sorted(skipped)]


def _check_inputs(suite: Suite, trials: list[Trial], tasks: dict[str, datasets.TaskData]) -> None:
    """A sequence method given vector data (or the reverse) is a suite error, found before anything runs."""
    from mmbench import methods

    loss = suite.train.loss
    for i, data in enumerate(tasks.values()):
        if loss in (("mse", "l1") if data.target == "classification" else ("cross_entropy",)):
            raise UserError(f"loss '{loss}' does not fit task '{task_label(suite, i)}' ({data.target})",
                            key="train.loss", **locate(suite, "train", "loss"))
    for t in trials:
        kind, takes = tasks[task_key(t.task)].kind, methods.info(t.method).inputs
        if takes != "both" and takes != kind:
            mi = next(i for i, m in enumerate(suite.methods) if m.method == t.method)
            raise UserError(f"method '{t.method}' takes {takes} but task '{t.task_label}' provides {kind}",
                            key=f"methods.{mi}.method", **locate(suite, "methods", mi, "method"))


def _record_quietly(db: str | Path, run: RunDir) -> None:
    """An interrupted run is recorded too (compare's baselines use complete runs only); a failure to record it must
    not hide the interruption."""
    from mmbench.history import record_run

    try:
        record_run(db, run.path)
    except Exception:
        pass


class RunInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped a run after recording every finished trial; ``run`` can be resumed."""

    def __init__(self, run: RunDir, done: int, total: int, phase: str = "running trials"):
        super().__init__(f"interrupted while {phase}, after {done} of {total} trials")
        self.run, self.done, self.total, self.phase = run, done, total, phase


def reopen_for_resume(path: str | Path, suite_name: str, quick: bool, drop_damaged: bool = False) -> RunDir:
    """The run directory to resume, checked before anything in it is touched: a run of this suite, started with the
    same budget (resuming a --quick run at full budget would re-run everything and drop the quick rows)."""
    import json

    run = RunDir.reopen(path, suite_name, drop_damaged)
    try:
        started_quick = json.loads((run.path / "resolved.json").read_text()).get("quick")
    except (OSError, ValueError, AttributeError):
        started_quick = None  # an older run directory without it: nothing to check against
    if isinstance(started_quick, bool) and started_quick != quick:
        fix = "add --quick" if started_quick else "drop --quick"
        raise UserError(f"cannot resume: this run was started {'with' if started_quick else 'without'} --quick "
                        f"and would be resumed {'with' if quick else 'without'} it (a different budget); {fix}",
                        file=str(run.path))
    own(run.path)  # one writer: a run still going (or another resume) refuses this one before anything is written
    return run


def check_destination(suite: Suite, out: str | Path, db: str | Path | None = None, resume: str | Path | None = None,
                      quick: bool = False, drop_damaged: bool = False) -> tuple[Path, Path]:
    """Where a run goes: its results folder and history database (default OUT/history.sqlite), checked before
    anything loads or runs. A resumed run goes back into its own results folder, where its history database lives;
    a wrong folder, budget or damaged line, a results folder that is a file, read-only or full, and a database this
    version cannot write fail now."""
    from mmbench.history import check_writable

    if resume is not None:
        reopen_for_resume(resume, suite.name, quick, drop_damaged)
        out = Path(resume).resolve().parent.parent
    check_out(resume if resume is not None else out)
    db = Path(db) if db is not None else Path(out) / "history.sqlite"
    check_writable(db)
    return Path(out), db


def open_run(prepared: Prepared, out: str | Path, resume: str | Path | None = None,
             retry_failed: bool = False, drop_damaged: bool = False,
             quick: bool = False) -> tuple[RunDir, list[Trial]]:
    """The run directory and the trials still to measure. Resuming keeps the rows of trials still in the plan
    (a changed suite gives a changed trial a new id, so it runs again) and drops the rest, so the finished run holds
    exactly the rows one uninterrupted run would. Nothing is touched until the directory passed every check."""
    suite, trials = prepared.suite, prepared.trials
    if resume is None:
        run = RunDir.create(out, suite.name)
        return run, _with_studies(run, trials)
    run = reopen_for_resume(resume, suite.name, quick, drop_damaged)  # a damaged line: keep what precedes it, or refuse
    started = run.read_json("resolved.json").get("threads") if (run.path / "resolved.json").exists() else None
    if started is not None and started != prepared.threads and suite.measure.threads is None:
        # the free cores are read again on resume; the run keeps the count it began with, or its rows would mix two
        trials = [replace(t, threads=started) for t in trials]
        prepared.trials, prepared.threads = trials, started
    check_out(run.path)
    plan = {t.id for t in trials}
    rows = [r for r in run.rows() if r.get("trial_id") in plan]
    keep = {r["trial_id"] for r in rows if not (retry_failed and r.get("status") != "ok")}
    run.keep_only(keep)
    run.resumed()
    return run, _with_studies(run, [t for t in trials if t.id not in keep])


def _with_studies(run: RunDir, todo: list[Trial]) -> list[Trial]:
    """A tuned trial keeps its study in the run directory, so that a resumed run continues it (mmbench/tuning.py)."""
    return [replace(t, tune_dir=str(run.path / "tuning")) if t.tune is not None else t for t in todo]


def run_suite(prepared: Prepared, out: str | Path, *, suite_text: str = "", quick: bool = False,
              progress: Progress | None = None, db: str | Path | None = None, executor: Executor | None = None,
              resume: str | Path | None = None, retry_failed: bool = False, drop_damaged: bool = False) -> RunDir:
    """Run every trial (or, resuming, every trial not yet recorded) into a run directory; then record the run in
    the history database ``db`` (if given) and write its reports (report.md, report.html).

    This process owns the run directory throughout (store.own). Raises RunInterrupted on Ctrl-C or SIGTERM at any
    phase once the directory exists, after marking the run interrupted: it is ``complete`` only when every trial,
    the record and the reports were written."""
    executor = executor or prepared.executor or InProcess()
    if hasattr(executor, "check"):  # e.g. a trial no node of a cluster can run: refused before anything is written
        try:
            executor.check(prepared.trials)
        except BaseException:
            executor.close()
            raise
    run: RunDir | None = None
    total = done = 0
    phase = "opening the run directory"
    restore = interrupt.install()  # a real Ctrl-C is told apart from a KeyboardInterrupt raised by a trial
    try:
        run, todo = open_run(prepared, out, resume, retry_failed, drop_damaged, quick)
        suite, trials = prepared.suite, prepared.trials  # after open_run: a resumed run keeps its thread count
        total, done = len(trials), len(trials) - len(todo)
        phase = "writing the run's configuration"
        _write_config(run, prepared, suite_text, quick)
        if progress and done:
            progress.skipped(done)
        phase = "counting instructions"
        counts = count_instructions(run, todo, prepared, progress)  # before any timing, never beside it
        if any(t.tune is not None for t in todo):
            phase = "tuning"  # the tuning trials go through the executor; each tuned trial then reads its choice
            from mmbench.tuning import dispatch

            todo = dispatch(todo, executor, prepared.tasks, getattr(progress, "note", None))
        phase = "running trials"
        for trial, result in executor.run(todo, prepared.tasks, on_start=progress.start if progress else None):
            result.row.update(counts.columns.get(trial.id, {}))
            result.raw.update(counts.raw.get(trial.id, {}))
            profiling.save(run, result.row, result.raw)  # --profile: the trace to RUN_DIR/profiles/, if one was made
            run.append(result.row, result.raw)
            _record_nodes(run, executor)
            done += 1
            if progress:
                progress.done(trial, result)
        executor.close()  # before the reports: workers give their memory and cores back
        phase = "writing the results, the history record and the reports"
        _finish(run, db)
    except KeyboardInterrupt:
        if run is None and resume is not None and owns(resume):
            run = RunDir(resume)  # stopped while reopening it (its rows kept, its state set running): say so too
        if run is None:
            raise  # nothing written yet: the caller says so
        _stop(run, db)
        raise RunInterrupted(run, done, total, phase) from None
    except BaseException as exc:
        from mmbench.history import RecordFailed

        if run is None or isinstance(exc, RecordFailed):  # a failed record leaves a complete run
            raise
        _stop(run, db)
        if isinstance(exc, UserError) and "--resume" not in exc.message:  # e.g. a pool that cannot start
            raise UserError(f"{exc.message}; the run is marked interrupted: finish it with --resume {run.path}",
                            file=exc.file, key=exc.key, line=exc.line) from None
        raise
    finally:
        restore()
        with interrupt.deferred():  # a second Ctrl-C must not cut the workers' shutdown short
            executor.close()
        if run is not None:
            disown(run.path)
    return run


def _write_config(run: RunDir, prepared: Prepared, suite_text: str, quick: bool) -> None:
    suite, trials = prepared.suite, prepared.trials
    run.order = [t.id for t in trials]
    suite_dir = Path(getattr(suite, "_source", ".")).resolve().parent
    run.write_text("suite.yaml", suite_text)
    run.write_json("resolved.json", {"suite": suite.model_dump(), "quick": quick, "device": prepared.device,
                                     "threads": prepared.threads, "trials": [t.to_dict() for t in trials]})
    if not (run.path / "env.json").exists():  # a resumed run keeps the environment it started in
        heap.hold_for_timing()  # before the first trial, so that env.json says what the timings ran under
        run.write_json("env.json", environment(prepared.device, suite_dir))
    run.write_json("tasks.json", [
        {"label": task_label(suite, i), "modalities": d.modalities, "input_dims": d.input_dims,
         "num_classes": d.num_classes, "sizes": {"train": len(d.train), "val": len(d.val), "test": len(d.test)},
         **d.info} for i, d in enumerate(prepared.tasks.values())])


def _finish(run: RunDir, db: str | Path | None) -> None:
    """The table, the state, the record, then the reports (they say complete and show the history). A signal in
    here is caught by run_suite, which marks the run interrupted: --resume writes these again."""
    run.write_csv()
    run.set_state("complete")
    from mmbench.report import write_report  # matplotlib is loaded only once there is something to draw

    failed = None
    if db is not None:
        from mmbench.history import RecordFailed, record_run

        try:
            record_run(db, run.path)
            _record_pending(db, run)
        except RecordFailed as exc:  # a full disk, say: the run directory is complete and recordable later
            failed = exc
    write_report(run, db=db if failed is None else None)
    if failed is not None:
        raise failed


def count_instructions(run: RunDir, todo: list[Trial], prepared: Prepared, progress=None):
    """Instruction counts of the trials that ask for them, in one valgrind process for the run (measure/
    instructions.py), kept in the run directory (instructions.json) so that a resumed run counts only what is
    missing. Its environment goes into env.json."""
    import tempfile

    from mmbench.measure import instructions

    kept = instructions.Counts.from_dict(run.read_json("instructions.json")) \
        if (run.path / "instructions.json").exists() else instructions.Counts()
    need = [t for t in todo if instructions.wanted(t) and t.id not in kept.columns]
    if need:
        if progress is not None and hasattr(progress, "note"):
            progress.note(f"counting instructions of {len(need)} trial(s) under valgrind (one process, ~1 min to "
                          "start)")
        with tempfile.TemporaryDirectory(prefix="mmbench-callgrind-") as tmp:
            new = instructions.count_trials(need, prepared.tasks, Path(tmp))
        kept.columns.update(new.columns)
        kept.raw.update(new.raw)
        kept.env, kept.note = new.env or kept.env, new.note or kept.note
        kept.seconds = (kept.seconds or 0) + (new.seconds or 0)
        run.write_json("instructions.json", kept.to_dict())
        if kept.env:
            env = run.read_json("env.json")
            env["instructions"] = {**kept.env, "fingerprint": instructions.fingerprint(kept.env),
                                   "pass_s": kept.seconds}
            run.write_json("env.json", env)
        said = f"instruction counts left empty: {new.note}" if new.note else \
            f"instructions counted in {new.seconds:.0f} s" if new.seconds else None
        if said and progress is not None and hasattr(progress, "note"):
            progress.note(said)
    return kept


def _record_pending(db: str | Path, run: RunDir) -> None:
    """Earlier finished runs of this suite whose record failed (a full disk, a kill during the write)."""
    from mmbench.history import record_run, unrecorded

    try:
        paths = unrecorded(db, run.path.parent)
    except UserError:  # busy past the wait, say: this run's own record is in; the next run tries again
        return
    for path in paths:
        try:
            if path != run.path and RunDir(path).meta().get("state") in ("complete", "interrupted"):
                record_run(db, path)
        except UserError:  # a damaged old run directory must not fail this run
            continue


def _record_nodes(run: RunDir, executor: Executor) -> None:
    """A cluster executor's nodes (node id → environment) go into env.json as ``nodes`` as soon as each is first
    heard from, kept across resumes: a kill -9 loses no node that measured a recorded row."""
    envs = executor.environments() if hasattr(executor, "environments") else None
    if not envs or set(envs) <= getattr(run, "_nodes", set()):
        return
    env = run.read_json("env.json")
    nodes = env.setdefault("nodes", {})
    if not set(envs) <= set(nodes):
        nodes.update({k: v for k, v in envs.items() if k not in nodes})
        run.write_json("env.json", env)
    run._nodes = set(nodes)


def _stop(run: RunDir, db: str | Path | None) -> None:
    """The state first (a full disk may refuse the table after it: run.json is rewritten in place then), then the
    table and the record. Further signals wait until this is done: the stop must say where it stopped."""
    with interrupt.deferred():
        try:
            run.set_state("interrupted", in_place_if_full=True)
        except UserError:
            pass  # the rows written so far are the record; run.json says running, which resume treats the same
        try:
            run.write_csv()
        except UserError:
            return
        if db is not None:
            _record_quietly(db, run)
