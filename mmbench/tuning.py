"""Hyperparameter tuning of one swept configuration, on validation only.

An Optuna study per configuration: each tuning trial trains the first ``tune.seeds`` of ``train.seeds`` (one by
default) on the train split and is scored by the mean of their best validation epochs, as ``fit`` selects epochs.
Tuning trial 0 runs the untuned values (the suite's `train:` and the method's parameters), so the gain of tuning is
known. Nothing here receives the test split: ``tune`` and ``run_item`` are given train and validation only.

Ask and tell happen in one process (``Study``): in the trial itself (``tune``), or in the run's driver
(``dispatch``), which sends the tuning trials of every tuned configuration through the run's executor (local
workers, Ray tasks) as work items and tells their outcomes. Tuning trials are asked in batches of ``tune.parallel``
(slots [0, P), [P, 2P), ...), each batch asked before any of it is told and told in slot order once all of it is
back, so the choice depends on ``parallel`` alone: not on --workers, nor on the order results arrive in. TPE's
constant liar scores a batch's running tuning trials as poor while it asks the rest, so a batch spreads out.

The study lives in a journal file (RUN_DIR/tuning/<trial id>.log) when the run gives a directory, so a run killed
and resumed continues the same study: tuning trials that finished (complete, pruned, or failed with an error of
their own) are kept and counted against the budget; one killed while running is marked so and run again with the
values it was given. Each suggestion comes from a sampler seeded by (seed, slot), the slot being the tuning trial's
place in the budget, so a resumed study suggests what an uninterrupted one would have.

Pruning (tune.pruner) is decided where the tuning trial runs, against the finished tuning trials its batch was asked
after: their validation curves (and the rungs successive halving promoted them to) travel with it (``Asked.history``,
``_Pruning``), and its own curve and rungs come back with its outcome and are written to the study before it is told.
Like the sampler's, a pruner's verdicts then depend on ``parallel`` alone, and pruned studies go through the executor
as every study does.
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
from mmbench.measure import seeds_together
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

    def to_dict(self) -> dict[str, Any]:
        """What a trial needs to use the choice without the study (Trial.tuned): train and hparams are re-derived."""
        return {"params": self.params, "best_val": self.best_val, "untuned_val": self.untuned_val,
                "trials": self.trials, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any], train: TrainSpec, hparams: dict[str, Any]) -> "Tuned":
        """Raises what Study.result raised when no tuning trial completed."""
        if "error" in d:
            raise (train_mod.NonFiniteLoss if d["nonfinite"] else RuntimeError)(d["error"])
        t_spec, hp = apply(d["params"], train, hparams)
        return cls(d["params"], t_spec, hp, d["best_val"], d["untuned_val"], d["trials"], d["seconds"])

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
    # a third of the budget (at most Optuna's 10) explores at random before TPE models it; constant liar (Optuna
    # 5's default, not 4's): the running tuning trials of a batch count as poor ones, so the next ask looks elsewhere
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, spec.trials // 3)),
                                      constant_liar=True)


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
    """A tuning trial with an outcome: scored, pruned, or failed by an error of its own. Not a killed one, even with
    its outcome written: a kill between Study.tell's two writes (the outcome, then the state) leaves a running trial
    with an outcome, which a resumed study marks killed and asks again with its values."""
    return ("outcome" in t.user_attrs and not t.user_attrs.get("killed")
            and (t.state in FINISHED or t.state == optuna.trial.TrialState.FAIL))


def _seconds(t: optuna.trial.FrozenTrial) -> float:
    return float(t.user_attrs["outcome"].get("seconds") or 0.0)


@dataclass
class Asked:
    slot: int
    params: dict[str, Any]
    trial: optuna.Trial
    history: list[dict[str, Any]] | None = None  # what its pruner weighs it against (None: no pruning)


_RUNG = "completed_rung_"  # Optuna's successive halving keeps each trial's promotions in these system attributes


def _history(study: optuna.Study) -> list[dict[str, Any]]:
    """The finished tuning trials as a pruner reads them (state, value, curve, rungs), plain data for a work item."""
    return [{"state": t.state.name, "value": t.value, "curve": sorted(t.intermediate_values.items()),
             "rungs": {k: v for k, v in t.system_attrs.items() if k.startswith(_RUNG)}}
            for t in study.get_trials(deepcopy=False, states=FINISHED)]


class _Pruning:
    """One tuning trial's pruner, wherever it runs: an in-memory study of the finished tuning trials it was asked after
    (``history``) and of itself. ``report`` says whether to stop after an epoch; ``curve`` and ``rungs`` are what the
    driver's study records of it."""

    def __init__(self, spec: TuneSpec, history: list[dict[str, Any]]):
        self.study = optuna.create_study(direction="maximize", pruner=_pruner(spec))
        for h in history:
            state = optuna.trial.TrialState[h["state"]]
            self.study.add_trial(optuna.trial.create_trial(
                state=state, value=h["value"] if state == optuna.trial.TrialState.COMPLETE else None,
                intermediate_values=dict(h["curve"]), system_attrs=h["rungs"]))
        self.trial = self.study.ask()
        self.curve: list[tuple[int, float]] = []

    def report(self, epoch: int, score: float) -> bool:
        self.curve.append((epoch, score))
        self.trial.report(score, epoch)
        return self.trial.should_prune()

    @property
    def rungs(self) -> dict[str, Any]:
        attrs = self.study._storage.get_trial_system_attrs(self.trial._trial_id)
        return {k: v for k, v in attrs.items() if k.startswith(_RUNG)}


