"""The history database: every run, its trials and every measurement with its raw samples, in SQLite.

Tables (schema version in PRAGMA user_version; MIGRATIONS[i] takes a database from version i to i + 1):
  runs          one per run directory: suite, state, times, git sha, environment fingerprint, env as JSON
  trials        one per trial id (the hash of its config, so the same in every run): task, method, label, config
  results       run × trial: status and error
  measurements  run × trial × metric: the value and its raw samples (JSON list) when the run kept them
  verdicts      a run judged by `compare history:…` (the nightly gate): how many regressions, which, and whether a
                person accepted them (who, when, why). A run with unaccepted regressions is left out of every
                baseline, so a regression stays red night after night until someone accepts it.

Reading never writes: the database is opened read-only for history and compare, so a missing or newer database is an
error that leaves the file as it was. (One exception: after a writer was killed mid-transaction, the first open rolls
its journal back, as SQLite must before anyone can read; the file returns to its last committed state.)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mmbench import evidence
from mmbench import vocabulary as V
from mmbench.errors import UserError

MIGRATIONS: list[str] = [
    # 0 → 1: the tables
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_key TEXT NOT NULL UNIQUE,          -- <suite>/<run directory name>
        suite TEXT NOT NULL,
        state TEXT NOT NULL,
        started TEXT, finished TEXT,
        git_sha TEXT,
        env_fingerprint TEXT NOT NULL,
        env_json TEXT NOT NULL,
        path TEXT
    );
    CREATE TABLE trials (
        id TEXT PRIMARY KEY,                   -- the trial id: hash of the config
        task TEXT, method TEXT, label TEXT, dims TEXT, rank TEXT,
        config_json TEXT
    );
    CREATE TABLE results (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        trial_id TEXT NOT NULL REFERENCES trials(id),
        status TEXT NOT NULL, error TEXT,
        PRIMARY KEY (run_id, trial_id)
    );
    CREATE TABLE measurements (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        trial_id TEXT NOT NULL REFERENCES trials(id),
        metric TEXT NOT NULL,
        value REAL,
        samples_json TEXT,
        PRIMARY KEY (run_id, trial_id, metric)
    );
    """,
    # 1 → 2: indexes for the queries history and compare make (a trend of one metric; the last runs of a suite)
    """
    CREATE INDEX runs_by_suite ON runs (suite, env_fingerprint, started);
    CREATE INDEX measurements_by_metric ON measurements (trial_id, metric);
    """,
    # 2 → 3: instruction counts' own environment (their history survives a runner's CPU model changing); verdicts
    """
    ALTER TABLE runs ADD COLUMN instr_fingerprint TEXT;
    CREATE INDEX runs_by_instr ON runs (suite, instr_fingerprint, started);
    CREATE TABLE verdicts (
        run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        judged TEXT NOT NULL,
        baseline TEXT,
        regressions INTEGER NOT NULL,
        regressed_json TEXT,                   -- [[trial id, label, metric, change], ...]
        accepted TEXT, accepted_by TEXT, accepted_why TEXT
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
DEFAULT_DB = Path("results/history.sqlite")

def find_db(here: str | Path = ".") -> tuple[Path, str | None]:
    """The history database to read when none is named, and a note saying which was found where that is not the
    default: the one a plain `mmbench run` (default --out results) wrote, else the one a run with another --out wrote
    here (OUT/history.sqlite, OUT a folder of ``here``). Neither, or several: a UserError saying where it looked."""
    here = Path(here)
    if (here / DEFAULT_DB).is_file():
        return here / DEFAULT_DB, None
    found = sorted(p for p in [here / "history.sqlite", *here.glob("*/history.sqlite")] if p.is_file())
    if len(found) == 1:
        return found[0], f"history database: {found[0]}"
    if found:
        raise UserError(f"no {DEFAULT_DB}; found {', '.join(map(str, found))}: choose one with --db")
    raise UserError(f"no history database: looked for {DEFAULT_DB}, ./history.sqlite and ./*/history.sqlite (a run "
                    "records into OUT/history.sqlite, OUT its --out); give --db")


# What changes a timing. Not the hostname (CI runners get a new one every time) nor the memory size.
FINGERPRINT_KEYS = ("device", "cpu_model", "cpu_count_logical", "gpu_name", "torch", "python", "torch_threads")


def fingerprint(env: dict[str, Any]) -> str:
    parts = {k: env.get(k) for k in FINGERPRINT_KEYS}
    if isinstance(parts["python"], str):
        parts["python"] = ".".join(parts["python"].split(".")[:2])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def instr_fingerprint(env: dict[str, Any]) -> str | None:
    """The fingerprint of the instruction counts' environment (measure/instructions.py: torch, Python, libc, the
    pinned capability, valgrind, the CPU vendor; not the CPU model), None for a run that counted none."""
    info = env.get("instructions")
    return info.get("fingerprint") if isinstance(info, dict) else None


def row_fingerprint(env: dict[str, Any], row: dict[str, Any]) -> str:
    """The environment fingerprint of one row: its own ``env_fingerprint`` (a cluster row carries its node's), else
    the run's environment with the thread count the trial really used, so that the same machine gives the same
    fingerprint whichever executor ran the trial."""
    if row.get("env_fingerprint"):
        return row["env_fingerprint"]
    return fingerprint({**env, "torch_threads": row.get("threads") or env.get("torch_threads")})


def _version(con: sqlite3.Connection) -> int:
    return con.execute("PRAGMA user_version").fetchone()[0]


def _check_version(con: sqlite3.Connection, path: Path) -> int:
    v = _version(con)
    if v > SCHEMA_VERSION:
        raise UserError(f"history database has schema version {v}, newer than this mmbench understands "
                        f"({SCHEMA_VERSION}): upgrade mmbench or use another --db", file=str(path))
    return v


def _recover(path: Path) -> None:
    """A writer killed mid-transaction leaves a hot journal, which only a connection that may write can roll back;
    a read-only open would fail ("attempt to write a readonly database"). Rolling it back returns the file to its
    last committed state: the one change a read makes, and only after a killed writer."""
    journal = path.with_name(path.name + "-journal")
    if not (journal.exists() and journal.stat().st_size > 0):
        return
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            con.execute("PRAGMA user_version").fetchone()  # the first read rolls a hot journal back
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise UserError(f"a write to this history database was cut short and cannot be rolled back here ({exc}): "
                        "open it once where it can be written", file=str(path)) from None


BUSY_TIMEOUT_S = 30.0  # how long a reader or writer waits for another process's lock on the database (said at once)
_CORRUPT, _NOTADB, _BUSY, _LOCKED = 11, 26, 5, 6  # SQLite's result codes


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) in (_BUSY, _LOCKED) or "locked" in str(exc))


def _damaged(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in (_CORRUPT, _NOTADB)
        or any(w in str(exc) for w in ("malformed", "not a database", "corrupt")))


class DamagedDatabase(UserError):
    """The history database is damaged: never used, never written."""


class BusyDatabase(UserError):
    """Another process held the history database's lock past BUSY_TIMEOUT_S."""


def named(exc: sqlite3.Error, path: str | Path) -> UserError:
    """One line for what SQLite said about the history database: damaged (what to do), still locked, or else."""
    if _damaged(exc):
        what = ("cannot open history database: file is not a database (damaged, or another program's file)"
                if "not a database" in str(exc) else f"the history database is damaged ({exc})")
        return DamagedDatabase(f"{what}: it is not used; restore it from a backup, or give a new --db (run "
                               "directories are unaffected: `mmbench history --record RUN_DIR --db NEW` records each "
                               "into it)", file=str(path))
    if _busy(exc):
        return BusyDatabase(f"the history database is still locked by another process after {BUSY_TIMEOUT_S:g} s "
                            f"({exc}): try again once that process is done", file=str(path))
    return UserError(f"cannot use the history database: {exc}", file=str(path))


def _say_waiting(path: Path) -> None:
    print(f"mmbench: {path}: the history database is locked by another process; waiting up to "
          f"{BUSY_TIMEOUT_S:g} s", file=sys.stderr, flush=True)


def _waiting(con: sqlite3.Connection, path: Path, sql: str, wait: bool = True):
    """``sql`` at once if the database is free, else (saying so) after waiting up to BUSY_TIMEOUT_S."""
    con.execute("PRAGMA busy_timeout = 0")
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if not (wait and _busy(exc)):
            raise
        _say_waiting(path)
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return con.execute(sql).fetchall()
    finally:
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _connect(path: Path, mode: str, wait: bool = True) -> sqlite3.Connection:
    """The one way the history is opened: a damaged file (``PRAGMA quick_check``: every page read once, ~2 ms a
    MiB) is never used; a locked one is waited for up to BUSY_TIMEOUT_S (``wait``) and said so."""
    if mode == "ro":
        _recover(path)
    con = None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT_S)
        check = _waiting(con, path, "PRAGMA quick_check(1)", wait)  # a file that is not a database fails here too
        if check != [("ok",)]:
            first = " ".join(str(check[0][0]).replace("*** in database main ***", "").split()) if check else "?"
            raise sqlite3.DatabaseError(f"database disk image is malformed: {first}")
    except sqlite3.DatabaseError as exc:
        if con is not None:
            con.close()
        if _damaged(exc) or _busy(exc):
            raise named(exc, path) from None
        raise UserError(f"cannot open history database: {exc}", file=str(path)) from None
    con.execute("PRAGMA foreign_keys = ON")
    return con


