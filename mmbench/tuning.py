"""Hyperparameter tuning of one swept configuration, on validation only.

An Optuna study per configuration: each tuning trial trains ONE seed (the suite's first) on the train split and is
scored by its best validation epoch, as ``fit`` selects epochs. Tuning trial 0 runs the untuned values (the suite's
`train:` and the method's parameters), so the gain of tuning is known. Nothing here receives the test split: ``tune``
is given train and validation only.

The study lives in a journal file (RUN_DIR/tuning/<trial id>.log) when the run gives a directory, so a run killed
and resumed continues the same study: tuning trials that finished (complete, pruned, or failed with an error of
their own) are kept and counted against the budget; one killed while running is marked so and run again. Each
suggestion comes from a sampler seeded by (seed, slot), the slot being the tuning trial's place in the budget, so a
resumed study suggests what an uninterrupted one would have.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from torch import nn

from mmbench.data.registry import Split
from mmbench.measure import train as train_mod
from mmbench.suite import TUNABLE_TRAIN, TrainSpec, TuneSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per tuning trial would drown the run's progress

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class Tuned:
    """What a study chose, and every tuning trial of it in budget order."""
    params: dict[str, Any]                  # the chosen values, by space name
    train: TrainSpec                        # the suite's train block with the chosen train fields
    hparams: dict[str, Any]                 # the method's hyperparameters with the chosen ones
    best_val: float                         # the chosen tuning trial's validation score
    untuned_val: float | None               # tuning trial 0's (the untuned values); None if it failed
    trials: list[dict[str, Any]] = field(default_factory=list)  # slot, params, val, state, error, seconds
    seconds: float = 0.0                    # the tuning trials' time, summed (resumed ones included)

    @property
    def best_so_far(self) -> list[float | None]:
        """After each tuning trial, the best validation score of the complete ones so far (None until one is)."""
        out, best = [], None
        for t in self.trials:
            if t["state"] == "complete" and (best is None or t["val"] > best):
                best = t["val"]
            out.append(best)
        return out


def apply(params: dict[str, Any], train: TrainSpec, hparams: dict[str, Any]) -> tuple[TrainSpec, dict[str, Any]]:
    """The train block and hyperparameters with ``params`` set (train fields go to train, the rest to the method)."""
    over = {k: v for k, v in params.items() if k in TUNABLE_TRAIN}
    spec = TrainSpec.model_validate({**train.model_dump(), **over}) if over else train
    return spec, {**hparams, **{k: v for k, v in params.items() if k not in TUNABLE_TRAIN}}


def untuned(space: dict[str, dict], train: TrainSpec, hparams: dict[str, Any]) -> dict[str, Any]:
    """Tuning trial 0's values: each searched name at its untuned value (plan checked that the space holds it)."""
    return {k: getattr(train, k) if k in TUNABLE_TRAIN else hparams[k] for k in space}


def storage_at(path: Path) -> optuna.storages.JournalStorage:
    """The study's journal file. A kill -9 can leave a torn last line (no newline) and a held lock: the line is cut
    (its write never finished, so it never happened) and the lock dropped (one process tunes a configuration)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    lock = JournalFileOpenLock(str(path))
    Path(str(path) + ".lock").unlink(missing_ok=True)
    return optuna.storages.JournalStorage(_FlushedJournal(str(path), lock_obj=lock))


class _FlushedJournal(JournalFileBackend):
    """Optuna's journal file, each write flushed but not fsync'd: a killed process loses nothing it handed the OS
    (all a resume needs), and a tuning trial's four writes cost no disk round trip (fsync took ~6 ms each on a loaded
    machine, a third of a small tuning trial's own time); a power cut may drop the tail, whose tuning trials then run
    again."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self._lock.acquire()
        try:
            with open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
        finally:
            self._lock.release()


def _sampler(spec: TuneSpec, slot: int) -> optuna.samplers.BaseSampler:
    seed = (spec.seed * 1_000_003 + slot) % 2**32
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # a third of the budget (at most Optuna's 10) explores at random before TPE models it
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, spec.trials // 3)))


