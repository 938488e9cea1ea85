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
from test_hostile_disk import CHEAP  # the same cheap two-method suite


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


# --- (c) a damaged database is named, never used --------------------------------------------------------------------

def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _damaged_db(tmp_path: Path) -> tuple[Path, Path]:
    """A database of three runs with 4 KiB of noise written into its middle (a disk error); and a run of the suite
    that is not in it."""
    from mmbench import history as H

    db = tmp_path / "h.sqlite"
    for i in range(3):
        H.record_run(db, make_run(tmp_path / "runs", f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00:00"))
    size = db.stat().st_size
    assert size > 6 * 4096
    with open(db, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(os.urandom(4096))
    return db, make_run(tmp_path / "runs", "new", seed=9)


@pytest.mark.parametrize("args", [
    ["history"],
    ["history", "--suite", "fake", "--metric", "fusion_latency_ms_b1"],
    ["compare", "history:fake", "RUN"],
    ["history", "--record", "RUN"],
])
def test_every_reader_and_writer_names_a_damaged_database_and_leaves_it_alone(args, tmp_path, capsys, monkeypatch):
    db, run = _damaged_db(tmp_path)
    before = _digest(db)
    code, _, err = cli(capsys, monkeypatch, *[str(run) if a == "RUN" else a for a in args], "--db", db)
    assert code == 2 and one_line_error(err), err
    assert str(db) in err and "damaged" in err and "restore it from a backup, or give a new --db" in err
    assert _digest(db) == before


def test_a_run_never_starts_on_a_damaged_database(write_suite, tmp_path, capsys, monkeypatch):
    db, _ = _damaged_db(tmp_path)
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(CHEAP), "--out", tmp_path / "out", "--db", db)
    assert code == 2 and one_line_error(err) and "damaged" in err, err
    assert not (tmp_path / "out").exists()


def test_a_database_damaged_during_the_run_is_not_recorded_into(tmp_path):
    from mmbench import history as H

    db, run = _damaged_db(tmp_path)
    with pytest.raises(H.RecordFailed, match="damaged.*--db NEW"):
        H.record_run(db, run)


# --- (d) a busy database waits, and says so --------------------------------------------------------------------------

def _locked(db: Path, how: str, monkeypatch) -> list[str]:
    """Another connection holds ``how`` (IMMEDIATE: a writer; EXCLUSIVE: a person in sqlite3 mid-transaction) and
    lets go as soon as mmbench says it is waiting: the wait is forced, not timed."""
    from mmbench import history as H

    other = sqlite3.connect(db, isolation_level=None)
    other.execute(f"BEGIN {how}")
    said = []
    real = H._say_waiting

    def waiting(path):
        real(path)
        said.append(str(path))
        other.execute("COMMIT")
        other.close()

    monkeypatch.setattr(H, "_say_waiting", waiting)
    return said


@pytest.mark.parametrize("how", ["IMMEDIATE", "EXCLUSIVE"])
def test_a_record_waits_for_a_lock_and_says_so(how, tmp_path, capsys, monkeypatch):
    from mmbench import history as H

    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path / "runs", "r0"))
    said = _locked(db, how, monkeypatch)
    H.record_run(db, make_run(tmp_path / "runs", "r1"))
    assert said == [str(db)] and "waiting up to 30 s" in capsys.readouterr().err
    assert [r.run_key for r in H.list_runs(db)] == ["fake/r0", "fake/r1"]


def test_a_reader_waits_for_an_exclusive_lock_and_says_so(tmp_path, capsys, monkeypatch):
    from mmbench import history as H

    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path / "runs", "r0"))
    said = _locked(db, "EXCLUSIVE", monkeypatch)
    code, out, err = cli(capsys, monkeypatch, "history", "--db", db, "--json")
    assert code == 0 and said == [str(db)] and "locked by another process; waiting" in err, err
    assert [r["run_key"] for r in json.loads(out)] == ["fake/r0"]


