"""`mmbench history`: runs and a metric's trend; a newer database is refused by every command that opens it."""
import hashlib
import json
import sqlite3

from mmbench import history as H
from tests.conftest import run_cli
from tests.fakerun import make_run, trials
from tests.inproc import cli, one_line_error


def _db(tmp_path, n=3):
    db = tmp_path / "h.sqlite"
    tid = trials()[0]["trial_id"]
    for i in range(n):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, slow={tid: 1 + i}, started=f"2026-01-0{i + 1}T00:00"))
    return db, tid


def test_history_lists_runs_and_shows_a_trend(tmp_path, capsys, monkeypatch):
    db, tid = _db(tmp_path)
    code, out, _ = cli(capsys, monkeypatch, "history", "--db", db)
    assert code == 0 and all(f"r{i}" in out for i in range(3))
    code, out, _ = cli(capsys, monkeypatch, "history", "--db", db, "--suite", "fake", "--metric", "params")
    assert code == 0 and "tfn · 4x4x4" in out and "late · 16x16x16" in out
    code, out, _ = cli(capsys, monkeypatch, "history", "--db", db, "--suite", "fake", "--trial", tid, "--json")
    doc = json.loads(out)
    assert [t["trial_id"] for t in doc["trials"]] == [tid] and doc["metric"] == "fusion_latency_ms_b1"
    values = [p["value"] for p in doc["trials"][0]["points"]]
    assert values == sorted(values) and len(values) == 3
    code, out, _ = cli(capsys, monkeypatch, "history", "--db", db, "--suite", "fake", "--last", "2", "--json")
    assert len(json.loads(out)["trials"][0]["points"]) == 2


def test_history_errors(tmp_path, capsys, monkeypatch):
    db, _ = _db(tmp_path, 1)
    for args, msg in ((("--suite", "nope"), "no runs of suite 'nope'"),
                      (("--suite", "fake", "--metric", "latency"), "no metric 'latency'"),
                      (("--suite", "fake", "--trial", "zzz"), "no trial 'zzz'")):
        code, _, err = cli(capsys, monkeypatch, "history", "--db", db, *args)
        assert code == 2 and one_line_error(err) and msg in err, err
    code, _, err = cli(capsys, monkeypatch, "history", "--db", tmp_path / "none.sqlite")
    assert code == 2 and one_line_error(err) and not (tmp_path / "none.sqlite").exists()


def test_newer_database_exit_2_database_untouched_nothing_run(tmp_path, write_suite, capsys, monkeypatch):
    from tests.test_cli_report import FAST_SUITE

    db, _ = _db(tmp_path, 1)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {H.SCHEMA_VERSION + 5}")
    con.commit()
    con.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    run = make_run(tmp_path, "x")
    for args in (("history", "--db", db), ("history", "--db", db, "--suite", "fake"),
                 ("compare", "history:fake", run, "--db", db)):
        code, _, err = cli(capsys, monkeypatch, *args)
        assert code == 2 and one_line_error(err) and "newer than this mmbench" in err, (args, err)
    out = tmp_path / "res"
    r = run_cli("run", str(write_suite(FAST_SUITE)), "--out", str(out), "--db", str(db))
    assert r.returncode == 2 and "newer than this mmbench" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything ran
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