def _sqlite_errors_named(fn):
    """A reader of the history: what SQLite raises past the open (a damaged page, a lock held too long) is one
    line naming the file, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(db, *args, **kwargs):
        try:
            return fn(db, *args, **kwargs)
        except sqlite3.Error as exc:
            raise named(exc, db) from None
    return wrapper


def check_writable(path: str | Path) -> None:
    """Fail before a run starts (exit 2, nothing written) when the database could not take its record: damaged,
    newer. One locked now is no reason to refuse: the record comes at the end, and waits then."""
    p = Path(path)
    if p.exists():
        try:
            con = _connect(p, "ro", False)
        except BusyDatabase:
            return
        try:
            _check_version(con, p)
        finally:
            con.close()


def open_db(path: str | Path, *, write: bool = False) -> sqlite3.Connection:
    """Open (and, for writing, create or migrate) the database. Read-only opens never change the file.

    A database without tables (a 0-byte file, a creation cut by a kill) is a new, empty one: read, it answers as an
    empty history; written, it gets the schema."""
    p = Path(path)
    if not write:
        if not p.exists():
            raise UserError("no history database here (runs are recorded by `mmbench run`)", file=str(p))
        con = _connect(p, "ro")
        try:
            if _check_version(con, p) == 0:  # nothing recorded yet: answer from an empty database of this version
                con.close()
                con = sqlite3.connect(":memory:")
                _migrate(con, p)
        except BaseException:
            con.close()
            raise
        # An older version is read as it is (reads never write); so far versions differ only in indexes.
        return con
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the history database's folder: {exc.strerror}", file=str(p)) from None
    con = _connect(p, "rwc")
    try:
        _migrate(con, p)
    except sqlite3.Error as exc:  # disk full, read-only, locked: the file keeps its last committed state
        con.close()
        if _damaged(exc) or _busy(exc):
            raise named(exc, p) from None
        raise UserError(f"cannot write the history database: {exc}", file=str(p)) from None
    except BaseException:
        con.close()
        raise
    return con


def _migrate(con: sqlite3.Connection, p: Path) -> None:
    """Schema creation and every migration in one transaction, so that a kill or a full disk at any point leaves
    the database as it was. (Python's sqlite3 commits before DDL on its own, so the transaction is explicit.)"""
    level = con.isolation_level
    con.isolation_level = None
    try:
        _waiting(con, p, "BEGIN IMMEDIATE")  # the write lock first: two runs finishing at once migrate in turn
        try:
            v = _check_version(con, p)
            if v < SCHEMA_VERSION:
                if v == 0:
                    _drop_leftovers(con, p)
                for i in range(v, SCHEMA_VERSION):
                    for stmt in MIGRATIONS[i].split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
    finally:
        con.isolation_level = level


OUR_TABLES = ("runs", "trials", "results", "measurements")


def _drop_leftovers(con: sqlite3.Connection, p: Path) -> None:
    """Version 0 with tables: empty tables of ours are a creation an earlier mmbench left half done (its schema was
    not one transaction), dropped and made again; anything else is not ours to touch."""
    names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                       "'sqlite_%'")]
    foreign = [n for n in names if n not in OUR_TABLES]
    if foreign or any(con.execute(f'SELECT 1 FROM "{n}" LIMIT 1').fetchone() for n in names):
        raise UserError(f"not an mmbench history database (it holds tables {', '.join(sorted(names))} but no "
                        "schema version): use another --db", file=str(p))
    for n in ("measurements", "results", "trials", "runs"):  # children first: foreign keys
        if n in names:
            con.execute(f'DROP TABLE "{n}"')