def test_a_lock_held_when_a_run_starts_does_not_refuse_it(write_suite, tmp_path, capsys, monkeypatch):
    from mmbench import history as H

    db = tmp_path / "history.sqlite"
    H.record_run(db, make_run(tmp_path / "runs", "r0", suite="cheap"))
    said = _locked(db, "EXCLUSIVE", monkeypatch)
    code, out, err = cli(capsys, monkeypatch, "run", write_suite(CHEAP), "--out", tmp_path, "--json")
    assert code == 0, err
    assert said == [str(db)]  # the check at start did not wait; the record at the end did
    run_dir = Path(json.loads(out)["run_dir"])
    assert f"cheap/{run_dir.name}" in [r.run_key for r in H.list_runs(db)]


def test_a_lock_held_past_the_bound_is_one_line(tmp_path, capsys, monkeypatch):
    from mmbench import history as H

    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path / "runs", "r0"))
    monkeypatch.setattr(H, "BUSY_TIMEOUT_S", 0.05)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        code, _, err = cli(capsys, monkeypatch, "history", "--db", db)
        assert code == 2 and "waiting up to 0.05 s" in err and "still locked by another process" in err, err
        assert one_line_error(err.split("\n", 1)[1])  # the waiting line, then the error
        with pytest.raises(H.RecordFailed, match="still locked"):
            H.record_run(db, make_run(tmp_path / "runs", "r1"))
    finally:
        other.close()


# --- (e) compare of a run that is not complete ----------------------------------------------------------------------

def _half(run: Path, state: str) -> None:
    """What a run still going (or stopped) holds: its first rows, and run.json's state."""
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    (run / "results.jsonl").write_text("".join(lines[:2]))
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "state": state}))


@pytest.mark.parametrize("state", ["running", "interrupted"])
def test_compare_refuses_a_run_that_is_not_complete_unless_partial(state, tmp_path, capsys, monkeypatch):
    from mmbench import history as H

    base = make_run(tmp_path, "base", seed=1)
    cur = make_run(tmp_path, "cur", seed=2)
    db = tmp_path / "h.sqlite"
    for i in range(5):
        H.record_run(db, make_run(tmp_path, f"h{i}", seed=10 + i, started=f"2026-01-0{i + 1}T00:00"))
    _half(cur, state)
    for base_arg in (str(base), "history:fake"):
        code, out, err = cli(capsys, monkeypatch, "compare", base_arg, cur, "--db", db)
        assert code == 2 and one_line_error(err), err
        assert f"not complete ({state}, 2 of {len(trials())} trials)" in err and "--partial" in err
    code, out, err = cli(capsys, monkeypatch, "compare", base, cur, "--partial")
    assert code in (0, 1), err
    assert "PARTIAL comparison" in out and f"the run is {state}, 2 of {len(trials())} trials" in out
    code, out, err = cli(capsys, monkeypatch, "compare", base, cur, "--partial", "--json",
                         "--markdown", tmp_path / "c.md")
    doc = json.loads(out)
    assert any("PARTIAL" in n for n in doc["notes"]) and "PARTIAL" in (tmp_path / "c.md").read_text()
    assert {e["trial_id"] for e in doc["entries"] if e["state"] != "not comparable"} <= \
        {json.loads(x)["trial_id"] for x in (cur / "results.jsonl").read_text().splitlines()}


# --- (g) a worker that dies at any moment ---------------------------------------------------------------------------

def _prepared(write_suite):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    return prepare(load_suite(write_suite(CHEAP)))


def _kill(w) -> None:
    w.process.kill()
    w.process.join()


def test_a_worker_killed_while_it_starts_is_replaced_and_no_trial_is_lost(write_suite):
    from mmbench.execute import WorkerPool

    prepared = _prepared(write_suite)
    pool = WorkerPool(workers=2)
    pool.start()
    try:
        _kill(pool._idle[0])  # before its first trial: it never received the task data
        rows = [r.row for _, r in pool.run(prepared.trials, prepared.tasks)]
    finally:
        pool.close()
    assert sorted(r["trial_id"] for r in rows) == sorted(t.id for t in prepared.trials)
    assert {r["status"] for r in rows} == {"ok"} and pool.spawned == 3


