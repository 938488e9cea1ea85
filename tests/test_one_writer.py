"""One writer per run (issue 33): a run directory has one owner, derived files never collide, a damaged or busy
history database is named, compare refuses a run that is not complete, every stop says where it stopped, and a
worker that dies at any moment is replaced. No timing assertions: races are forced, not waited for."""
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from inproc import cli, one_line_error
from tests.fakerun import make_run, trials

CHEAP = """\
name: cheap
task:
  dataset: synthetic
  params: {interaction: redundancy, modalities: 2, dim: 4, n_train: 100, n_val: 50, n_test: 50}
train: {epochs: 1, batch_size: 64, seeds: [0]}
measure: {device: cpu, threads: 1, latency: null, flops: false}
sweep:
  dims: [4, 6]
methods:
  - method: early
  - method: late
"""

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _finished_run(write_suite, tmp_path, capsys, monkeypatch) -> tuple[Path, Path]:
    suite = write_suite(CHEAP)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 0, err
    return suite, Path(json.loads(out)["run_dir"])


HOLDER = """
import sys, time
from mmbench.store import own
own(sys.argv[1])
print("owned", flush=True)
time.sleep(600)
"""


def _hold(run_dir: Path) -> subprocess.Popen:
    """Another process that owns the run directory (as a run or a resume still going does)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "owned"
    return p


# --- (a) one owner --------------------------------------------------------------------------------------------------

def test_resume_while_the_owner_lives_is_refused_naming_its_pid_and_a_dead_owner_leaves_no_lock(
        write_suite, tmp_path, capsys, monkeypatch):
    suite, run_dir = _finished_run(write_suite, tmp_path, capsys, monkeypatch)
    owner = _hold(run_dir)
    try:
        before = _snapshot(run_dir)
        code, _, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir)
        assert code == 2 and one_line_error(err), err
        assert f"pid {owner.pid}" in err and "in use" in err
        assert _snapshot(run_dir) == before  # refused before anything was written
    finally:
        owner.send_signal(signal.SIGKILL)  # a kill -9: the kernel drops the lock
        owner.wait()
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert len(rows) == len({r["trial_id"] for r in rows}) == 4


def test_a_run_owns_its_directory_while_it_runs_and_workers_do_not_inherit_the_lock(write_suite, tmp_path):
    """A real run in a child process: while it runs a second resume is refused; its workers (spawned) never hold
    the lock, so once it ends (here: SIGKILL of the parent) the directory can be resumed at once."""
    from mmbench.store import own, disown, UserError

    suite = write_suite(CHEAP.replace("dims: [4, 6]", "dims: [4, 6, 8, 10, 12, 14]"))
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", "run", str(suite), "--out", str(tmp_path),
                             "--workers", "1"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while not list(tmp_path.glob("cheap/*/run.json")):
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.05)
        run_dir = next(tmp_path.glob("cheap/*"))
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            own(run_dir)
    finally:
        proc.kill()
        proc.communicate()
    time.sleep(0.5)  # the worker dies with its parent (PR_SET_PDEATHSIG); it never held the lock anyway
    own(run_dir)
    disown(run_dir)


def test_recording_a_run_twice_or_with_a_trial_twice_is_one_record(tmp_path):
    from mmbench import history as H

    run = make_run(tmp_path / "runs", "r1")
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    (run / "results.jsonl").write_text("".join(lines + lines[:3]))  # two writers' rows: three trials twice
    db = tmp_path / "h.sqlite"
    H.record_run(db, run)
    H.record_run(db, run)
    (info,) = H.list_runs(db)
    assert info.trials == len(trials())


# --- (b) derived files never collide --------------------------------------------------------------------------------

def test_writers_at_once_never_take_each_others_temporary_file(tmp_path):
    from mmbench.store import atomic_write

    target, errors = tmp_path / "report.html", []
    texts = [f"writer {i}\n" * 20000 for i in range(8)]

    def write(text):
        try:
            for _ in range(15):
                atomic_write(target, text)
        except Exception as exc:  # noqa: BLE001 - the test counts every failure
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text() in texts  # one writer's text, whole
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_removes_a_dead_writers_temporary_file_and_keeps_a_live_ones(write_suite, tmp_path, capsys,
                                                                           monkeypatch):
    suite, run_dir = _finished_run(write_suite, tmp_path, capsys, monkeypatch)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / f".report.html.{dead.stdout.strip()}-abcd.tmp").write_text("cut")
    (run_dir / f".report.html.{os.getppid()}-abcd.tmp").write_text("a live writer's")
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0, err
    assert [p.name for p in run_dir.glob(".*.tmp")] == [f".report.html.{os.getppid()}-abcd.tmp"]