def _metrics(row: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """Every number of a row (flags as 0/1: a baseline leaves flagged runs out; threads: timings differ with it)."""
    for k, v in row.items():
        if not isinstance(v, (int, float)) or k == "rank":
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        yield k, float(v)


def raw_samples(metric: str, raw: dict[str, Any]) -> list[float] | None:
    """The raw samples behind a metric: latency lists by their column name; each seed's score for X_mean."""
    col = V.column(metric)
    if isinstance(raw.get(metric), list):
        vals = raw[metric]
    elif col is not None and col.term.kind == V.SCORE and isinstance(raw.get("seeds"), list):
        key = col.term.name
        legacy = {"acc": "test_accuracy", "f1": "test_macro_f1"}.get(key)
        seeds = [s for s in raw["seeds"] if isinstance(s, dict)]
        vals = [s["test"].get(key) if isinstance(s.get("test"), dict) else s.get(legacy) for s in seeds]
    else:
        return None
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return vals or None


def record_run(db: str | Path, run_dir: str | Path) -> int:
    """Record (or re-record) a run directory; returns its run id. Idempotent per run directory."""
    from mmbench.store import load_run

    run = load_run(run_dir)
    resolved = {t["id"]: t for t in run.resolved.get("trials", [])}
    try:
        con = open_db(db, write=True)
    except UserError as exc:
        raise RecordFailed(exc.message, db, run.path, damaged=isinstance(exc, DamagedDatabase)) from None
    try:
        _waiting(con, Path(db), "BEGIN IMMEDIATE")  # the write lock, waited for (and said) when another holds it
        return _insert_run(con, run, resolved)
    except sqlite3.Error as exc:  # locked, read-only, disk full, damaged: the run itself is safe in its directory
        why = named(exc, db).message if _damaged(exc) or _busy(exc) else f"cannot record the run in the history " \
            f"database: {exc}"
        raise RecordFailed(why, db, run.path, damaged=_damaged(exc)) from None
    finally:
        con.close()


class RecordFailed(UserError):
    """The history could not take a run; the run directory is untouched and can be recorded later."""

    def __init__(self, why: str, db: str | Path, run_dir: Path, damaged: bool = False):
        self.db, self.run_dir = Path(db), Path(run_dir)
        later = "NEW" if damaged else db
        super().__init__(f"{why}; the run directory {run_dir} is complete on disk: record it later with "
                         f"`mmbench history --record {run_dir} --db {later}`"
                         + ("" if damaged else " (the next run records it too)"), file=str(db))


@_sqlite_errors_named
def unrecorded(db: str | Path, suite_dir: str | Path) -> list[Path]:
    """Run directories under OUT/<suite>/ that the database does not hold (a record that failed: a full disk, a
    kill), oldest first; [] when there is no database yet."""
    suite_dir = Path(suite_dir)
    runs = sorted(p for p in suite_dir.glob("*/run.json"))
    if not runs or not Path(db).exists():
        return []
    con = open_db(db)
    try:
        known = {k for (k,) in con.execute("SELECT run_key FROM runs")}
    finally:
        con.close()
    return [r.parent for r in runs if f"{suite_dir.name}/{r.parent.name}" not in known]


def _insert_run(con: sqlite3.Connection, run, resolved: dict[str, Any]) -> int:
    """One transaction: a run is recorded whole or not at all."""
    with con:
        key = f"{run.suite}/{run.path.name}"
        verdict = con.execute("SELECT v.* FROM verdicts v JOIN runs r ON r.id = v.run_id WHERE r.run_key = ?",
                              (key,)).fetchone()  # a run recorded again keeps its verdict and its acceptance
        con.execute("DELETE FROM runs WHERE run_key = ?", (key,))
        cur = con.execute(
            "INSERT INTO runs (run_key, suite, state, started, finished, git_sha, env_fingerprint, env_json, path, "
            "instr_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, run.suite, run.meta.get("state", "?"), run.meta.get("started"), run.meta.get("finished"),
             run.env.get("mmbench_git_sha") or run.env.get("git_sha"), fingerprint(run.env),
             json.dumps(run.env, default=str), str(run.path.resolve()), instr_fingerprint(run.env)))
        run_id = cur.lastrowid
        if verdict is not None:
            con.execute("INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (run_id, *verdict[1:]))
        for r in {r["trial_id"]: r for r in run.rows}.values():  # a trial twice (a resume's rows): the last one
            tid = r["trial_id"]
            config = resolved.get(tid)
            con.execute("INSERT INTO trials (id, task, method, label, dims, rank, config_json) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET label = excluded.label, "
                        "config_json = COALESCE(excluded.config_json, trials.config_json)",
                        (tid, r.get("task"), r.get("method"), r.get("label"), r.get("dims"),
                         None if r.get("rank") is None else str(r.get("rank")),
                         json.dumps(config, default=str) if config else None))
            con.execute("INSERT INTO results (run_id, trial_id, status, error) VALUES (?, ?, ?, ?)",
                        (run_id, tid, r.get("status", "?"), r.get("error")))
            raw = run.samples.get(tid, {})
            con.executemany(
                "INSERT INTO measurements (run_id, trial_id, metric, value, samples_json) VALUES (?, ?, ?, ?, ?)",
                [(run_id, tid, m, v, json.dumps(s) if (s := raw_samples(m, raw)) else None)
                 for m, v in _metrics(r)])
    return run_id


@dataclass
class RunInfo:
    id: int
    run_key: str
    suite: str
    state: str
    started: str
    git_sha: str | None
    fingerprint: str
    trials: int
    verdict: str | None = None    # the gate's: "3 regressions", "3 regressions, accepted", "clean"; None: not judged


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    """An older database read as it is (reads never migrate) may lack a table of this version."""
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record_verdict(db: str | Path, run_key: str, baseline_name: str, regressed: list[tuple[str, str, str, float | None]]
                   ) -> bool:
    """The gate's verdict on a recorded run (compare against the history): its regressions, [(trial id, label,
    metric, change)]. A run with regressions then stays out of every baseline until accepted. False when the run is
    not in this database (a run directory compared against someone else's history: nothing to mark)."""
    con = open_db(db, write=True)
    try:
        with con:
            row = con.execute("SELECT id FROM runs WHERE run_key = ?", (run_key,)).fetchone()
            if row is None:
                return False
            old = con.execute("SELECT accepted, accepted_by, accepted_why FROM verdicts WHERE run_id = ?",
                              (row[0],)).fetchone()
            con.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (row[0], _now(), baseline_name, len(regressed), json.dumps(regressed),
                         *(old if old and regressed else (None, None, None))))
        return True
    except sqlite3.Error as exc:
        raise UserError(f"cannot record the verdict in the history database: {exc}", file=str(db)) from None
    finally:
        con.close()


