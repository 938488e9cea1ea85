"""The history database: records, trends, baselines, schema versions and migrations."""
import hashlib
import sqlite3

import pytest

from mmbench import history as H
from mmbench.errors import UserError
from tests.fakerun import ENV, make_run, trials


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_stores_runs_trials_and_every_measurement_with_samples(tmp_path):
    db = tmp_path / "h.sqlite"
    run = make_run(tmp_path, "a")
    H.record_run(db, run)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == H.SCHEMA_VERSION
    (suite, sha, fp, state), = con.execute("SELECT suite, git_sha, env_fingerprint, state FROM runs").fetchall()
    assert (suite, sha, fp, state) == ("fake", ENV["mmbench_git_sha"], H.fingerprint(ENV), "complete")
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == len(trials())
    tid = trials()[0]["trial_id"]
    value, samples = con.execute("SELECT value, samples_json FROM measurements WHERE trial_id = ? AND metric = "
                                 "'fusion_latency_ms_b1'", (tid,)).fetchone()
    import json
    assert len(json.loads(samples)) == 30 and min(json.loads(samples)) <= value <= max(json.loads(samples))
    seeds = con.execute("SELECT samples_json FROM measurements WHERE trial_id = ? AND metric = 'acc_mean'",
                        (tid,)).fetchone()[0]
    assert len(json.loads(seeds)) == 3
    assert con.execute("SELECT config_json FROM trials WHERE id = ?", (tid,)).fetchone()[0]
    # recording the same run again replaces it, a second run adds one
    H.record_run(db, run)
    H.record_run(db, make_run(tmp_path, "b", seed=1))
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == len(trials())


def test_fingerprint_ignores_hostname_but_not_the_cpu():
    assert H.fingerprint({**ENV, "hostname": "other"}) == H.fingerprint(ENV)
    assert H.fingerprint({**ENV, "python": "3.11.9"}) == H.fingerprint(ENV)
    assert H.fingerprint({**ENV, "cpu_model": "Other CPU"}) != H.fingerprint(ENV)
    assert H.fingerprint({**ENV, "device": "cuda"}) != H.fingerprint(ENV)


def test_trend_follows_a_metric_over_runs(tmp_path):
    db = tmp_path / "h.sqlite"
    tid = trials()[0]["trial_id"]
    for i, factor in enumerate((1.0, 1.5, 2.0)):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, slow={tid: factor}, started=f"2026-01-0{i + 1}T00:00"))
    series = H.trend(db, "fake", "fusion_latency_ms_b1", trial=tid[:6])
    assert list(series) == [(tid, "tfn · 4x4x4")]
    values = [p.value for p in series[(tid, "tfn · 4x4x4")]]
    assert values[0] < values[1] < values[2] and values[2] / values[0] == pytest.approx(2.0, rel=0.05)
    assert len(H.trend(db, "fake", "params", last=2)[(tid, "tfn · 4x4x4")]) == 2
    with pytest.raises(UserError, match="did you mean 'fusion_latency_ms_b1'"):
        H.trend(db, "fake", "fusion_latency_ms_b")
    with pytest.raises(UserError, match="no runs of suite 'other'"):
        H.trend(db, "other", "params")
    with pytest.raises(UserError, match="no trial 'zzz'"):
        H.trend(db, "fake", "params", trial="zzz")