def test_a_worker_killed_while_idle_is_replaced(write_suite):
    from mmbench.execute import WorkerPool

    prepared = _prepared(write_suite)
    pool = WorkerPool(workers=1)
    pool.start()
    rows = []
    try:
        for _, result in pool.run(prepared.trials, prepared.tasks):
            rows.append(result.row)
            if len(rows) == 1:
                _kill(pool._idle[0])  # between two trials
    finally:
        pool.close()
    assert len(rows) == len(prepared.trials) and {r["status"] for r in rows} == {"ok"} and pool.spawned == 2


def test_a_pool_that_cannot_start_ends_the_run_in_one_line_marked_interrupted(write_suite, tmp_path, capsys,
                                                                              monkeypatch):
    from mmbench.execute import WorkerPool

    spawn = WorkerPool._spawn

    def stillborn(self):
        w = spawn(self)
        _kill(w)
        return w

    monkeypatch.setattr(WorkerPool, "_spawn", stillborn)
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(CHEAP), "--out", tmp_path, "--workers", "1", "--json")
    assert code == 2 and one_line_error(err) and "worker pool cannot start" in err and "SIGKILL" in err, err
    (run_dir,) = (tmp_path / "cheap").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted" and f"--resume {run_dir}" in err


# --- (f) every stop says where it stopped ---------------------------------------------------------------------------

@pytest.fixture
def restore_signals(monkeypatch):
    from mmbench import interrupt

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(interrupt, "terminated", False)
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _signal_at(monkeypatch, owner, name: str, signum: int = signal.SIGTERM, nth: int = 1) -> None:
    """Send ``signum`` to this process the nth time ``owner.name`` is called: the signal lands at that instant."""
    real = getattr(owner, name)
    calls = []

    def hooked(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, hooked)


def _phases():
    import mmbench.execute as E
    import mmbench.history as H
    import mmbench.report.html as html
    import mmbench.run as R
    from mmbench.store import RunDir

    return {
        "loading": (R, "_prepare", 1), "starting workers": (E.WorkerPool, "start", 1),
        "run.json just written": (R, "_write_config", 1), "between trials": (RunDir, "append", 2),
        "the results table": (R, "_finish", 1), "recording": (H, "record_run", 1),
        "report.md written, report.html not yet": (html, "render", 1)}


@pytest.mark.parametrize("phase", list(_phases()))
def test_sigterm_at_any_phase_says_where_it_stopped_and_resume_finishes_what_is_missing(
        phase, write_suite, tmp_path, capsys, monkeypatch, restore_signals):
    from mmbench import history as H

    owner, name, nth = _phases()[phase]
    _signal_at(monkeypatch, owner, name, nth=nth)
    suite = write_suite(CHEAP)
    workers = ["--workers", "1"] if phase == "starting workers" else []  # a worker costs seconds to start
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, *workers, "--json")
    monkeypatch.undo()  # the hook off; the signal handlers are the fixture's to restore
    assert code == 143, err
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("mmbench run ") and "interrupted" in err and "Traceback" not in err
    runs = list((tmp_path / "cheap").glob("*")) if (tmp_path / "cheap").exists() else []
    if phase in ("loading", "starting workers"):
        assert runs == [] and "nothing was written" in err and "--out" in command
        return
    (run_dir,) = runs
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
    assert f"--resume {run_dir}" in command
    before = (run_dir / "results.jsonl").read_text().splitlines() if (run_dir / "results.jsonl").exists() else []
    code, out, err = cli(capsys, monkeypatch, *shlex_split(command)[1:])
    assert code == 0, err
    after = (run_dir / "results.jsonl").read_text().splitlines()
    assert after[:len(before)] == before and len(after) == len({json.loads(x)["trial_id"] for x in after}) == 4
    assert json.loads((run_dir / "run.json").read_text())["state"] == "complete"
    assert (run_dir / "report.html").exists() and (run_dir / "report.md").exists()
    (info,) = [r for r in H.list_runs(tmp_path / "history.sqlite") if r.run_key == f"cheap/{run_dir.name}"]
    assert info.state == "complete" and info.trials == 4


