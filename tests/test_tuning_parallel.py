"""Issue 29: tuning trials scored over several seeds (tune.seeds), and run in parallel through the run's executor
(tune.parallel; mmbench.tuning.dispatch): the driver asks and tells, the tuning trials are work items of the local
workers or Ray tasks. The choice depends on tune.parallel, never on --workers; the budget is exact; a kill -9 and a
resume run every tuning trial exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_tuning import BASE, _tune_inputs

PARALLEL = BASE.replace("  trials: 3\n", "  trials: 5\n  parallel: 2\n").replace(
    "  - method: lmf\n", "").replace("n_train: 160", "n_train: 200")


def _tuning(run) -> dict[str, list[dict]]:
    return {s["trial_id"]: s["tuning"] for s in map(json.loads, (run.path / "samples.jsonl").read_text().splitlines())}


def _run(write_suite, tmp_path, text, out, workers=None, **kw):
    from mmbench.execute import ExecutorOptions
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    prepared = prepare(load_suite(write_suite(text, f"{out}.yaml")), "cpu",
                       ExecutorOptions(workers=workers) if workers is not None else None)
    return run_suite(prepared, tmp_path / out, **kw)


def test_each_tuning_trial_is_scored_over_tune_seeds(monkeypatch):
    from mmbench.measure import seeds_together
    from mmbench.measure import train as train_mod
    from mmbench.suite import TrainSpec
    from mmbench.tuning import tune

    spec, _, hp, build_with, data = _tune_inputs(trials=3)
    spec = spec.model_copy(update={"seeds": 2})
    train = TrainSpec(epochs=2, batch_size=64, lr=0.01, seeds=[5, 7, 9])
    seeds, how = [], []
    real_fit, real_fit_seeds = train_mod.fit, seeds_together.fit_seeds
    monkeypatch.setattr(train_mod, "fit", lambda *a, **kw: seeds.append(kw["seed"]) or real_fit(*a, **kw))

    def fit_seeds(*a, **kw):
        fitted, way = real_fit_seeds(*a, **kw)
        how.append(way)
        if way.startswith("together"):
            seeds.extend(a[4])
        return fitted, way

    monkeypatch.setattr(seeds_together, "fit_seeds", fit_seeds)
    tuned = tune(spec, train, hp, build_with, data.train, data.val, target=data.target)
    assert seeds == [5, 7] * 3  # the first two of train.seeds, for every tuning trial: the budget is 3 × 2 fits
    assert how == ["together (batched)"] * 3  # trained together, as a trial's final fits are
    for t in tuned.trials:
        assert len(t["vals"]) == 2 and t["val"] == pytest.approx(sum(t["vals"]) / 2)
    assert tuned.best_val == max(t["val"] for t in tuned.trials)


def test_tune_seeds_is_at_most_the_suites_seeds_and_left_out_of_the_id_at_1(write_suite):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    def trials(text):
        return {t.method: t for t in prepare(load_suite(write_suite(text)), "cpu").trials}

    three = trials(PARALLEL.replace("  parallel: 2\n", "  parallel: 2\n  seeds: 3\n"))
    assert {t.tune.seeds for t in three.values()} == {2}  # train.seeds has two
    one, plain = trials(PARALLEL.replace("  parallel: 2\n", "  seeds: 1\n")), trials(PARALLEL.replace(
        "  parallel: 2\n", ""))
    assert {m: t.id for m, t in one.items()} == {m: t.id for m, t in plain.items()}  # the defaults: ids as before
    assert {m: t.id for m, t in three.items()} != {m: t.id for m, t in plain.items()}


def test_batches_choose_the_same_in_the_trial_and_through_workers(write_suite, tmp_path, monkeypatch):
    """tune.parallel 2 with 2 local workers: exactly `trials` tuning trials per configuration, sent to the workers
    as work items in batches of 2 (the driver's process fitted nothing), and the same choice as the driver running
    them here and as the in-trial study of the same batches (tuning.tune)."""
    from mmbench.execute import WorkerPool
    from mmbench.measure import train as train_mod

    here = _run(write_suite, tmp_path, PARALLEL, "here")
    sent: list[list] = []
    real_run = WorkerPool.run
    monkeypatch.setattr(WorkerPool, "run", lambda self, trials, *a, **kw:
                        sent.append(list(trials)) or real_run(self, sent[-1], *a, **kw))
    parent_fits = []
    real_fit = train_mod.fit
    monkeypatch.setattr(train_mod, "fit", lambda *a, **kw: parent_fits.append(1) or real_fit(*a, **kw))
    pooled = _run(write_suite, tmp_path, PARALLEL, "pooled", workers=2)
    assert parent_fits == []  # every fit, tuning and final, ran in a worker
    batches = [[t.tune_item["slot"] for t in batch] for batch in sent[:-1]]
    assert all(t.tune_item is not None for batch in sent[:-1] for t in batch)
    assert all(t.tune_item is None for t in sent[-1]) and len(sent[-1]) == 2  # then the two configurations
    assert batches == [[0, 1, 0, 1], [2, 3, 2, 3], [4, 4]]  # batches of 2 per configuration, both at once
    rows = {r["trial_id"]: r for r in here.rows()}
    assert len(rows) == 2
    samples_here, samples_pooled = _tuning(here), _tuning(pooled)
    for r in pooled.rows():
        assert r["status"] == "ok", r["error"]
        assert r["tune_trials"] == 5 and r["tune_parallel"] == 2
        assert [t["slot"] for t in samples_pooled[r["trial_id"]]] == list(range(5))
        assert r["tuned_params"] == rows[r["trial_id"]]["tuned_params"]
        assert [(t["params"], t["val"]) for t in samples_pooled[r["trial_id"]]] == \
            [(t["params"], t["val"]) for t in samples_here[r["trial_id"]]]
    monkeypatch.setattr(train_mod, "fit", real_fit)
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    prepared = prepare(load_suite(tmp_path / "here.yaml"), "cpu")
    trial = next(t for t in prepared.trials if t.method == "tfn")
    alone = run_trial(trial, next(iter(prepared.tasks.values())))  # no driver: the trial tunes itself
    assert [(t["params"], t["val"]) for t in alone.raw["tuning"]] == \
        [(t["params"], t["val"]) for t in samples_here[trial.id]]


def test_parallel_1_through_the_driver_equals_the_sequential_study(write_suite, tmp_path):
    text = PARALLEL.replace("  parallel: 2\n", "")
    run = _run(write_suite, tmp_path, text, "driver", workers=1)
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    prepared = prepare(load_suite(tmp_path / "driver.yaml"), "cpu")
    samples = _tuning(run)
    for trial in prepared.trials:
        alone = run_trial(trial, next(iter(prepared.tasks.values())))
        assert [(t["params"], t["val"]) for t in alone.raw["tuning"]] == \
            [(t["params"], t["val"]) for t in samples[trial.id]]


def test_the_test_split_never_reaches_dispatched_tuning_trials(write_suite, tmp_path, monkeypatch):
    from mmbench import tuning

    items, seen = [], []
    real_run_item, real_fit_one = tuning.run_item, tuning.fit_one
    monkeypatch.setattr(tuning, "run_item", lambda trial, data: items.append(data) or real_run_item(trial, data))
    monkeypatch.setattr(tuning, "fit_one", lambda *a, **kw: seen.append([*a, *kw.values()]) or real_fit_one(*a, **kw))
    run = _run(write_suite, tmp_path, PARALLEL, "spy")
    assert all(r["status"] == "ok" for r in run.rows())
    assert len(items) == len(seen) == 2 * 5
    for data, args in zip(items, seen):
        assert args[5] is data.train and args[6] is data.val
        assert not any(x is data.test or x is data for x in args)


def test_a_configuration_no_tuning_trial_trains_is_a_failed_row(write_suite, tmp_path):
    text = PARALLEL.replace("lr: 0.01", "lr: 1.0e+30").replace("lr: {loguniform: [0.001, 0.1]}",
                                                                "lr: {choice: [1.0e+30]}")
    run = _run(write_suite, tmp_path, text, "diverged")
    rows = run.rows()
    assert len(rows) == 2
    for r in rows:  # every tuning trial diverged: counted, then the row says why, and the suite went on
        assert r["status"] == "nan" and "every tuning trial failed" in r["error"]
        log = (run.path / "tuning" / f"{r['trial_id']}.log").read_text()
        assert log.count('"outcome"') == 5


KILL_AFTER = 3  # outcomes in the journals before the kill: some batches told, the rest not


def test_a_parallel_run_killed_mid_tuning_resumes_every_tuning_trial_once(write_suite, tmp_path):
    text = PARALLEL.replace("epochs: 2", "epochs: 12")  # a batch runs long enough for the kill to land in it
    path = write_suite(text, "killed.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", "run", str(path), "--out", str(out), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(out.glob("*/*/tuning/*.log"))
        if sum(p.read_text().count('"outcome"') for p in logs) >= KILL_AFTER:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -9, proc.stderr.read().decode()[-2000:]
    (run_dir,) = out.glob("*/*")
    killed = [p.read_text().count('"killed"') for p in (run_dir / "tuning").glob("*.log")]
    assert killed == [0, 0]  # marked only when a study is opened again
    resumed = subprocess.run([sys.executable, "-m", "mmbench", "run", str(path), "--out", str(out), "--workers", "2",
                              "--resume", str(run_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    killed = sum(p.read_text().count('"killed"') for p in (run_dir / "tuning").glob("*.log"))
    assert killed >= 1  # the kill landed inside a batch: its running tuning trials were asked again with their values
    from mmbench.store import RunDir

    run = RunDir(run_dir)
    whole = _run(write_suite, tmp_path, text, "whole")
    reference = {r["trial_id"]: r for r in whole.rows()}
    samples, ref_samples = _tuning(run), _tuning(whole)
    for r in run.rows():
        assert r["tune_trials"] == 5, r
        assert [t["slot"] for t in samples[r["trial_id"]]] == list(range(5))  # none twice, none lost
        assert r["tuned_params"] == reference[r["trial_id"]]["tuned_params"]
        assert [t["params"] for t in samples[r["trial_id"]]] == [t["params"] for t in ref_samples[r["trial_id"]]]
        assert r["acc_mean"] == reference[r["trial_id"]]["acc_mean"]


try:
    import ray
except ImportError:  # the extra is not installed
    ray = None


@pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'mmbench[ray]')")
def test_on_ray_the_tuning_trials_are_tasks(write_suite, tmp_path, monkeypatch):
    """The driver asks and tells; each tuning trial is a Ray task (the driver's process fits nothing), in batches of
    tune.parallel, and the choice is the one made in this process."""
    from mmbench.execute import ExecutorOptions
    from mmbench.measure import train as train_mod
    from mmbench.ray_executor import JOB_ENV, RayExecutor

    text = PARALLEL.replace("  - method: early\n    params: {hidden: 8}\n    tune: {space: {hidden: {int: [4, 16]}}}\n",
                            "")
    here = _run(write_suite, tmp_path, text, "here")
    sent: list[list] = []
    real_run = RayExecutor.run
    monkeypatch.setattr(RayExecutor, "run", lambda self, trials, *a, **kw:
                        sent.append(list(trials)) or real_run(self, sent[-1], *a, **kw))
    parent_fits = []
    real_fit = train_mod.fit
    monkeypatch.setattr(train_mod, "fit", lambda *a, **kw: parent_fits.append(1) or real_fit(*a, **kw))
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, runtime_env={"env_vars": JOB_ENV},
             log_to_driver=False, include_dashboard=False)  # "local": its own cluster, not one running here
    try:
        from mmbench.run import prepare, run_suite
        from mmbench.suite import load_suite

        prepared = prepare(load_suite(tmp_path / "here.yaml"), "cpu", ExecutorOptions(executor="ray"))
        on_ray = run_suite(prepared, tmp_path / "ray")
    finally:
        ray.shutdown()
    assert parent_fits == []
    assert [[t.tune_item["slot"] for t in batch] for batch in sent[:-1]] == [[0, 1], [2, 3], [4]]
    assert [t.tune_item for t in sent[-1]] == [None]
    (row,), (ref,) = on_ray.rows(), here.rows()
    assert row["status"] == "ok", row["error"]
    assert row["tune_trials"] == 5 and row["tuned_params"] == ref["tuned_params"] and row["node_id"]
    assert [t["params"] for t in _tuning(on_ray)[row["trial_id"]]] == \
        [t["params"] for t in _tuning(here)[ref["trial_id"]]]


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_pruned_studies_go_through_workers_and_choose_as_the_trial_alone(write_suite, tmp_path, monkeypatch, pruner):
    """With a pruner, the tuning trials are work items too: each is sent with the finished tuning trials of the
    batches before its own (their curves and rungs), its pruner decides in the worker, and its curve comes back to
    the driver's study. Two workers, the driver here, and the trial tuning itself stop the same tuning trials at the
    same epochs and choose the same values; the study's journal holds every curve (what a resumed pruner reads)."""
    import optuna

    from mmbench import tuning
    from mmbench.execute import WorkerPool
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    text = PARALLEL.replace("  trials: 5\n", f"  trials: 8\n  pruner: {pruner}\n").replace(
        "train: {epochs: 2,", "train: {epochs: 6,")
    here = _run(write_suite, tmp_path, text, "here")
    sent: list[list] = []
    real_run = WorkerPool.run
    monkeypatch.setattr(WorkerPool, "run", lambda self, trials, *a, **kw:
                        sent.append(list(trials)) or real_run(self, sent[-1], *a, **kw))
    pooled = _run(write_suite, tmp_path, text, "pooled", workers=2)
    items = [t for batch in sent[:-1] for t in batch]
    assert len(items) == 16 and all(t.tune_item["history"] is not None for t in items)
    # a batch's history is what was told before it: none for the first, the batches before for the later ones
    assert {len(t.tune_item["history"]) for t in items if t.tune_item["slot"] in (0, 1)} == {0}
    assert {len(t.tune_item["history"]) for t in items if t.tune_item["slot"] in (6, 7)} == {6}

    def seen(tuning_rows):
        return [(t["params"], t["state"], t["val"], t["epochs_run"]) for t in tuning_rows]

    samples_here, samples_pooled = _tuning(here), _tuning(pooled)
    prepared = prepare(load_suite(tmp_path / "here.yaml"), "cpu")
    data = next(iter(prepared.tasks.values()))
    states = []
    for trial in prepared.trials:
        assert seen(samples_pooled[trial.id]) == seen(samples_here[trial.id])
        alone = run_trial(trial, data)  # no driver: the trial tunes itself, in the same batches
        assert seen(alone.raw["tuning"]) == seen(samples_here[trial.id])
        states += [t["state"] for t in samples_here[trial.id]]
        journal = optuna.load_study(study_name=trial.id,
                                    storage=tuning.storage_at(pooled.path / "tuning" / f"{trial.id}.log"))
        finished = journal.get_trials(states=tuning.FINISHED)
        assert len(finished) == 8
        assert all(len(t.intermediate_values) == t.user_attrs["outcome"]["epochs_run"] for t in finished
                   if t.user_attrs["outcome"]["epochs_run"] is not None and not isinstance(
                       t.user_attrs["outcome"]["epochs_run"], list))
    assert "pruned" in states and "complete" in states


def test_a_pruned_tuning_trial_trains_its_seeds_together_and_stops_as_one_by_one(monkeypatch):
    """tune.seeds 2 with a pruner: the seeds of a tuning trial train together (the pruner reads the first seed's
    curve) and the study prunes, scores and chooses exactly as with the seeds one by one."""
    from mmbench.measure import seeds_together
    from mmbench.suite import TrainSpec
    from mmbench.tuning import tune

    spec, _, hp, build_with, data = _tune_inputs(trials=8, pruner="median", epochs=6)
    spec = spec.model_copy(update={"seeds": 2})
    how = []
    real = seeds_together.fit_seeds

    def fit_seeds(*a, **kw):
        fitted, way = real(*a, **kw)
        how.append(way)
        return fitted, way

    monkeypatch.setattr(seeds_together, "fit_seeds", fit_seeds)
    runs = {}
    for together in (None, False):
        train = TrainSpec(epochs=6, batch_size=64, lr=0.01, seeds=[0, 1], seeds_together=together)
        tuned = tune(spec, train, hp, build_with, data.train, data.val, target=data.target)
        runs[together] = [(t["params"], t["state"], round(t["val"], 9), t["epochs_run"]) for t in tuned.trials]
    assert how and set(how) == {"together (batched)"}  # only the seeds-together study called it
    assert "pruned" in [state for _, state, _, _ in runs[None]]
    assert runs[None] == runs[False]
