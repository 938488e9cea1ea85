"""Issue 17's figure: kill -9 at random instants of runs that write the history database; count the databases left
unusable and the finished trials lost.

    python benchmarks/history_kill.py            # 50 instants (about 10-15 min on a quiet 2-core machine)
    python benchmarks/history_kill.py --n 4      # a smoke run

Half the instants kill a real `mmbench run` of a small suite at a uniform instant of its whole duration (measured
once, unkilled), into a results folder whose database is new (its first write) or already holds a run. The other
half kill `mmbench history --record` of a large synthetic run (thousands of trials, every sample) into a new
database, at a uniform instant of that record's duration after the interpreter's start-up: the first write itself,
schema creation included.

After each kill:
- unusable database: it cannot be opened for reading and writing, `PRAGMA integrity_check` is not ok, a run it held
  before the kill is no longer whole, or the killed run cannot be recorded into it;
- lost finished trials: rows of results.jsonl (each a finished trial) that the database does not hold once the run
  directory is recorded (`mmbench history --record`, as a user would), plus rows a run already recorded lost.

Prints the figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

SUITE = """\
name: killed
task:
  dataset: synthetic
  params: {interaction: redundancy, modalities: 2, dim: 4, n_train: 100, n_val: 50, n_test: 50}
train: {epochs: 1, batch_size: 64, seeds: [0]}
measure: {device: cpu, threads: 1, latency: null, flops: false}
sweep:
  dims: [4, 6, 8]
methods: [{method: early}, {method: late}, {method: lmf, params: {rank: 2}}]
"""


def mmbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmbench", *args]


def kill_at(cmd: list[str], delay: float) -> tuple[int, float]:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, time.monotonic() - start


def timed(cmd: list[str]) -> float:
    start = time.monotonic()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"calibration failed: {' '.join(cmd)}\n{r.stderr}")
    return time.monotonic() - start


def rows_of(run_dir: Path) -> set[str]:
    """Finished trials: the complete lines of results.jsonl (a torn last line is not a finished trial)."""
    path = run_dir / "results.jsonl"
    if not path.exists():
        return set()
    lines = path.read_text().split("\n")[:-1]
    return {json.loads(x)["trial_id"] for x in lines if x.strip()}


def held(db: Path) -> dict[str, set[str]]:
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return {k: {t for (t,) in con.execute("SELECT x.trial_id FROM results x JOIN runs r ON r.id = x.run_id "
                                               "WHERE r.run_key = ?", (k,))}
                for (k,) in con.execute("SELECT run_key FROM runs")}
    finally:
        con.close()


def check(db: Path, run_dirs: list[Path], before: dict[str, set[str]]) -> tuple[bool, int, str]:
    """(usable, finished trials lost, why) after a kill."""
    from mmbench import history as H

    why = ""
    try:
        if db.exists():
            H.list_runs(db)  # read-only open, as history and compare do
            con = H.open_db(db, write=True)
            ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            con.close()
            if ok != "ok":
                return False, 0, f"integrity_check: {ok}"
        now = held(db) if db.exists() else {}
        lost = sum(len(ids - now.get(k, set())) for k, ids in before.items())  # what was recorded before the kill
        if lost:
            why = f"{lost} rows of runs recorded earlier are gone"
        for run in run_dirs:
            if (run / "run.json").exists():
                H.record_run(db, run)
        now = held(db) if db.exists() else {}  # killed before anything was written: no database, nothing lost
        for run in run_dirs:
            lost += len(rows_of(run) - now.get(f"{run.parent.name}/{run.name}", set()))
        return True, lost, why
    except Exception as exc:  # the database (or the run) could not be used: that is what is counted
        return False, 0, f"{type(exc).__name__}: {exc}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="kill instants in all (half of each kind)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=3000, help="trials in the synthetic run that --record writes")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    from tests.fakerun import make_run, trials

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = tmp / "killed.yaml"
        suite.write_text(SUITE)
        t_run = timed(mmbench("run", str(suite), "--out", str(tmp / "calibrate"), "--json"))
        big = make_run(tmp / "big", "r0", specs=trials(methods=[f"m{i}" for i in range(args.trials // 3)],
                                                          dims=(4, 8, 16), ranks=(1, 2)))
        t_rec = timed(mmbench("history", "--record", str(big), "--db", str(tmp / "calibrate.sqlite"), "--json"))
        t_idle = timed(mmbench("history", "--db", str(tmp / "calibrate.sqlite"), "--json"))  # start-up, no write
        print(f"unkilled: a run of the suite takes {t_run:.1f} s; recording {len(rows_of(big))} trials takes "
              f"{t_rec:.1f} s, of which about {t_idle:.1f} s is start-up (record kills land in the rest)")

        unusable, lost, in_write, results = 0, 0, 0, []
        for i in range(args.n):
            out = tmp / f"k{i}"
            out.mkdir()
            db = out / "history.sqlite"
            before: dict[str, set[str]] = {}
            if i % 2 == 0:  # a real run; every other one into a database that already holds a run
                if i % 4 == 2:
                    from mmbench import history as H

                    H.record_run(db, make_run(out / "earlier", "e0"))
                    before = held(db)
                delay = rng.uniform(0, t_run)
                code, _ = kill_at(mmbench("run", str(suite), "--out", str(out), "--db", str(db)), delay)
                runs = sorted((out / "killed").glob("*")) if (out / "killed").exists() else []
                kind = "run"
            else:
                delay = rng.uniform(min(t_idle, t_rec) * 0.9, t_rec)
                code, _ = kill_at(mmbench("history", "--record", str(big), "--db", str(db), "--json"), delay)
                runs = [big]
                kind = "record"
            journal = Path(f"{db}-journal")
            cut = code == -signal.SIGKILL and journal.exists() and journal.stat().st_size > 0
            in_write += cut
            usable, n_lost, why = check(db, runs, before)
            unusable += not usable
            lost += n_lost
            results.append((kind, delay, code, cut, usable, n_lost, why))
            print(f"{i + 1:3d} {kind:6s} kill at {delay:6.2f} s  exit {code:4d}  "
                  f"{'cut a transaction' if cut else '                 '}  "
                  f"{'usable' if usable else 'UNUSABLE'}  lost {n_lost}  {why}", flush=True)
        killed = sum(1 for r in results if r[2] == -signal.SIGKILL)
        print(f"\n{args.n} instants, {killed} landed before the process ended, {in_write} inside an open history "
              f"transaction (hot journal left)")
        print(f"unusable databases: {unusable}")
        print(f"lost finished trials: {lost}")


if __name__ == "__main__":
    main()
