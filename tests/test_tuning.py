"""Issue 29: every method tuned with the same budget, selected on validation only (mmbench/tuning.py).

Schema errors are one line naming the key path (exit 2); the test split never reaches tuning; a seeded sampler
chooses the same parameters twice; a study killed mid-way and resumed runs every tuning trial exactly once and
chooses what an uninterrupted one would; untuned suites keep their trial ids."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from inproc import cli, one_line_error

BASE = """\
name: tuned
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 160, n_val: 80, n_test: 80, noise: 0.4}
train: {epochs: 2, batch_size: 64, lr: 0.01, seeds: [0, 1]}
measure: {device: cpu, threads: 1, latency: null, flops: false, memory: false, retrieval: false}
sweep:
  dims: [4]
  rank: [2]
tune:
  trials: 3
  space:
    lr: {loguniform: [0.001, 0.1]}
methods:
  - method: tfn
  - method: lmf
  - method: early
    params: {hidden: 8}
    tune: {space: {hidden: {int: [4, 16]}}}
"""


def _suite(**swap: str) -> str:
    text = BASE
    for old, new in swap.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


SCHEMA_ERRORS = {
    "empty_range": (_suite(**{"lr: {loguniform: [0.001, 0.1]}": "lr: {uniform: [0.1, 0.01]}"}),
                    "tune.space.lr", "empty range"),
    "log_bound_not_positive": (_suite(**{"[0.001, 0.1]": "[0.0, 0.1]"}), "tune.space.lr", "above 0"),
    "unknown_hyperparameter": (_suite(**{"{hidden: {int: [4, 16]}}": "{heads: {int: [1, 4]}}"}),
                               "methods.2.tune.space.heads", "no hyperparameter 'heads'"),
    "unknown_suite_level_name": (_suite(**{"lr: {loguniform": "lrr: {loguniform"}), "tune.space.lrr",
                                 "did you mean 'lr'"),
    "budget_zero": (_suite(**{"trials: 3": "trials: 0"}), "tune.trials", "greater than 0"),
    "seeds_zero": (_suite(**{"trials: 3": "trials: 3\n  seeds: 0"}), "tune.seeds", "greater than 0"),
    "parallel_zero": (_suite(**{"tune: {space: {hidden": "tune: {parallel: 0, space: {hidden"}),
                      "methods.2.tune.parallel", "greater than 0"),
    "swept_rank": (_suite(**{"lr: {loguniform: [0.001, 0.1]}": "rank: {int: [1, 4]}"}), "tune.space.rank",
                   "sweep axis"),
    "swept_dims_on_a_method": (_suite(**{"{hidden: {int: [4, 16]}}": "{dims: {choice: [4, 8]}}"}),
                               "methods.2.tune.space.dims", "sweep axis"),
    "not_a_distribution": (_suite(**{"{loguniform: [0.001, 0.1]}": "{normal: [0.0, 1.0]}"}), "tune.space.lr",
                           "a distribution is one of"),
    "untuned_value_outside": (_suite(**{"lr: 0.01": "lr: 0.3"}), "tune.space.lr", "outside"),
    "float_range_for_an_int": (_suite(**{"{int: [4, 16]}": "{uniform: [4, 16]}"}), "methods.2.tune.space.hidden",
                               "must be int"),
    "no_untuned_value": (_suite(**{"    params: {hidden: 8}\n": ""}), "methods.2.tune.space.hidden", "None"),
    "needs_accuracy": (_suite(**{"retrieval: false}": "retrieval: false, accuracy: false}"}), "tune",
                       "needs measure.accuracy"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_ERRORS))
def test_bad_tune_blocks_are_one_line_naming_the_key(case, write_suite, capsys, monkeypatch):
    text, key, message = SCHEMA_ERRORS[case]
    code, _, err = cli(capsys, monkeypatch, "validate", write_suite(text))
    assert code == 2 and one_line_error(err), err
    assert f": {key}: " in err and message in err, err


def test_the_space_is_resolved_per_method_and_ids_change_only_for_tuned_suites(write_suite):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    tuned = prepare(load_suite(write_suite(BASE)), "cpu").trials
    spaces = {t.method: sorted(t.tune.space) for t in tuned}
    assert spaces == {"tfn": ["lr"], "lmf": ["lr"], "early": ["hidden", "lr"]}
    assert {t.tune.trials for t in tuned} == {3}
    own = prepare(load_suite(write_suite(BASE.replace("tune: {space: {hidden:", "tune: {trials: 5, sampler: random, "
                                                      "space: {hidden:"), "own.yaml")), "cpu").trials
    assert {t.method: (t.tune.trials, t.tune.sampler) for t in own} == {"tfn": (3, "tpe"), "lmf": (3, "tpe"),
                                                                        "early": (5, "random")}
    quick = prepare(load_suite(write_suite(BASE + "quick: {tune: {trials: 2}}\n", "quick.yaml"), quick=True),
                    "cpu").trials
    assert {t.tune.trials for t in quick} == {2}
    untuned_text = BASE.split("tune:\n  trials")[0] + "methods:\n  - method: tfn\n  - method: lmf\n" \
        "  - method: early\n    params: {hidden: 8}\n"
    plain = prepare(load_suite(write_suite(untuned_text, "plain.yaml")), "cpu").trials
    assert all("tune" not in t.config() for t in plain)  # the id hashes what it hashed before tuning existed
    assert not {t.id for t in plain} & {t.id for t in tuned}  # a tuned result is another configuration's


def _task():
    from mmbench.data import load

    return load("synthetic", interaction="synergy", modalities=2, dim=4, n_train=160, n_val=80, n_test=80, noise=0.4)


def _tune_inputs(trials=4, sampler="tpe", seed=0, pruner="none", epochs=2):
    from mmbench.model import build
    from mmbench.suite import TrainSpec, TuneSpec

    data = _task()
    spec = TuneSpec(trials=trials, sampler=sampler, seed=seed, pruner=pruner,
                    space={"lr": {"loguniform": [1e-3, 1e-1]}, "rank": {"int": [1, 4]}})
    train = TrainSpec(epochs=epochs, batch_size=64, lr=0.01, seeds=[0])

    def build_with(hp):
        return build("lmf", hp, data.input_dims, (4, 4), data.num_classes, [])

    return spec, train, {"rank": 2}, build_with, data


def test_the_test_split_never_reaches_tuning(write_suite, monkeypatch):
    """Every fit a tuned trial makes (tuning and final) trains on train and selects on validation; tuning itself is
    handed no split but train and validation; test is scored once per seed of the final fits only."""
    from mmbench import tuning
    from mmbench.measure import seeds_together
    from mmbench.measure import train as train_mod
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    prepared = prepare(load_suite(write_suite(BASE)), "cpu")
    trial = next(t for t in prepared.trials if t.method == "lmf")
    data = next(iter(prepared.tasks.values()))
    fits, evaluated, tune_args = [], [], []
    real_fit, real_eval, real_tune = train_mod.fit, train_mod.evaluate_seed, tuning.tune
    real_fit_seeds = seeds_together.fit_seeds

    def spy_fit(make, train, val, spec, **kw):
        fits.append((train, val))
        return real_fit(make, train, val, spec, **kw)

    def spy_eval(model, info, test, *a, **kw):
        evaluated.append(test)
        return real_eval(model, info, test, *a, **kw)

    def spy_tune(*args, **kw):
        tune_args.extend([*args, *kw.values()])
        return real_tune(*args, **kw)

    def spy_fit_seeds(make, train, val, spec, seeds, **kw):  # the final fits, when the seeds train together
        fitted, how = real_fit_seeds(make, train, val, spec, seeds, **kw)
        fits.extend([(train, val)] * sum(f is not None for f in fitted))
        return fitted, how

    monkeypatch.setattr(train_mod, "fit", spy_fit)
    monkeypatch.setattr(train_mod, "evaluate_seed", spy_eval)
    monkeypatch.setattr(tuning, "tune", spy_tune)
    monkeypatch.setattr(seeds_together, "fit_seeds", spy_fit_seeds)
    result = run_trial(trial, data)
    assert result.row["status"] == "ok", result.row["error"]
    assert not any(a is data.test or a is data for a in tune_args)
    assert len(fits) == 3 + 2  # the budget, then the suite's two seeds
    assert all(tr is data.train and va is data.val for tr, va in fits)
    assert evaluated == [data.test, data.test]
    assert result.row["tune_trials"] == 3 and len(result.raw["tuning"]) == 3
    assert result.raw["tuning"][0]["untuned"] and result.raw["tuning"][0]["params"] == {"lr": 0.01}
    assert result.row["untuned_val"] == result.raw["tuning"][0]["val"]
    assert result.row["tuned_val"] == max(t["val"] for t in result.raw["tuning"])
    assert result.raw["tuning_best_so_far"][-1] == result.row["tuned_val"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_seeded_sampler_chooses_the_same_parameters_twice(sampler):
    from mmbench.tuning import tune

    spec, train, hp, build_with, data = _tune_inputs(trials=5, sampler=sampler)
    runs = [tune(spec, train, hp, build_with, data.train, data.val, target=data.target) for _ in range(2)]
    assert [t["params"] for t in runs[0].trials] == [t["params"] for t in runs[1].trials]
    assert runs[0].params == runs[1].params and runs[0].best_val == runs[1].best_val
    assert runs[0].trials[0]["params"] == {"lr": 0.01, "rank": 2}  # trial 0: the untuned values
    other = tune(spec.model_copy(update={"seed": 1}), train, hp, build_with, data.train, data.val, target=data.target)
    assert [t["params"] for t in other.trials][1:] != [t["params"] for t in runs[0].trials][1:]


KILLED = """\
import os, signal, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from pathlib import Path
from test_tuning import _tune_inputs
from mmbench import tuning
spec, train, hp, build_with, data = _tune_inputs(trials=6)
calls = []
def build_and_die(h):
    calls.append(1)
    if len(calls) == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-trial: the study holds it as running
    return build_with(h)
