"""The runner survives: faults become statuses, kills and Ctrl-C leave valid run directories that --resume finishes,
and a bad --resume is one line and exit 2 with the folder untouched."""
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_cli
from inproc import cli, one_line_error

FAULT_SUITE = """\
name: faults
task:
  dataset: synthetic
  params: {interaction: redundancy, modalities: 2, dim: 4, n_train: 120, n_val: 60, n_test: 60}
train: {epochs: 1, batch_size: 64, seeds: [0]}
measure:
  device: cpu
  threads: 1
  latency: {batch_sizes: [4], max_time_s: 0.01, min_samples: 3, warmup: 1, min_block_ms: 0.1}
sweep:
  dims: [4]
methods:
  - method: early
  - method: tests.faulty:Faulty
    sweep: {fault: [FAULTS]}
  - method: late
"""

# Cheap trials with training (so determinism across a resume is checked on accuracy), slow enough to be killed mid-way.
RESUME_SUITE = """\
name: resumable
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 300, n_val: 100, n_test: 100, noise: 0.3}
train: {epochs: 3, batch_size: 32, seeds: [0, 1]}
measure: {device: cpu, threads: 1, latency: null}
sweep:
  dims: [4, 6, 8]
methods:
  - method: early
  - method: tfn
  - method: lmf
    params: {rank: 2}
"""


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _statuses(run_dir: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    return {r["label"]: r for r in rows}


def _only_run(out: Path, suite: str) -> Path:
    runs = [p for p in (out / suite).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_faults_in_workers_become_statuses_and_healthy_trials_are_measured(write_suite, tmp_path, capsys,
                                                                           monkeypatch):
    faults = ["raise", "nan", "hang", "abort", "segfault", "oom", "exit"]
    suite = write_suite(FAULT_SUITE.replace("FAULTS", ", ".join(faults)))
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json", "--trial-timeout", "10")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "complete"
    rows = {r["hparams"].get("fault", r["method"]): r for r in doc["rows"]}
    expected = {"raise": "error", "nan": "nan", "hang": "timeout", "abort": "crashed", "segfault": "crashed",
                "oom": "oom", "exit": "crashed"}
    assert {f: rows[f]["status"] for f in faults} == expected, {f: rows[f]["error"] for f in faults}
    assert "SIGABRT" in rows["abort"]["error"] and "SIGSEGV" in rows["segfault"]["error"]
    assert "exit code 3" in rows["exit"]["error"] and "injected failure" in rows["raise"]["error"]
    assert "10 s" in rows["hang"]["error"]
    for healthy in ("early", "late"):
        r = rows[healthy]
        assert r["status"] == "ok", r["error"]
        assert r["params"] > 0 and 0 <= r["acc_mean"] <= 1 and r["latency_ms_b4"] > 0
    # Every faulty trial's row is as complete as the file format needs: the report reads the run.
    assert (Path(doc["run_dir"]) / "report.html").exists()


def test_faults_in_process_need_no_worker(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    prepared = prepare(load_suite(write_suite(FAULT_SUITE.replace("FAULTS", "raise, nan, oom, none"))))
    rows = {r["hparams"].get("fault", r["method"]): r for r in run_suite(prepared, tmp_path).rows()}
    assert {k: r["status"] for k, r in rows.items()} == {"early": "ok", "late": "ok", "raise": "error",
                                                         "nan": "nan", "oom": "oom", "none": "ok"}
    assert rows["oom"]["error"].startswith("CPU out of memory")


def test_worker_results_equal_in_process_results(write_suite, tmp_path):
    """Isolation changes where a trial runs, not what it measures (CPU, same seeds, same threads)."""
    from mmbench.execute import WorkerPool
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    prepared = prepare(load_suite(write_suite(RESUME_SUITE.replace("dims: [4, 6, 8]", "dims: [4]"))))
    a = run_suite(prepared, tmp_path / "a").rows()
    b = run_suite(prepared, tmp_path / "b", executor=WorkerPool(workers=2)).rows()
    by_id = {r["trial_id"]: r for r in b}
    assert len(b) == len(a) == 3
    for r in a:
        other = by_id[r["trial_id"]]
        assert (r["acc_mean"], r["params"], r["flops"]) == (other["acc_mean"], other["params"], other["flops"])


def _start(suite: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmbench", "run", str(suite), "--out", str(out), *extra],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_rows(out: Path, suite: str, n: int, proc: subprocess.Popen, timeout: float = 120) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        runs = list((out / suite).glob("*/results.jsonl")) if (out / suite).exists() else []
        if runs and runs[0].read_text().count("\n") >= n:
            return runs[0].parent
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no rows appeared")


def _acc(rows) -> dict[str, tuple]:
    return {r["trial_id"]: (r["status"], r["acc_mean"], r["acc_std"], r["f1_mean"]) for r in rows}


def test_kill_9_mid_run_leaves_a_valid_directory_and_resume_completes_it(write_suite, tmp_path, capsys,
                                                                          monkeypatch):
    from mmbench.store import load_run
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    suite = write_suite(RESUME_SUITE)
    prepared = prepare(load_suite(suite))
    plan = [t.id for t in prepared.trials]
    fresh = run_suite(prepared, tmp_path / "fresh").rows()

    proc = _start(suite, tmp_path / "killed")
    run_dir = _wait_rows(tmp_path / "killed", "resumable", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = load_run(run_dir)  # every row complete and valid; the run says it did not finish
    assert killed.meta["state"] == "running" and not killed.complete
    assert 2 <= len(killed.rows) < len(plan) and all(r["trial_id"] in plan for r in killed.rows)

    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "complete" and doc["run_dir"] == str(run_dir)
    ids = [r["trial_id"] for r in doc["rows"]]
    assert sorted(ids) == sorted(plan) and len(set(ids)) == len(ids)  # no duplicate, none missing
    assert _acc(doc["rows"]) == _acc(fresh)  # CPU: identical scores, resumed or not
    csv_ids = [line.split(",", 1)[0] for line in (run_dir / "results.csv").read_text().splitlines()[1:]]
    assert csv_ids == plan  # the table in plan order, as one uninterrupted run writes it
    assert len(json.loads((run_dir / "run.json").read_text())["resumed"]) == 1


def test_ctrl_c_records_what_finished_and_prints_the_resume_command(write_suite, tmp_path):
    suite = write_suite(RESUME_SUITE)
    proc = _start(suite, tmp_path, "--device", "cpu")
    run_dir = _wait_rows(tmp_path, "resumable", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["state"] == "interrupted"
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("mmbench run ") and f"--resume {run_dir}" in command and "--device cpu" in command
    r = subprocess.run([sys.executable, "-m", "mmbench", *shlex.split(command)[1:], "--json"], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["state"] == "complete" and len(doc["rows"]) == len({x["trial_id"] for x in doc["rows"]}) == 9


def test_sigterm_stops_like_ctrl_c_with_exit_143(write_suite, tmp_path):
    suite = write_suite(RESUME_SUITE)
    proc = _start(suite, tmp_path, "--isolate")
    run_dir = _wait_rows(tmp_path, "resumable", 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
    assert "--isolate" in err.strip().splitlines()[-1]


def test_resume_with_a_changed_suite_runs_changed_trials_and_drops_stale_rows(write_suite, tmp_path, capsys,
                                                                             monkeypatch):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    small = RESUME_SUITE.replace("dims: [4, 6, 8]", "dims: [4]").replace("seeds: [0, 1]", "seeds: [0]")
    suite = write_suite(small)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 0, err
    run_dir = Path(json.loads(out)["run_dir"])
    before = {r["method"]: r for r in json.loads(out)["rows"]}
    write_suite(small.replace("params: {rank: 2}", "params: {rank: 3}"))
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0, err
    after = {r["method"]: r for r in json.loads(out)["rows"]}
    plan = {t.id for t in prepare(load_suite(suite)).trials}
    assert {r["trial_id"] for r in after.values()} == plan and len(after) == 3
    assert after["early"] == before["early"]  # kept, not re-run
    assert after["lmf"]["rank"] == 3 and after["lmf"]["trial_id"] != before["lmf"]["trial_id"]


def test_resume_retry_failed_reruns_failed_trials_only(write_suite, tmp_path, capsys, monkeypatch):
    suite = write_suite(FAULT_SUITE.replace("FAULTS", "raise"))
    code, out, _ = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    first = {r["label"]: r for r in json.loads(out)["rows"]}
    run_dir = json.loads(out)["run_dir"]
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--retry-failed", "--json")
    assert code == 0, err
    again = {r["label"]: r for r in json.loads(out)["rows"]}
    assert again["early"] == first["early"] and again["late"] == first["late"]
    faulty = next(k for k in again if k.startswith("tests.faulty"))
    assert again[faulty]["status"] == "error" and len(again) == 3


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["not_a_run", "other_suite", "newer_schema", "missing"])
def test_bad_resume_is_one_line_exit_2_and_leaves_the_folder_untouched(case, write_suite, tmp_path, capsys,
                                                                       monkeypatch):
    suite = write_suite(RESUME_SUITE.replace("dims: [4, 6, 8]", "dims: [4]").replace("seeds: [0, 1]", "seeds: [0]"))
    folder = tmp_path / "target"
    folder.mkdir()
    words = {"not_a_run": "not a run directory", "other_suite": "run of suite 'another'",
             "newer_schema": "newer mmbench", "missing": "no such directory"}[case]
    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "not_a_run":
        (folder / "notes.txt").write_text("mine")
    else:
        meta = {"schema": 1, "suite": "another", "state": "interrupted", "started": "x", "finished": None}
        if case == "newer_schema":
            meta.update(schema=99, suite="resumable")
        (folder / "run.json").write_text(json.dumps(meta))
        (folder / "results.jsonl").write_text('{"trial_id": "abc", "status": "ok"}\n')
    before = _snapshot(folder) if folder.exists() else None
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", folder)
    assert code == 2 and one_line_error(err) and words in err, err
    assert (_snapshot(folder) if folder.exists() else None) == before
    assert not (tmp_path / "history.sqlite").exists()


def test_a_torn_last_line_is_dropped_on_resume_not_glued_to_the_next_row(write_suite, tmp_path, capsys,
                                                                         monkeypatch):
    suite = write_suite(RESUME_SUITE.replace("dims: [4, 6, 8]", "dims: [4]").replace("seeds: [0, 1]", "seeds: [0]"))
    code, out, _ = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    run_dir = Path(json.loads(out)["run_dir"])
    lines = (run_dir / "results.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "results.jsonl").write_text("".join(lines[:1]) + lines[1][:25])  # a kill in the middle of a write
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0, err
    text = (run_dir / "results.jsonl").read_text()
    assert text.endswith("\n") and len([json.loads(x) for x in text.splitlines()]) == 3


def test_the_executor_interface_takes_a_new_executor(write_suite, tmp_path):
    """A third executor (here: one that runs trials in reverse) plugs in without touching the runner."""
    from mmbench.execute import InProcess
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    class Reversed(InProcess):
        seen = []

        def run(self, trials, tasks, on_start=None):
            trials = list(trials)[::-1]
            self.seen += [t.id for t in trials]
            yield from super().run(trials, tasks, on_start)

    prepared = prepare(load_suite(write_suite(RESUME_SUITE.replace("dims: [4, 6, 8]", "dims: [4]"))))
    ex = Reversed()
    run = run_suite(prepared, tmp_path, executor=ex)
    assert ex.seen == [t.id for t in prepared.trials][::-1]
    assert [r["trial_id"] for r in run.rows()] == ex.seen  # appended as finished …
    csv_ids = [x.split(",", 1)[0] for x in (run.path / "results.csv").read_text().splitlines()[1:]]
    assert csv_ids == [t.id for t in prepared.trials]  # … tabled in plan order
    # a Trial and its result are plain, serialisable data
    t = prepared.trials[0]
    assert type(t).from_dict(json.loads(json.dumps(t.to_dict()))) == t
    json.dumps(run.rows()[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_oom_does_not_pollute_the_next_trials_memory_figure(write_suite, tmp_path):
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    lat = "accuracy: false, latency: {batch_sizes: [8], max_time_s: 0.01, min_samples: 3, warmup: 1}"
    base = RESUME_SUITE.replace("device: cpu", "device: cuda").replace("latency: null", lat)
    clean = run_suite(prepare(load_suite(write_suite(base.replace("  - method: early\n", ""), "clean.yaml"))),
                      tmp_path / "clean").rows()
    text = base.replace("  - method: early\n", "  - method: tests.oom_module:OutOfMemory\n    params: {alloc_gib: 1e6}\n")
    after = run_suite(prepare(load_suite(write_suite(text, "oom.yaml"))), tmp_path / "oom").rows()
    assert any(r["status"] == "oom" for r in after)
    ref = {r["trial_id"]: r for r in clean}
    for r in after:
        if r["trial_id"] in ref:
            for k in (k for k in r if "peak_alloc" in k or "peak_mem" in k):
                assert r[k] == ref[r["trial_id"]][k], k


@pytest.mark.parametrize("started_quick", [True, False])
def test_resume_with_another_budget_is_refused_naming_the_flag(started_quick, write_suite, tmp_path, capsys,
                                                               monkeypatch):
    suite = write_suite(RESUME_SUITE.replace("dims: [4, 6, 8]", "dims: [4]").replace("seeds: [0, 1]", "seeds: [0]"))
    folder = tmp_path / "results" / "resumable" / "20260101-000000-abcd"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"schema": 1, "suite": "resumable", "state": "interrupted",
                                                 "started": "x", "finished": None}))
    (folder / "resolved.json").write_text(json.dumps({"quick": started_quick, "trials": []}))
    (folder / "results.jsonl").write_text('{"trial_id": "abc", "status": "ok"}\n')
    before = _snapshot(folder)
    args = ("run", suite, "--resume", folder) + (() if started_quick else ("--quick",))
    code, out, err = cli(capsys, monkeypatch, *args)
    assert code == 2 and one_line_error(err), err
    assert ("started with --quick" in err and "add --quick" in err) if started_quick else \
        ("started without --quick" in err and "drop --quick" in err)
    assert _snapshot(folder) == before
