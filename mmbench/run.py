"""The Runner: load the tasks, expand the plan, measure each trial, record each result as soon as it exists."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mmbench import data as datasets
from mmbench.errors import UserError
from mmbench.measure.env import environment
from mmbench.plan import Trial, check_measure_axes, expand, resolve_device, resolve_task, task_key, task_label
from mmbench.store import RunDir
from mmbench.suite import Suite, locate
from mmbench.trial import TrialResult, run_trial


class Progress(Protocol):
    def start(self, index: int, total: int, trial: Trial) -> None: ...
    def done(self, index: int, total: int, trial: Trial, result: TrialResult) -> None: ...


@dataclass
class Prepared:
    """Everything checked and built before anything is written: the device, data per task, the trials."""
    suite: Suite
    device: str
    tasks: dict[str, datasets.TaskData]  # by task_key
    trials: list[Trial]


def prepare(suite: Suite, device: str | None = None) -> Prepared:
    """Validate fully (datasets load, every trial's module builds on the meta device). Raises UserError."""
    try:
        dev = resolve_device(device or suite.measure.device)
    except UserError as exc:
        raise exc.at(**locate(suite, "measure", "device")) from None
    tasks: dict[str, datasets.TaskData] = {}
    counts = []
    suite_dir = Path(getattr(suite, "_source", ".")).resolve().parent  # data paths in a suite are relative to it
    for i, spec in enumerate(suite.task_list):
        where = ("task",) if suite.task is not None else ("tasks", i)
        try:
            data = datasets.load(spec.dataset, base_dir=suite_dir, **spec.params)
        except UserError as exc:
            raise exc.at(key=".".join(map(str, where)), **locate(suite, *where)) from None
        tasks[task_key(resolve_task(suite, i))] = data
        counts.append(len(data.modalities))
    trials = expand(suite, counts, dev)
    _check_inputs(suite, trials, tasks)
    check_measure_axes(suite, trials)
    return Prepared(suite, dev, tasks, trials)


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


def run_suite(prepared: Prepared, out: str | Path, *, suite_text: str = "", quick: bool = False,
              progress: Progress | None = None, db: str | Path | None = None) -> RunDir:
    """Run every trial into a new run directory; then record the run in the history database ``db`` (if given)
    and write its reports (report.md, report.html)."""
    suite, trials = prepared.suite, prepared.trials
    run = RunDir.create(out, suite.name)
    suite_dir = Path(getattr(suite, "_source", ".")).resolve().parent
    run.write_text("suite.yaml", suite_text)
    run.write_json("resolved.json", {"suite": suite.model_dump(), "quick": quick, "device": prepared.device,
                                     "trials": [t.to_dict() for t in trials]})
    run.write_json("env.json", environment(prepared.device, suite_dir))
    run.write_json("tasks.json", [
        {"label": task_label(suite, i), "modalities": d.modalities, "input_dims": d.input_dims,
         "num_classes": d.num_classes, "sizes": {"train": len(d.train), "val": len(d.val), "test": len(d.test)},
         **d.info} for i, d in enumerate(prepared.tasks.values())])
    try:
        for i, trial in enumerate(trials):
            if progress:
                progress.start(i, len(trials), trial)
            result = run_trial(trial, prepared.tasks[task_key(trial.task)])
            run.append(result.row, result.raw)
            if progress:
                progress.done(i, len(trials), trial, result)
    except BaseException:
        run.write_csv()
        run.set_state("interrupted")
        if db is not None:
            _record_quietly(db, run)
        raise
    run.write_csv()
    run.set_state("complete")
    from mmbench.report import write_report  # matplotlib is loaded only once there is something to draw

    if db is not None:
        from mmbench.history import record_run

        record_run(db, run.path)
    write_report(run, db=db)  # after the state and the record: the report says complete and shows the history
    return run