class Study:
    """One configuration's study, asked and told in one process. ``storage``: the journal file, None in memory."""

    def __init__(self, spec: TuneSpec, train_spec: TrainSpec, hparams: dict[str, Any], storage: Path | None,
                 name: str):
        self.spec, self.train_spec, self.hparams = spec, train_spec, hparams
        self.store = storage_at(storage) if storage is not None else optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(study_name=name, storage=self.store, direction="maximize",
                                         load_if_exists=True, pruner=_pruner(spec))
        # A tuning trial left running (or enqueued and never asked) died with its process. It is marked failed and
        # killed (never counted), and its slot asked again with the values it had: a batch resumed half told then
        # suggests what the uninterrupted batch did (its peers are no longer running, so TPE would see otherwise).
        told = {t.user_attrs["outcome"]["slot"] for t in self._finished()}
        self.redo: dict[int, dict[str, Any]] = {}
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,
                                                               optuna.trial.TrialState.WAITING)):
            slot = t.user_attrs.get("slot")
            params = t.params if t.state == optuna.trial.TrialState.RUNNING else t.system_attrs.get("fixed_params", {})
            if slot is not None and slot not in told and set(params) == set(spec.space):
                self.redo[slot] = dict(params)
            self.store.set_trial_user_attr(t._trial_id, "killed", True)
            self.store.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)

    def _finished(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if _done(t)]

    def pending(self) -> list[int]:
        """The slots to ask now: the rest of the current batch of ``parallel`` ([] once the budget, or the time
        budget, is spent). Outcomes are told in slot order, so the told ones are always slots 0..n-1."""
        done = self._finished()
        n, p = len(done), self.spec.parallel
        if n >= self.spec.trials:
            return []
        if self.spec.timeout_s is not None and sum(map(_seconds, done)) >= self.spec.timeout_s:
            return []  # the time budget: no new tuning trial starts past it
        return list(range(n, min(self.spec.trials, (n // p + 1) * p)))

    def ask(self, slot: int) -> Asked:
        self.study.sampler = _sampler(self.spec, slot)
        fixed = self.redo.pop(slot, None)
        if fixed is None and slot == 0:
            fixed = untuned(self.spec.space, self.train_spec, self.hparams)
        if fixed is not None:
            self.study.enqueue_trial(fixed, user_attrs={"slot": slot})
        trial = self.study.ask()
        if fixed is None:
            trial.set_user_attr("slot", slot)
        history = _history(self.study) if self.spec.pruner != "none" else None
        return Asked(slot, {k: _suggest(trial, k, d) for k, d in self.spec.space.items()}, trial, history)

    def tell(self, asked: Asked, outcome: dict[str, Any]) -> None:
        """The curve and rungs its pruner saw (where one ran), one write with the outcome (slot, seconds, val(s),
        epochs_run, error), then the state."""
        outcome = dict(outcome)
        state = outcome.pop("state")
        for epoch, score in outcome.pop("curve", ()):
            asked.trial.report(score, epoch)
        for key, value in outcome.pop("rungs", {}).items():
            self.store.set_trial_system_attr(asked.trial._trial_id, key, value)
        asked.trial.set_user_attr("outcome", {"slot": asked.slot, **outcome})
        if state == "complete":
            self.study.tell(asked.trial, outcome["val"])
        else:
            self.study.tell(asked.trial, state=optuna.trial.TrialState.PRUNED if state == "pruned"
                            else optuna.trial.TrialState.FAIL)

    def result(self) -> Tuned:
        """What the study chose. Raises when no tuning trial completed (every one failed: the configuration cannot
        be trained), NonFiniteLoss when the last failure was a divergence."""
        rows = []
        for t in sorted(self._finished(), key=lambda t: t.user_attrs["outcome"]["slot"]):
            out = t.user_attrs["outcome"]
            val = t.value if t.state == optuna.trial.TrialState.COMPLETE else out.get("val")
            rows.append({"slot": out["slot"], "params": dict(t.params), "val": val, "state": t.state.name.lower(),
                         "error": out.get("error", ""), "seconds": out.get("seconds", 0.0),
                         "epochs_run": out.get("epochs_run"), "untuned": out["slot"] == 0,
                         **({"vals": out["vals"]} if "vals" in out else {})})
        complete = [r for r in rows if r["state"] == "complete"]
        if not complete:
            errors = [r["error"] for r in rows if r["error"]]
            if errors and errors[-1].startswith("NonFiniteLoss"):
                raise train_mod.NonFiniteLoss(f"every tuning trial failed: {errors[-1]}")
            raise RuntimeError(f"every tuning trial failed: {errors[-1] if errors else 'none completed'}")
        best = max(complete, key=lambda r: (r["val"], -r["slot"]))  # ties: the earliest, so trial 0 wins a tie
        t_spec, hp = apply(best["params"], self.train_spec, self.hparams)
        zero = rows[0] if rows and rows[0]["slot"] == 0 and rows[0]["state"] == "complete" else None
        return Tuned(best["params"], t_spec, hp, best["val"], zero["val"] if zero else None, rows,
                     float(sum(r["seconds"] or 0.0 for r in rows)))


def fit_one(spec: TuneSpec, train_spec: TrainSpec, hparams: dict[str, Any], params: dict[str, Any],
            build: Callable[[dict], nn.Module], train: Split, val: Split, *, target: str, device: str = "cpu",
            precision: str = "fp32", history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One tuning trial: the first ``spec.seeds`` of train.seeds trained with ``params`` on train (together where
    seeds_together can join them), scored by the mean of their best validation epochs. Its outcome: state (complete,
    pruned, fail), seconds, val, vals (one per seed, when several), epochs_run, error; with a pruner, the first seed's curve (epoch, score) and its rungs. ``history``:
    the finished tuning trials its pruner weighs it against (Asked.history; None: no pruning). Never raises for the
    configuration's own failure."""
    t_spec, hp = apply(params, train_spec, hparams)
    seeds = list(train_spec.seeds[:spec.seeds])
    curve: list[float] = []
    pruning = _Pruning(spec, history) if history is not None and spec.pruner != "none" else None

    def report(epoch: int, score: float) -> None:
        curve.append(score)
        if pruning is not None and pruning.report(epoch, score):
            raise optuna.TrialPruned()

    def seen() -> dict[str, Any]:
        return {} if pruning is None else {"curve": pruning.curve, "rungs": pruning.rungs}

    t0 = time.perf_counter()
    vals, epochs = [], []
    try:
        if len(seeds) > 1 and t_spec.seeds_together is not False:
            # the seeds together, as a trial's final fits train them; a pruner reads the first seed's curve
            fitted, _ = seeds_together.fit_seeds(lambda: build(hp), train, val, t_spec, seeds, target=target,
                                                 device=device, precision=precision,
                                                 vmap_too=bool(t_spec.seeds_together), on_epoch=report)
            infos = [info for _, info in fitted]
        else:
            infos = [train_mod.fit(lambda: build(hp), train, val, t_spec, seed=seed, target=target, device=device,
                                   precision=precision, on_epoch=report if i == 0 else None)[1]
                     for i, seed in enumerate(seeds)]
        for info in infos:
            vals.append(float(info.val_score))
            epochs.append(info.epochs_run)
    except optuna.TrialPruned:  # val: its best epoch before it was stopped
        return {"state": "pruned", "seconds": time.perf_counter() - t0, "val": max(curve), "epochs_run": len(curve),
                **seen()}
    except Exception as exc:  # this configuration diverged (NaN) or cannot run: a failed tuning trial, counted
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return {"state": "fail", "seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {first}"}
    out = {"state": "complete", "seconds": time.perf_counter() - t0, "val": sum(vals) / len(vals),
           "epochs_run": epochs[0] if len(epochs) == 1 else epochs, **seen()}
    if len(vals) > 1:
        out["vals"] = vals
    return out


def tune(spec: TuneSpec, train_spec: TrainSpec, hparams: dict[str, Any], build: Callable[[dict], nn.Module],
         train: Split, val: Split, *, target: str, device: str = "cpu", precision: str = "fp32",
         storage: Path | None = None, name: str = "study") -> Tuned:
    """Run (or continue, or only read) the study of one configuration here, one tuning trial after another, in the
    batches ``dispatch`` would send out (so the same choice), and return what it chose. ``build(hparams)`` makes a
    fresh model. Raises when no tuning trial completed (Study.result)."""
    study = Study(spec, train_spec, hparams, storage, name)
    while slots := study.pending():
        for asked in [study.ask(s) for s in slots]:
            study.tell(asked, fit_one(spec, train_spec, hparams, asked.params, build, train, val, target=target,
                                      device=device, precision=precision, history=asked.history))
    return study.result()


def run_item(trial, data) -> dict[str, Any]:
    """A work item's outcome (Trial.tune_item: one tuning trial of ``trial``), on train and validation only."""
    from mmbench.model import build

    def build_with(hp: dict) -> nn.Module:
        return build(trial.method, hp, data.input_dims, trial.dims, data.num_classes, trial.model.encoder_hidden)

    return fit_one(trial.tune, trial.train, trial.hparams, trial.tune_item["params"], build_with, data.train,
                   data.val, target=data.target, device=trial.device, precision=trial.measure.precision,
                   history=trial.tune_item.get("history"))


def dispatch(trials: list, executor, tasks: dict, note: Callable[[str], None] | None = None) -> list:
    """Tune every tuned trial in ``trials`` through ``executor``: this process holds each study (asks, tells, the
    journal), and each tuning trial is a work item (the trial with ``tune_item`` set, untimed) run wherever the
    executor runs trials. Each configuration's batch of ``tune.parallel`` is told as soon as all of it is back; the
    next batches of all configurations then go out together. Returns ``trials`` with each study's choice attached
    (Trial.tuned; for a study none of whose tuning trials completed, the error its trial then fails with)."""
    from dataclasses import replace

    studies = {t.id: Study(t.tune, t.train, t.hparams, storage_path(t.tune_dir, t.id), t.id)
               for t in trials if t.tune is not None}
    by_id = {t.id: t for t in trials}
    rounds = 0
    while True:
        out: dict[str, tuple[str, Asked]] = {}  # work item id -> (its configuration's id, what was asked)
        items = []
        for tid, study in studies.items():
            t = by_id[tid]
            for slot in study.pending():
                asked = study.ask(slot)
                work = {"slot": slot, "params": asked.params, "history": asked.history}
                item = replace(t, tune_item=work, tuned=None, measure=t.measure.model_copy(update={"latency": None}))
                out[item.id] = (tid, asked)
                items.append(item)
        if not items:
            break
        if note is not None and rounds == 0:
            note(f"tuning {len(studies)} configuration(s): {len(items)} tuning trial(s) in the first batch")
        rounds += 1
        back: dict[str, list[tuple[Asked, dict]]] = {tid: [] for tid, _ in out.values()}
        left = {tid: sum(1 for t, _ in out.values() if t == tid) for tid in back}
        for item, result in executor.run(items, tasks):  # all of them: a worker keeps the first it is sent
            tid, asked = out[item.id]
            outcome = result.row.get("tuning_outcome")
            if outcome is None:  # the executor's own failure (a crashed worker, a timeout): the tuning trial's
                outcome = {"state": "fail", "seconds": None,
                           "error": f"{result.row.get('status')}: {result.row.get('error', '')}"[:300]}
            back[tid].append((asked, outcome))
            left[tid] -= 1
            if left[tid] == 0:
                for a, o in sorted(back[tid], key=lambda x: x[0].slot):
                    studies[tid].tell(a, o)
    chosen = {}
    for tid, study in studies.items():
        try:
            chosen[tid] = study.result().to_dict()
        except Exception as exc:  # no tuning trial completed: the trial fails with this (Tuned.from_dict raises it)
            chosen[tid] = {"error": str(exc), "nonfinite": isinstance(exc, train_mod.NonFiniteLoss)}
    return [replace(t, tuned=chosen[t.id]) if t.id in chosen else t for t in trials]


def storage_path(tune_dir: str | os.PathLike | None, trial_id: str) -> Path | None:
    return None if tune_dir is None else Path(tune_dir) / f"{trial_id}.log"