@dataclass
class Verdict:
    run_key: str
    judged: str
    regressions: int
    regressed: list[list[Any]]
    accepted: str | None
    accepted_by: str | None
    accepted_why: str | None


def verdicts(db: str | Path, suite: str, unaccepted_only: bool = False) -> list[Verdict]:
    """The suite's judged runs with regressions, oldest first (``unaccepted_only``: those nobody accepted)."""
    con = open_db(db)
    try:
        if not _has_table(con, "verdicts"):
            return []
        q = ("SELECT r.run_key, v.judged, v.regressions, v.regressed_json, v.accepted, v.accepted_by, v.accepted_why "
             "FROM verdicts v JOIN runs r ON r.id = v.run_id WHERE r.suite = ? AND v.regressions > 0"
             + (" AND v.accepted IS NULL" if unaccepted_only else "") + " ORDER BY r.started, r.id")
        return [Verdict(k, j, n, json.loads(rj or "[]"), a, ab, aw) for k, j, n, rj, a, ab, aw in con.execute(q, (suite,))]
    finally:
        con.close()


def accept(db: str | Path, run: str, why: str, who: str | None = None) -> Verdict:
    """A person accepts a run's regressions (a change that was meant): the run joins the baselines again, and its
    figures become the instruction counts' baseline. ``run``: a run key (suite/run-dir name) or a run directory."""
    import getpass

    key = run
    p = Path(run)
    if (p / "run.json").is_file():
        key = f"{json.loads((p / 'run.json').read_text()).get('suite', p.parent.name)}/{p.name}"
    who = who or os.environ.get("GITHUB_ACTOR") or getpass.getuser()
    con = open_db(db, write=True)
    try:
        with con:
            row = con.execute("SELECT v.run_id, v.regressions, v.accepted FROM verdicts v JOIN runs r ON "
                              "r.id = v.run_id WHERE r.run_key = ?", (key,)).fetchone()
            if row is None or not row[1]:
                known = [v.run_key for v in verdicts(db, key.split("/")[0], unaccepted_only=True)] if "/" in key else []
                raise UserError(f"run '{key}' has no regressions to accept"
                                + (f"; unaccepted: {', '.join(known)}" if known else ""), file=str(db))
            con.execute("UPDATE verdicts SET accepted = ?, accepted_by = ?, accepted_why = ? WHERE run_id = ?",
                        (_now(), who, why, row[0]))
    except sqlite3.Error as exc:
        raise UserError(f"cannot record the acceptance in the history database: {exc}", file=str(db)) from None
    finally:
        con.close()
    return next(v for v in verdicts(db, key.split("/")[0]) if v.run_key == key)


