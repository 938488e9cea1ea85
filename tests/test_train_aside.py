"""Trainings set aside (execution.train_workers): every trial's costs are measured here first, then the trainings run
in worker processes; the rows are those of trials trained in their turn, and a training that dies costs its own
trial only."""
import json
import sys

import psutil
import pytest

from mmbench.execute import InProcess
from mmbench.run import prepare, run_suite
from mmbench.suite import load_suite

SUITE = """\
name: aside
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 300, n_val: 100, n_test: 100, noise: 0.3}
train: {epochs: 3, batch_size: 32, seeds: [0, 1]}
measure:
  device: cpu
  threads: 1
  latency: {batch_sizes: [4], max_time_s: 0.01, min_samples: 3, warmup: 1, min_block_ms: 0.1}
sweep:
  dims: [4]
methods:
  - method: early
  - method: tfn
  - method: lmf
    params: {rank: 2}
  - method: tests.faulty:Faulty
    sweep: {fault: [FAULT]}
"""


class _Parts:
    """A progress display that writes down which part of which trial started, in order."""
    def __init__(self):
        self.started = []
        self.children = []
        self.before = {p.pid for p in psutil.Process().children()}

    def skipped(self, n):
        pass

    def start(self, trial):
        self.started.append(trial.part)
        # worker processes alive as the part starts (not children an earlier test left, such as a resource tracker)
        self.children.append(len({p.pid for p in psutil.Process().children()} - self.before))

    def done(self, trial, result):
        pass


def _run(write_suite, out, executor, fault="none", progress=None, text=None):
    prepared = prepare(load_suite(write_suite(text or SUITE.replace("FAULT", fault), "run.yaml")))
    executor.start()
    try:
        run = run_suite(prepared, out, executor=executor, progress=progress)
    finally:
        executor.close()
    samples = {json.loads(x)["trial_id"]: json.loads(x) for x in (run.path / "samples.jsonl").read_text().splitlines()}
    return {r["trial_id"]: r for r in run.rows()}, samples


def test_trainings_set_aside_give_the_rows_of_trials_trained_in_their_turn(write_suite, tmp_path):
    here, here_samples = _run(write_suite, tmp_path / "here", InProcess())
    parts = _Parts()
    aside, aside_samples = _run(write_suite, tmp_path / "aside", InProcess(train_workers=2), progress=parts)
    assert set(aside) == set(here) and len(here) == 4
    assert parts.started == ["costs"] * 4 + ["train"] * 4  # no training began before the last cost was measured
    for tid, r in here.items():
        a = aside[tid]
        assert a["status"] == r["status"] == "ok"
        # same seeds at the same thread count: the same scores to the bit, and the same counts
        for key in ("acc_mean", "acc_std", "f1_mean", "best_epoch_mean", "params", "flops", "seeds_trained"):
            assert a[key] == r[key], key
        assert a["latency_ms_b4"] > 0 and a["train_step_ms_b4"] > 0  # the costs part timed it
        assert (a["train_workers"], a["train_threads"], a["threads"]) == (2, 1, 1)
        assert set(a) - set(r) == {"train_workers", "train_threads"}
        assert [s["best_epoch"] for s in aside_samples[tid]["seeds"]] == \
            [s["best_epoch"] for s in here_samples[tid]["seeds"]]


@pytest.mark.skipif(sys.platform != "linux", reason="elsewhere the training workers are spawned as the run starts")
def test_no_training_worker_exists_while_the_costs_are_measured(write_suite, tmp_path):
    """On Linux the training workers are forked when the trainings begin: none imports or idles beside a timing."""
    parts = _Parts()
    rows, _ = _run(write_suite, tmp_path, InProcess(train_workers=2), progress=parts)
    assert parts.started == ["costs"] * 4 + ["train"] * 4
    assert parts.children[:4] == [0, 0, 0, 0]  # while every cost was measured
    assert parts.children[4:] == [1, 2, 2, 2]  # one forked per training sent, until both are busy
    assert all(r["status"] == "ok" and r["train_workers"] == 2 for r in rows.values())


def test_a_training_worker_that_dies_costs_its_own_trial_only(write_suite, tmp_path):
    rows, _ = _run(write_suite, tmp_path, InProcess(train_workers=2), fault="segfault_in_worker")
    by_method = {r["method"]: r for r in rows.values()}
    dead = by_method["tests.faulty:Faulty"]
    assert dead["status"] == "crashed" and "SIGSEGV" in dead["error"]
    assert dead["params"] > 0 and dead["latency_ms_b4"] > 0  # its costs, measured here, are kept
    assert "acc_mean" not in dead
    for m in ("early", "tfn", "lmf"):
        assert by_method[m]["status"] == "ok" and by_method[m]["acc_mean"] > 0