def test_baseline_is_the_median_of_the_last_runs_on_the_same_environment(tmp_path):
    db = tmp_path / "h.sqlite"
    tid = trials()[0]["trial_id"]
    for i, factor in enumerate((5.0, 1.0, 1.1, 1.2)):  # the oldest is left out by last=3
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, slow={tid: factor}, started=f"2026-01-0{i + 1}T00:00"))
    H.record_run(db, make_run(tmp_path, "other-cpu", env={"cpu_model": "Other"}, slow={tid: 9.0},
                              started="2026-01-09T00:00"))
    H.record_run(db, make_run(tmp_path, "broken", state="interrupted", slow={tid: 9.0}, started="2026-01-08T00:00"))
    b = H.baseline(db, "fake", H.fingerprint(ENV), last=3)
    assert b.run_keys == ["fake/r3", "fake/r2", "fake/r1"]
    one = H.trend(db, "fake", "fusion_latency_ms_b1", trial=tid)[(tid, "tfn · 4x4x4")]
    medians = sorted(p.value for p in one if p.run_key in b.run_keys)
    assert b.rows[tid]["fusion_latency_ms_b1"] == pytest.approx(medians[1])
    assert sorted(b.per_run[tid]["fusion_latency_ms_b1"]) == pytest.approx(medians)  # runs are the unit
    assert b.rows[tid]["threads"] == 1 and b.rows[tid]["fusion_latency_contended_b1"] is False
    # per trial: the last runs that hold it (a trial only in older runs still finds its own)
    old = trials(methods=("early",), dims=(4,))
    H.record_run(db, make_run(tmp_path, "r-old", specs=old + trials(), started="2025-12-31T00:00"))
    b = H.baseline(db, "fake", H.fingerprint(ENV), last=3, trials=[old[0]["trial_id"], tid])
    assert set(b.rows) == {old[0]["trial_id"], tid} and b.run_keys[-1] == "fake/r-old"
    assert len(b.per_run[tid]["fusion_latency_ms_b1"]) == 3 and len(b.per_run[old[0]["trial_id"]]["params"]) == 1
    # the current run is left out of its own baseline
    assert H.baseline(db, "fake", H.fingerprint(ENV), last=3, exclude_run_key="fake/r3").run_keys[0] == "fake/r2"
    with pytest.raises(UserError, match="no baseline.*on this environment"):
        H.baseline(db, "fake", "0" * 12)
    with pytest.raises(UserError, match="no baseline.*at all"):
        H.baseline(db, "nope", H.fingerprint(ENV))


def test_older_database_is_migrated_keeping_its_records(tmp_path):
    db = tmp_path / "h.sqlite"
    con = sqlite3.connect(db)  # a version-1 database, as an earlier mmbench wrote it
    con.executescript(H.MIGRATIONS[0])
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    H.record_run(db, make_run(tmp_path, "a"))  # readable before migration …
    assert H.list_runs(db)[0].run_key == "fake/a"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == H.SCHEMA_VERSION
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"runs_by_suite", "measurements_by_metric"} <= indexes


def test_older_database_is_read_without_being_changed(tmp_path):
    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path, "a"))
    con = sqlite3.connect(db)
    con.execute("DROP INDEX runs_by_suite")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    before = _digest(db)
    assert len(H.list_runs(db)) == 1 and H.trend(db, "fake", "params")
    assert _digest(db) == before


def test_newer_database_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path, "a"))
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {H.SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = _digest(db)
    for call in (lambda: H.record_run(db, make_run(tmp_path, "b")), lambda: H.list_runs(db),
                 lambda: H.check_writable(db), lambda: H.trend(db, "fake", "params")):
        with pytest.raises(UserError, match="newer than this mmbench"):
            call()
    assert _digest(db) == before


def test_missing_or_foreign_database_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no history database"):
        H.list_runs(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()
    junk = tmp_path / "junk.sqlite"
    junk.write_text("this is not a database" * 100)
    before = _digest(junk)
    with pytest.raises(UserError, match="cannot open history database"):
        H.record_run(junk, make_run(tmp_path, "a"))
    assert _digest(junk) == before


def test_find_db_picks_the_default_then_a_single_out_folder_and_refuses_to_guess(tmp_path):
    with pytest.raises(UserError, match="no history database: looked for"):
        H.find_db(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "history.sqlite").write_bytes(b"")
    db, note = H.find_db(tmp_path)
    assert db == tmp_path / "mine" / "history.sqlite" and note == f"history database: {db}"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "history.sqlite").write_bytes(b"")
    with pytest.raises(UserError, match="choose one with --db"):
        H.find_db(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "history.sqlite").write_bytes(b"")
    assert H.find_db(tmp_path) == (tmp_path / H.DEFAULT_DB, None)  # the default wins, with nothing to say