@_sqlite_errors_named
def list_runs(db: str | Path, suite: str | None = None) -> list[RunInfo]:
    con = open_db(db)
    try:
        judged = _has_table(con, "verdicts")
        q = ("SELECT r.id, r.run_key, r.suite, r.state, r.started, r.git_sha, r.env_fingerprint, "
             "(SELECT COUNT(*) FROM results x WHERE x.run_id = r.id)"
             + (", v.regressions, v.accepted FROM runs r LEFT JOIN verdicts v ON v.run_id = r.id" if judged
                else ", NULL, NULL FROM runs r"))
        args: tuple = ()
        if suite:
            q, args = q + " WHERE r.suite = ?", (suite,)

        def verdict(n, accepted) -> str | None:
            if n is None:
                return None
            return "clean" if not n else f"{n} regression(s)" + (", accepted" if accepted else "")
        return [RunInfo(*row[:8], verdict(*row[8:])) for row in con.execute(q + " ORDER BY r.started, r.id", args)]
    finally:
        con.close()


@dataclass
class TrendPoint:
    run_key: str
    started: str
    git_sha: str | None
    value: float | None
    status: str


@_sqlite_errors_named
def trend(db: str | Path, suite: str, metric: str, trial: str | None = None, last: int | None = None,
          env_fingerprint: str | None = None) -> dict[tuple[str, str], list[TrendPoint]]:
    """{(trial id, 'label · dims'): points over the suite's runs, oldest first}. ``trial``: an id or id prefix;
    ``env_fingerprint``: only runs on that environment."""
    con = open_db(db)
    try:
        if not con.execute("SELECT 1 FROM runs WHERE suite = ?", (suite,)).fetchone():
            raise UserError(f"no runs of suite '{suite}' in the history database", file=str(db))
        known = {m for (m,) in con.execute("SELECT DISTINCT m.metric FROM measurements m JOIN runs r ON r.id = "
                                           "m.run_id WHERE r.suite = ?", (suite,))}
        if metric not in known:
            from mmbench.errors import closest

            raise UserError(f"no metric '{metric}' in the runs of suite '{suite}'{closest(metric, known)}; "
                            f"recorded: {', '.join(sorted(known)) or 'none'}", file=str(db))
        runs = con.execute("SELECT id, run_key, started, git_sha FROM runs WHERE suite = ? AND (? IS NULL OR "
                           "env_fingerprint = ?) ORDER BY started, id", (suite, env_fingerprint, env_fingerprint)
                           ).fetchall()
        if last:
            runs = runs[-last:]
        q = ("SELECT x.trial_id, t.label, t.dims, x.status, m.value FROM results x JOIN trials t ON t.id = x.trial_id "
             "LEFT JOIN measurements m ON m.run_id = x.run_id AND m.trial_id = x.trial_id AND m.metric = ? "
             "WHERE x.run_id = ? ORDER BY x.rowid")
        out: dict[tuple[str, str], list[TrendPoint]] = {}
        for run_id, key, started, sha in runs:
            for tid, label, dims, status, value in con.execute(q, (metric, run_id)):
                if trial and not tid.startswith(trial):
                    continue
                out.setdefault((tid, f"{label} · {dims}"), []).append(TrendPoint(key, started, sha, value, status))
        if trial and not out:
            raise UserError(f"no trial '{trial}' in the runs of suite '{suite}'", file=str(db))
        return out
    finally:
        con.close()