def _pruner(spec: TuneSpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, spec.trials // 4), n_warmup_steps=1)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _suggest(t: optuna.Trial, name: str, dist: dict) -> Any:
    (kind, arg), = dist.items()
    if kind == "loguniform":
        return t.suggest_float(name, arg[0], arg[1], log=True)
    if kind == "uniform":
        return t.suggest_float(name, arg[0], arg[1])
    if kind == "int":
        return t.suggest_int(name, arg[0], arg[1])
    return t.suggest_categorical(name, arg)


def _done(t: optuna.trial.FrozenTrial) -> bool:
    """A tuning trial with an outcome: scored, pruned, or failed by an error of its own (a killed one has none)."""
    return "outcome" in t.user_attrs and (t.state in FINISHED or t.state == optuna.trial.TrialState.FAIL)


def _seconds(t: optuna.trial.FrozenTrial) -> float:
    return float(t.user_attrs["outcome"].get("seconds", 0.0))


def tune(spec: TuneSpec, train_spec: TrainSpec, hparams: dict[str, Any], build: Callable[[dict], nn.Module],
         train: Split, val: Split, *, target: str, device: str = "cpu", precision: str = "fp32",
         storage: Path | None = None, name: str = "study") -> Tuned:
    """Run (or continue) the study of one configuration and return what it chose. ``build(hparams)`` makes a fresh
    model; ``storage``: the journal file, None for a study in memory. Raises the last error when no tuning trial
    completed (every one failed: the configuration cannot be trained)."""
    store = storage_at(storage) if storage is not None else optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=name, storage=store, direction="maximize", load_if_exists=True,
                                pruner=_pruner(spec))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        store.set_trial_user_attr(t._trial_id, "killed", True)  # its process died mid-trial: run it again
        store.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    seed = train_spec.seeds[0]
    last_error: BaseException | None = None
    while True:
        done = [t for t in study.get_trials(deepcopy=False) if _done(t)]
        slot = len(done)
        if slot >= spec.trials:
            break
        if spec.timeout_s is not None and sum(map(_seconds, done)) >= spec.timeout_s:
            break  # the time budget: no new tuning trial starts past it
        study.sampler = _sampler(spec, slot)
        if slot == 0 and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.enqueue_trial(untuned(spec.space, train_spec, hparams))
        trial = study.ask()
        params = {k: _suggest(trial, k, d) for k, d in spec.space.items()}
        t_spec, hp = apply(params, train_spec, hparams)
        curve: list[float] = []

        def report(epoch: int, score: float, trial=trial, curve=curve) -> None:
            curve.append(score)
            if spec.pruner != "none":
                trial.report(score, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        t0 = time.perf_counter()
        outcome: dict[str, Any] = {"slot": slot}  # one write with the result (each write is a journal line)
        try:
            _, info = train_mod.fit(lambda: build(hp), train, val, t_spec, seed=seed, target=target, device=device,
                                    precision=precision, on_epoch=report)
        except optuna.TrialPruned:
            outcome.update(seconds=time.perf_counter() - t0, val=max(curve), epochs_run=len(curve))
            trial.set_user_attr("outcome", outcome)  # val: its best epoch before it was stopped
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        except Exception as exc:  # this configuration diverged (NaN) or cannot run: a failed tuning trial, counted
            last_error = exc
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            outcome.update(seconds=time.perf_counter() - t0, error=f"{type(exc).__name__}: {first}")
            trial.set_user_attr("outcome", outcome)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        outcome.update(seconds=time.perf_counter() - t0, epochs_run=info.epochs_run)
        trial.set_user_attr("outcome", outcome)
        study.tell(trial, info.val_score)
    return _result(spec, train_spec, hparams, study, last_error)


def _result(spec: TuneSpec, train_spec: TrainSpec, hparams: dict, study: optuna.Study,
            last_error: BaseException | None) -> Tuned:
    done = sorted((t for t in study.get_trials(deepcopy=False) if _done(t)),
                  key=lambda t: t.user_attrs["outcome"]["slot"])
    rows = []
    for t in done:
        out = t.user_attrs["outcome"]
        val = t.value if t.state == optuna.trial.TrialState.COMPLETE else out.get("val")
        rows.append({"slot": out["slot"], "params": dict(t.params), "val": val, "state": t.state.name.lower(),
                     "error": out.get("error", ""), "seconds": out.get("seconds", 0.0),
                     "epochs_run": out.get("epochs_run"), "untuned": out["slot"] == 0})
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        errors = [r["error"] for r in rows if r["error"]]
        if isinstance(last_error, train_mod.NonFiniteLoss) or (errors and errors[-1].startswith("NonFiniteLoss")):
            raise train_mod.NonFiniteLoss(f"every tuning trial failed: {errors[-1] if errors else ''}")
        raise RuntimeError(f"every tuning trial failed: {errors[-1] if errors else 'none completed'}")
    best = max(complete, key=lambda r: (r["val"], -r["slot"]))  # ties: the earliest, so trial 0 wins a tie
    t_spec, hp = apply(best["params"], train_spec, hparams)
    zero = rows[0] if rows and rows[0]["slot"] == 0 and rows[0]["state"] == "complete" else None
    return Tuned(best["params"], t_spec, hp, best["val"], zero["val"] if zero else None, rows,
                 float(sum(r["seconds"] for r in rows)))


def storage_path(tune_dir: str | os.PathLike | None, trial_id: str) -> Path | None:
    return None if tune_dir is None else Path(tune_dir) / f"{trial_id}.log"
