"""Run directories, the history database, data files and the disk (issue 17): a bad --out, a damaged results line,
a kill -9 at any point of the first history write, a full disk, damaged NPY files — each one line, exit 2, and
nothing finished is lost."""
import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _run_dir(out: Path, suite: str = "cheap") -> Path:
    (run,) = [p for p in (out / suite).iterdir() if p.is_dir()]
    return run


# --- --out ----------------------------------------------------------------------------------------------------------

def test_out_that_is_a_file_is_one_line_before_anything_runs(write_suite, tmp_path, capsys, monkeypatch):
    suite = write_suite(CHEAP)
    out = tmp_path / "results"
    out.write_text("not a folder")
    for target in (out, out / "sub"):
        code, _, err = cli(capsys, monkeypatch, "run", suite, "--out", target)
        assert code == 2 and one_line_error(err) and "is a file" in err, err
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("why", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_out_that_cannot_be_written_is_one_line_before_anything_runs(why, write_suite, tmp_path, capsys,
                                                                    monkeypatch):
    import mmbench.store as store

    def refuse(folder):
        raise OSError(why, os.strerror(why))

    monkeypatch.setattr(store, "_probe", refuse)
    started = []
    monkeypatch.setattr("mmbench.run.prepare", lambda *a, **k: started.append(1))
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(CHEAP), "--out", tmp_path / "out")
    assert code == 2 and one_line_error(err) and os.strerror(why) in err, err
    assert not started and not (tmp_path / "out").exists()


def test_a_full_file_system_is_refused_before_anything_runs(write_suite, tmp_path, capsys, monkeypatch):
    import mmbench.store as store

    monkeypatch.setattr(store, "free_bytes", lambda folder: 100 << 10)
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(CHEAP), "--out", tmp_path / "out")
    assert code == 2 and one_line_error(err) and "no room for a run: 100 KiB free" in err


def test_disk_full_during_a_run_keeps_every_row_before_it_and_resume_finishes(write_suite, tmp_path, capsys,
                                                                            monkeypatch):
    import mmbench.store as store

    suite = write_suite(CHEAP)
    real = os.fsync
    appends = []

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("results.jsonl"):
            appends.append(fd)
            if len(appends) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(store.os, "fsync", fsync)
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 2 and one_line_error(err) and "No space left on device" in err and "--resume" in err, err
    run = _run_dir(tmp_path)
    monkeypatch.setattr(store.os, "fsync", real)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "complete" and len(json.loads(out)["rows"]) == 4


# --- results.jsonl damaged in the middle --------------------------------------------------------------------------

def test_a_damaged_middle_line_names_the_line_and_drop_damaged_resumes(write_suite, tmp_path, capsys, monkeypatch):
    suite = write_suite(CHEAP)
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 0, err
    run = _run_dir(tmp_path)
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    lines[1] = '{"trial_id": "abc", "sta\x00tus\n'  # a damaged line, not the torn last one
    (run / "results.jsonl").write_text("".join(lines))
    (run / "run.json").write_text((run / "run.json").read_text().replace('"complete"', '"interrupted"'))
    before = (run / "results.jsonl").read_bytes()

    code, _, err = cli(capsys, monkeypatch, "run", suite, "--resume", run)
    assert code == 2 and one_line_error(err), err
    assert "results.jsonl: line 2 is damaged" in err and "--drop-damaged" in err and "1 line(s) before it" in err
    assert (run / "results.jsonl").read_bytes() == before  # refused untouched

    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run, "--drop-damaged", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "complete" and len(doc["rows"]) == len({r["trial_id"] for r in doc["rows"]}) == 4
    assert {r["trial_id"]: r for r in doc["rows"]}[first["trial_id"]]["acc_mean"] == first["acc_mean"]


# --- the history database -------------------------------------------------------------------------------------------

def _integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _recorded(db: Path) -> dict[str, int]:
    from mmbench import history as H

    return {r.run_key: r.trials for r in H.list_runs(db)}


def test_an_empty_file_is_a_new_database(tmp_path, capsys, monkeypatch):
    from mmbench import history as H

    db = tmp_path / "h.sqlite"
    db.touch()
    code, out, err = cli(capsys, monkeypatch, "history", "--db", db, "--json")
    assert code == 0 and json.loads(out) == [], err
    assert db.stat().st_size == 0  # reading never writes
    H.record_run(db, make_run(tmp_path, "a"))
    assert _recorded(db) == {"fake/a": len(trials())} and _integrity(db) == "ok"


def test_tables_left_by_a_creation_cut_short_are_replaced(tmp_path):
    """What the earlier mmbench left after a kill -9 in its schema creation (each CREATE committed on its own): some
    empty tables and no schema version. Every later write failed with 'table runs already exists'."""
    from mmbench import history as H

    db = tmp_path / "h.sqlite"
    con = sqlite3.connect(db)
    con.executescript(H.MIGRATIONS[0].split("CREATE TABLE results")[0])
    con.close()
    H.record_run(db, make_run(tmp_path, "a"))
    assert _recorded(db) == {"fake/a": len(trials())} and _integrity(db) == "ok"