@dataclass
class Baseline:
    """The history's baseline: per trial, its last runs; per metric the median value and every run's value."""
    suite: str
    fingerprint: str
    run_keys: list[str]                          # every run used, newest first
    rows: dict[str, dict[str, Any]]              # trial id → {label, task, dims, status, metric: median …}
    per_run: dict[str, dict[str, list[float]]]   # trial id → metric → each run's value (flagged timings left out)
    # trial id → (its host_ref_ms, its unflagged timings) in each of up to ``pool`` runs, newest first: compare matches
    # a timing with the runs taken at the host speed of the run it judges (a VM's vCPUs switch speeds for minutes)
    at_speed: dict[str, list[tuple[float | None, dict[str, float]]]] = field(default_factory=dict)


@_sqlite_errors_named
def baseline(db: str | Path, suite: str, env_fingerprint: str, last: int = 5,
             exclude_run_key: str | None = None, trials: list[str] | None = None, pool: int = 0,
             by: str = "env_fingerprint") -> Baseline:
    """The last ``last`` complete runs of a suite on one environment, leaving out runs whose regressions nobody
    accepted (verdicts). With ``trials``: per trial, the last runs that hold it (a --quick run's trials have other
    ids than a full run's, so each is matched with its own budget); none of them there: "no baseline", as when there
    is no run at all (every trial is new). ``pool``: per trial, the timings and host speed of up to that many last
    runs too (Baseline.at_speed).
    ``by``: which fingerprint selects the runs: the environment's (timings, memory), or ``instr_fingerprint`` (the
    instruction counts', which a runner's new CPU model does not change; their figure is the newest run's)."""
    if by not in ("env_fingerprint", "instr_fingerprint"):
        raise ValueError(by)
    depth = max(last, pool)
    con = open_db(db)
    try:
        if by == "instr_fingerprint" and not _has_table(con, "verdicts"):
            raise UserError("no baseline: no instruction counts in this history database (recorded by an older "
                            "mmbench)", file=str(db))
        open_regressions = ("AND id NOT IN (SELECT run_id FROM verdicts WHERE regressions > 0 AND accepted IS NULL)"
                            if _has_table(con, "verdicts") else "")
        runs = con.execute(f"SELECT id, run_key FROM runs WHERE suite = ? AND {by} = ? AND state = "
                           f"'complete' AND run_key IS NOT ? {open_regressions} ORDER BY started DESC, id DESC",
                           (suite, env_fingerprint, exclude_run_key)).fetchall()
        if not runs:
            any_suite = con.execute("SELECT COUNT(*) FROM runs WHERE suite = ?", (suite,)).fetchone()[0]
            what = "instruction-count environment" if by == "instr_fingerprint" else "environment"
            why = f"on this {what} (fingerprint {env_fingerprint})" if any_suite else "at all"
            raise UserError(f"no baseline: no complete runs of suite '{suite}' {why} in the history database",
                            file=str(db))
        keys = dict(runs)
        chosen: dict[str, list[int]] = {}  # trial → its runs, newest first
        if trials is None:
            for run_id, _ in runs[:depth]:
                for (tid,) in con.execute("SELECT trial_id FROM results WHERE run_id = ?", (run_id,)):
                    chosen.setdefault(tid, []).append(run_id)
        else:
            wanted = set(trials)
            for run_id, _ in runs:
                for (tid,) in con.execute("SELECT trial_id FROM results WHERE run_id = ?", (run_id,)):
                    if tid in wanted and len(chosen.setdefault(tid, [])) < depth:
                        chosen[tid].append(run_id)
            if not chosen:  # said as "no baseline": the nightly job starts a new history then, as on its first night
                raise UserError(f"no baseline: none of the {len(wanted)} trials is in a complete run of suite "
                                f"'{suite}' on this environment (a changed suite or budget, --quick or not, gives new "
                                "trial ids): they start their history with this run", file=str(db))
        picked = {r for rs in chosen.values() for r in rs[:last]}
        used = [r for r, _ in runs if r in picked]  # newest first: the runs of the medians
        per_run_values: dict[tuple[int, str], dict[str, float]] = {}
        info: dict[tuple[int, str], tuple[str, str | None]] = {}
        trial_info: dict[str, dict[str, Any]] = {}
        for run_id in {r for rs in chosen.values() for r in rs}:
            for tid, metric, value in con.execute("SELECT trial_id, metric, value FROM measurements WHERE run_id = ?",
                                                  (run_id,)):
                if tid in chosen and run_id in chosen[tid] and value is not None:
                    per_run_values.setdefault((run_id, tid), {})[metric] = value
            for tid, status, error, task, label, dims in con.execute(
                    "SELECT x.trial_id, x.status, x.error, t.task, t.label, t.dims FROM results x JOIN trials t ON "
                    "t.id = x.trial_id WHERE x.run_id = ?", (run_id,)):
                if tid in chosen and run_id in chosen[tid]:
                    info[(run_id, tid)] = (status, error)
                    trial_info.setdefault(tid, {"trial_id": tid, "task": task, "label": label, "dims": dims})
        rows: dict[str, dict[str, Any]] = {}
        per_run: dict[str, dict[str, list[float]]] = {}
        at_speed: dict[str, list[tuple[float | None, dict[str, float]]]] = {}
        for tid, pooled in chosen.items():
            if pool:
                ok_runs = [per_run_values.get((r, tid), {}) for r in pooled[:pool] if info.get((r, tid), ("",))[0] == "ok"]
                at_speed[tid] = [(v.get(V.HOST_REF), {m: x for m, x in v.items() if V.timing(m)
                                                      and not evidence.flags(v, m)}) for v in ok_runs]
            run_ids = pooled[:last]
            statuses = [info[(r, tid)][0] for r in run_ids if (r, tid) in info]
            if not statuses:
                continue
            row = rows[tid] = dict(trial_info[tid])
            # ok if it was ok in most of the runs: one flaky failure does not remove a baseline
            ok = statuses.count("ok") * 2 > len(statuses)
            row["status"] = "ok" if ok else statistics.mode(s for s in statuses if s != "ok")
            if not ok:
                row["error"] = next(info[(r, tid)][1] for r in run_ids if info.get((r, tid), ("ok",))[0] != "ok")
            vals = [per_run_values.get((r, tid), {}) for r in run_ids if info.get((r, tid), ("",))[0] == "ok"]
            metrics = list(dict.fromkeys(m for v in vals for m in v))
            for metric in metrics:
                all_v = [v[metric] for v in vals if metric in v]
                clean = [v[metric] for v in vals if metric in v and not evidence.flags(v, metric)]
                per_run.setdefault(tid, {})[metric] = clean
                # an instruction count is exact: the newest run's is the figure (an accepted change is the
                # baseline from the next night on, not once it outnumbers the older runs in a median)
                newest = by == "instr_fingerprint" and V.column(metric) and V.column(metric).term.kind == V.INSTRUCTIONS
                row.setdefault(metric, all_v[0] if newest else statistics.median(clean or all_v))
                if t := V.timing(metric):  # flagged only when every run was: the baseline says so
                    for flag in V.FLAGS:
                        row[t.evidence(flag)] = not clean and any(v.get(t.evidence(flag)) for v in vals)
                    if not clean and V.CONTENDED in {f for v in vals for f in evidence.flags(v, metric)}:
                        row[t.evidence(V.CONTENDED)] = True
        return Baseline(suite, env_fingerprint, [keys[r] for r in used], rows, per_run, at_speed)
    finally:
        con.close()