tuning.tune(spec, train, hp, build_and_die, data.train, data.val, target=data.target, storage=Path({path!r}))
"""


def test_a_killed_study_resumes_every_tuning_trial_exactly_once(tmp_path, monkeypatch):
    from mmbench import tuning
    from mmbench.measure import train as train_mod

    path = tmp_path / "tuning" / "abc.log"
    script = KILLED.format(root=str(ROOT), tests=str(ROOT / "tests"), kill_at=4, path=str(path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "torn')  # a kill during a write leaves half a line
    spec, train, hp, build_with, data = _tune_inputs(trials=6)
    fits = []
    real_fit = train_mod.fit
    monkeypatch.setattr(train_mod, "fit", lambda *a, **kw: fits.append(1) or real_fit(*a, **kw))
    resumed = tuning.tune(spec, train, hp, build_with, data.train, data.val, target=data.target, storage=path)
    assert len(fits) == 3  # slots 0-2 finished before the kill; the killed slot 3 and slots 4-5 run now
    assert [t["slot"] for t in resumed.trials] == list(range(6))
    monkeypatch.setattr(train_mod, "fit", real_fit)
    whole = tuning.tune(spec, train, hp, build_with, data.train, data.val, target=data.target)
    assert [t["params"] for t in resumed.trials] == [t["params"] for t in whole.trials]
    assert [t["val"] for t in resumed.trials] == [t["val"] for t in whole.trials]
    assert resumed.params == whole.params
    again = tuning.tune(spec, train, hp, build_with, data.train, data.val, target=data.target, storage=path)
    assert again.trials == resumed.trials  # a finished study is read, not run again


def test_pruning_stops_tuning_trials_on_the_validation_curve():
    from mmbench.tuning import tune

    spec, train, hp, build_with, data = _tune_inputs(trials=8, pruner="median", epochs=6)
    tuned = tune(spec, train, hp, build_with, data.train, data.val, target=data.target)
    states = [t["state"] for t in tuned.trials]
    assert len(states) == 8 and set(states) <= {"complete", "pruned"}
    assert "pruned" in states
    pruned = [t for t in tuned.trials if t["state"] == "pruned"]
    assert all(t["val"] is not None for t in pruned)
    assert tuned.best_val == max(t["val"] for t in tuned.trials if t["state"] == "complete")


def test_a_diverging_tuning_trial_is_counted_not_fatal():
    from mmbench.suite import TrainSpec, TuneSpec
    from mmbench.tuning import tune

    _, _, hp, build_with, data = _tune_inputs()
    spec = TuneSpec(trials=3, sampler="random", space={"lr": {"choice": [0.01, 1e30]}})
    tuned = tune(spec, TrainSpec(epochs=2, batch_size=64, lr=0.01, seeds=[0]), hp, build_with, data.train,
                 data.val, target=data.target)
    assert len(tuned.trials) == 3
    assert tuned.params == {"lr": 0.01}
    for t in tuned.trials:
        assert (t["state"] == "fail") == (t["params"]["lr"] == 1e30)


def test_a_tuned_run_resumes_its_studies(write_suite, tmp_path):
    """A trial whose row was lost (the run killed after its tuning) reads its study on --resume instead of tuning
    again: the same chosen parameters, the same tuning trials."""
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    path = write_suite(BASE.replace("  - method: lmf\n", "").replace("  - method: early\n    params: {hidden: 8}\n"
                                                                     "    tune: {space: {hidden: {int: [4, 16]}}}\n",
                                                                     ""))
    run = run_suite(prepare(load_suite(path), "cpu"), tmp_path / "out")
    (row,) = run.rows()
    logs = list((run.path / "tuning").glob("*.log"))
    assert [p.stem for p in logs] == [row["trial_id"]]
    run.keep_only(set())
    resumed = run_suite(prepare(load_suite(path), "cpu"), tmp_path / "out", resume=run.path)
    (again,) = resumed.rows()
    assert again["tuned_params"] == row["tuned_params"] and again["tune_trials"] == 3
    assert again["acc_mean"] == row["acc_mean"]
    import optuna

    from mmbench.tuning import storage_at

    study = optuna.load_study(study_name=row["trial_id"], storage=storage_at(logs[0]))
    assert len(study.get_trials()) == 3  # none was asked again


def test_the_report_shows_tuned_against_untuned_and_the_best_so_far_curve(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    text = BASE.replace("  - method: lmf\n", "").replace("    params: {hidden: 8}\n    tune: {space: {hidden: {int: "
                                                           "[4, 16]}}}\n", "    params: {hidden: 8}\n")
    run = run_suite(prepare(load_suite(write_suite(text)), "cpu"), tmp_path / "out")
    md = (run.path / "report.md").read_text()
    assert "Accuracy is tuned accuracy" in md and "### Tuning" in md
    for r in run.rows():
        section = md.split("### Tuning", 1)[1].splitlines()
        line = next(x for x in section if x.startswith(f"| {r['label']} {r['dims']} |"))
        assert f"{r['untuned_val']:.3f} → {r['tuned_val']:.3f}" in line and "3 of 3" in line
        assert f"lr={r['tuned_params']['lr']:.3g}" in line
    assert (run.path / "figures" / "synthetic-synergy-tuning-best-so-far.png").exists()
    assert (run.path / "figures" / "synthetic-synergy-tuning-lr.png").exists()
    assert "Tuning: best validation score so far" in (run.path / "report.html").read_text()


def test_a_kill_between_an_outcome_and_its_state_asks_that_slot_again(tmp_path):
    """Study.tell writes a tuning trial's outcome, then its state. Killed in between, the journal holds a running
    trial with an outcome: the resumed study asks that slot again with its values, and every later suggestion is an
    uninterrupted study's (counted as done instead, the slot was lost and the next ones suggested from a shorter
    history, as a CI run of the parallel kill test once showed)."""
    from mmbench import tuning

    spec, train, hp, build_with, data = _tune_inputs(trials=5)
    whole = tuning.tune(spec, train, hp, build_with, data.train, data.val, target=data.target)
    path = tmp_path / "tuning" / "abc.log"
    study = tuning.Study(spec, train, hp, path, "abc")
    for slot in (0, 1):
        asked = study.ask(slot)
        outcome = tuning.fit_one(spec, train, hp, asked.params, build_with, data.train, data.val, target=data.target)
        if slot == 0:
            study.tell(asked, outcome)
        else:  # the kill: the outcome written, the state not
            asked.trial.set_user_attr("outcome", {"slot": slot, **{k: v for k, v in outcome.items() if k != "state"}})
    del study
    resumed = tuning.Study(spec, train, hp, path, "abc")
    assert resumed.pending() == [1] and 1 in resumed.redo
    tuned = tuning.tune(spec, train, hp, build_with, data.train, data.val, target=data.target, storage=path)
    assert [t["slot"] for t in tuned.trials] == list(range(5))
    assert [(t["params"], t["val"], t["state"]) for t in tuned.trials] == \
        [(t["params"], t["val"], t["state"]) for t in whole.trials]