def test_a_run_killed_while_its_trainings_run_resumes_to_the_rows_of_one_uninterrupted_run(write_suite, tmp_path,
                                                                                           capsys, monkeypatch):
    """kill -9 in the training phase: the workers die with the parent (PR_SET_PDEATHSIG), the rows written so far are
    whole, and --resume measures the rest (costs, then trainings) to the same scores."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    from inproc import cli

    text = SUITE.replace("FAULT", "none").replace("dims: [4]", "dims: [4, 6, 8]").replace(
        "\nsweep:\n", "\nexecution: {train_workers: 2}\nsweep:\n")
    suite = write_suite(text, "killed.yaml")
    fresh, _ = _run(write_suite, tmp_path / "fresh", InProcess(train_workers=2), text=text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", "run", str(suite), "--out", str(tmp_path / "killed")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end, rows_file = time.monotonic() + 240, None
    while time.monotonic() < end and proc.poll() is None:
        found = list((tmp_path / "killed").glob("*/*/results.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:  # trainings are coming in
            rows_file = found[0]
            break
        time.sleep(0.02)
    assert rows_file is not None and proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = [json.loads(x) for x in rows_file.read_text().splitlines()]
    assert 2 <= len(kept) < 12 and all(r["status"] == "ok" and "acc_mean" in r for r in kept)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", rows_file.parent, "--json")
    assert code == 0, err
    rows = {r["trial_id"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == set(fresh) and len(rows) == 12  # none lost, none twice
    for tid, r in fresh.items():  # same seeds at one thread: the same scores, resumed or not
        assert (rows[tid]["status"], rows[tid]["acc_mean"], rows[tid]["f1_mean"]) == ("ok", r["acc_mean"], r["f1_mean"])


TUNED = """\
name: aside-tuned
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 200, n_val: 100, n_test: 100, noise: 0.3}
train: {epochs: 2, batch_size: 32, seeds: [0]}
measure: {device: cpu, threads: 1, latency: null}
sweep: {dims: [4]}
tune: {trials: 4, parallel: 2, seed: 0, space: {lr: {loguniform: [0.001, 0.1]}}}
methods:
  - method: early
  - method: lmf
    params: {rank: 2}
"""


def test_tuning_trials_in_the_training_workers_choose_as_in_this_process(write_suite, tmp_path):
    here, here_samples = _run(write_suite, tmp_path / "here", InProcess(), text=TUNED)
    parts = _Parts()
    aside, aside_samples = _run(write_suite, tmp_path / "aside", InProcess(train_workers=2), text=TUNED,
                                progress=parts)
    assert parts.started == ["costs"] * 2 + ["train"] * 2  # the tuning trials went before, unannounced
    for tid, r in here.items():
        a = aside[tid]
        assert (a["tuned_params"], a["tuned_val"], a["acc_mean"], a["tune_trials"]) == \
            (r["tuned_params"], r["tuned_val"], r["acc_mean"], r["tune_trials"]) and r["tune_trials"] == 4
        assert [(t["params"], t["val"]) for t in aside_samples[tid]["tuning"]] == \
            [(t["params"], t["val"]) for t in here_samples[tid]["tuning"]]


def _child_that_outlives(drop: bool, started, release) -> None:
    from mmbench import store

    if drop:
        store.drop_inherited()
    started.set()
    release.wait(30)


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.skipif(sys.platform != "linux", reason="forked children: Linux")
def test_a_forked_child_holds_no_run_lock_once_it_drops_its_copy(tmp_path, drop):
    """A forked worker (training, or drawing a report's figures) that outlives its parent must not keep the run
    directory locked against --resume: it closes its copy of the lock's descriptor as it starts. Without that
    (drop False), the lock outlives the owner."""
    import multiprocessing as mp
    import subprocess

    from mmbench import store

    ctx = mp.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    store.own(tmp_path)
    child = ctx.Process(target=_child_that_outlives, args=(drop, started, release), daemon=True)
    child.start()
    try:
        assert started.wait(30)
        store.disown(tmp_path)  # the owner is gone; the child lives on
        other = subprocess.run([sys.executable, "-c", "import sys; from mmbench import store; store.own(sys.argv[1])",
                                str(tmp_path)], capture_output=True, text=True)
        assert (other.returncode == 0) == drop, other.stderr
    finally:
        release.set()
        child.join(30)
        store.disown(tmp_path)