def shlex_split(command: str) -> list[str]:
    import shlex

    return shlex.split(command)


def test_ctrl_c_while_writing_the_reports_exits_130_marked_interrupted(write_suite, tmp_path, capsys, monkeypatch,
                                                                       restore_signals):
    import mmbench.report.html as html

    _signal_at(monkeypatch, html, "render", signal.SIGINT)
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(CHEAP), "--out", tmp_path, "--json")
    assert code == 130 and "while writing the results, the history record and the reports" in err, err
    (run_dir,) = (tmp_path / "cheap").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"


def test_a_full_disk_leaves_the_state_interrupted_even_when_no_new_file_can_be_made(write_suite, tmp_path, capsys,
                                                                                    monkeypatch):
    """From the third row on, the disk is full: no append and no new file (every atomic write makes one); run.json
    is rewritten in place, in the blocks it has."""
    import errno

    import mmbench.store as store

    real, appends = os.fsync, []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith("results.jsonl"):
            appends.append(fd)
        if len(appends) >= 3 and (name.endswith(".tmp") or name.endswith(".jsonl")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(store.os, "fsync", fsync)
    suite = write_suite(CHEAP)
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 2 and one_line_error(err) and "No space left on device" in err and "--resume" in err, err
    (run_dir,) = (tmp_path / "cheap").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
    monkeypatch.setattr(store.os, "fsync", real)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0 and json.loads(out)["state"] == "complete" and len(json.loads(out)["rows"]) == 4, err


def test_sigterm_while_a_resume_reopens_the_run_marks_it_interrupted(write_suite, tmp_path, capsys, monkeypatch,
                                                                    restore_signals):
    from mmbench.store import RunDir

    suite, run_dir = _finished_run(write_suite, tmp_path, capsys, monkeypatch)
    _signal_at(monkeypatch, RunDir, "resumed")  # its rows kept, its state about to say running
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    monkeypatch.undo()
    assert code == 143 and f"--resume {run_dir}" in err.strip().splitlines()[-1], err
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--json")
    assert code == 0 and json.loads(out)["state"] == "complete" and len(json.loads(out)["rows"]) == 4, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_command_said_its_last_word_ends_it_with_its_own_code(signum):
    """A signal that lands while the interpreter shuts down (here: from an atexit hook) neither kills the process by
    that signal nor prints a traceback: the work was done and reported."""
    code = ("import atexit, os, sys; "
            f"atexit.register(lambda: os.kill(os.getpid(), {int(signum)})); "
            "sys.argv = ['mmbench', 'list', 'datasets']; from mmbench.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "synthetic" in r.stdout and "Traceback" not in r.stderr, (r.returncode, r.stderr)


def test_sigterm_in_another_command_says_so_and_exits_143(tmp_path, capsys, monkeypatch, restore_signals):
    import mmbench.history as H

    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path / "runs", "r0"))
    _signal_at(monkeypatch, H, "list_runs")
    code, _, err = cli(capsys, monkeypatch, "history", "--db", db)
    assert code == 143 and err.strip().splitlines()[-1] == "mmbench: interrupted", (code, err)


def test_an_interrupted_command_exits_with_its_code_even_after_a_keyboardinterrupt_went_through_exec(
        write_suite, tmp_path):
    """CPython marks the interpreter interrupted for good when a KeyboardInterrupt leaves code run by exec (as the
    functions dataclasses and pydantic build are) and then dies by SIGINT at exit: a signal landing there showed as
    a silent death (-2) after the interruption was said. The program leaves with the code it said."""
    suite = write_suite(CHEAP)
    code = ("try:\n    exec('raise KeyboardInterrupt')\nexcept KeyboardInterrupt:\n    pass\n"
            "import sys\nimport mmbench.run as R\n"
            "def stop(*a):\n    raise KeyboardInterrupt\n"
            "R._prepare = stop\n"
            f"sys.argv = ['mmbench', 'run', {str(suite)!r}, '--out', {str(tmp_path)!r}]\n"
            "from mmbench.__main__ import entry\nentry()\n")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and "nothing was written" in r.stderr, (r.returncode, r.stderr)