def test_a_database_with_foreign_tables_is_refused_untouched(tmp_path):
    from mmbench import history as H
    from mmbench.errors import UserError

    db = tmp_path / "h.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE mine (x)")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(UserError, match="not an mmbench history database"):
        H.record_run(db, make_run(tmp_path, "a"))
    assert db.read_bytes() == before


KILLER = """\
import os, signal, sys
import mmbench.history as H
n, count = int(sys.argv[3]), [0]
connect = H._connect
def counting(*args):
    con = connect(*args)
    con.execute("PRAGMA cache_size = 1")  # pages spill into the file before commit, as a large record's do
    def trace(statement):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    con.set_trace_callback(trace)
    return con
H._connect = counting
H.record_run(sys.argv[1], sys.argv[2])
print(count[0])
"""


def _record_in_child(db: Path, run: Path, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", KILLER, str(db), str(run), str(kill_at)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_kill_9_at_random_points_of_the_first_history_write_leaves_a_usable_database(tmp_path):
    """The child counts the SQL statements of its record (schema creation first) and kills itself with SIGKILL at
    statement N: N = every point of the schema creation, and random points of the inserts. Read-only opens (history,
    compare) work on what the kill left, as do writes."""
    from mmbench import history as H

    run = make_run(tmp_path / "runs", "r1")
    full = _record_in_child(tmp_path / "whole.sqlite", run, 0)
    assert full.returncode == 0, full.stderr
    total = int(full.stdout)
    points = sorted(set(range(1, 12)) | set(random.Random(17).sample(range(12, total), 6)) | {total - 1})
    for n in points:
        db = tmp_path / f"k{n}.sqlite"
        r = _record_in_child(db, run, n)
        assert r.returncode == -signal.SIGKILL, (n, r.stderr)
        assert H.list_runs(db) == [] if db.exists() else True  # readable as it is: nothing recorded, no error
        assert _integrity(db) == "ok" if db.exists() else True
        H.record_run(db, run)  # recordable afterwards, every finished trial in it
        assert _recorded(db) == {"fake/r1": len(trials())} and _integrity(db) == "ok", n


def test_a_full_disk_is_one_line_and_the_run_is_recorded_later(write_suite, tmp_path, capsys, monkeypatch):
    """SQLite's max_page_count makes the database 'full' as a full disk would."""
    from mmbench import history as H

    connect = H._connect

    def small(*args):
        con = connect(*args)
        con.execute("PRAGMA max_page_count = 2")
        return con

    suite = write_suite(CHEAP)
    db = tmp_path / "history.sqlite"
    monkeypatch.setattr(H, "_connect", small)
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 2 and one_line_error(err), err
    assert "database or disk is full" in err and "history --record" in err
    run = _run_dir(tmp_path)
    assert json.loads((run / "run.json").read_text())["state"] == "complete" and (run / "report.html").exists()
    assert len((run / "results.jsonl").read_text().splitlines()) == 4
    monkeypatch.setattr(H, "_connect", connect)

    code, _, err = cli(capsys, monkeypatch, "history", "--record", run, "--db", db)
    assert code == 0, err
    assert _recorded(db) == {f"cheap/{run.name}": 4} and _integrity(db) == "ok"

    # ... or the next run records it
    db.unlink()
    H.record_run(db, make_run(tmp_path / "other", "x"))  # a database that exists but lacks that run
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 0, err
    assert f"cheap/{run.name}" in _recorded(db) and len(_recorded(db)) == 3


# --- data files -------------------------------------------------------------------------------------------------------

def _multiview_suite(write_suite, root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    np.save(root / "a.npy", rng.normal(size=(60, 3)))
    np.save(root / "b.npy", rng.normal(size=(60, 2)))
    np.savetxt(root / "labels.csv", rng.integers(0, 2, 60), fmt="%d")
    (root / "manifest.json").write_text(json.dumps({"views": {"a": "a.npy", "b": "b.npy"}, "labels": "labels.csv"}))
    return write_suite(CHEAP.replace("dataset: synthetic", "dataset: multiview").replace(
        "{interaction: redundancy, modalities: 2, dim: 4, n_train: 100, n_val: 50, n_test: 50}", f"{{path: {root}}}"))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "damaged NPY file"),
    (lambda p: p.write_bytes(p.read_bytes()[:8]), "damaged"),
    (lambda p: p.write_bytes(b"hello, world\n"), "not an NPY file"),
    (lambda p: np.save(p, np.array([{"x": 1}], dtype=object)), "holds Python objects"),
])
def test_a_damaged_npy_names_the_file_and_what_is_wrong(damage, message, write_suite, tmp_path, capsys,
                                                        monkeypatch):
    suite = _multiview_suite(write_suite, tmp_path / "mv")
    damage(tmp_path / "mv" / "b.npy")
    code, _, err = cli(capsys, monkeypatch, "validate", suite)
    assert code == 2 and one_line_error(err), err
    assert str(tmp_path / 'mv' / 'b.npy') in err and message in err, err
