"""Issue 33's figures: several processes touching one run at once, and signals at random instants.

    python benchmarks/one_writer.py                                  # small counts (a few minutes on 2 busy cores)
    python benchmarks/one_writer.py --resume-races 50 --signals 50 --report-races 50

Three races, each repeated:
- resume while running: a `mmbench run` is started, and at a random instant of its duration a `--resume` of its run
  directory (half the time two at once, after a kill -9 of the first: two resumes of one killed run). Every
  refused resume must say so in one line naming the owner's pid; the run is then finished with `--resume`.
- signals at random instants: SIGTERM or SIGINT at a uniform instant of a run's duration (measured once, unsignalled;
  half the runs with `--workers 1`, so the instant may fall while workers start), then the printed resume command.
- concurrent report writers: `--writers` `mmbench report RUN_DIR` at once on one finished run.

Prints, over every run directory and database left: trials present exactly once (and every planned trial present in
a complete run), databases passing `PRAGMA integrity_check`, and silent exits (a non-zero exit without a one-line
`mmbench: error:` or an `interrupted … Resume with` message, or a process ended by a signal it did not handle).
Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

SUITE = """\
name: race
task:
  dataset: synthetic
  params: {interaction: redundancy, modalities: 2, dim: 4, n_train: 200, n_val: 50, n_test: 50}
train: {epochs: 2, batch_size: 64, seeds: [0]}
measure: {device: cpu, threads: 1, latency: null, flops: false}
sweep:
  dims: [4, 6, 8]
methods: [{method: early}, {method: late}, {method: lmf, params: {rank: 2}}]
"""


class Tally:
    def __init__(self) -> None:
        self.processes = self.silent = self.refused = self.refused_named = 0
        self.dirs = self.dirs_once = self.complete = self.complete_whole = 0
        self.dbs = self.dbs_ok = 0
        self.silent_examples: list[str] = []
        self.codes: dict[int, int] = {}
        self.where: dict[str, int] = {}  # where the interrupted ones said they stopped

    def exit(self, proc: subprocess.CompletedProcess | subprocess.Popen, err: str) -> None:
        """A non-zero exit must say why: `mmbench: error: …` or `interrupted … Resume with`."""
        self.processes += 1
        rc = proc.returncode
        self.codes[rc] = self.codes.get(rc, 0) + 1
        if rc in (130, 143):
            m = re.search(r"interrupted (while [^,]*|before any trial ran|while starting)", err)
            key = m.group(1) if m else "?"
            self.where[key] = self.where.get(key, 0) + 1
        said = "mmbench: error:" in err or (rc in (130, 143) and "interrupted" in err)
        if rc != 0 and (rc < 0 or not said):
            self.silent += 1
            self.silent_examples.append(f"rc {rc}: {err.strip()[-300:]!r}")
        if "in use by another mmbench process" in err:
            self.refused += 1
            self.refused_named += "(pid " in err

    def run_dir(self, run: Path) -> None:
        ids = [json.loads(x)["trial_id"] for x in (run / "results.jsonl").read_text().splitlines() if x.strip()] \
            if (run / "results.jsonl").exists() else []
        self.dirs += 1
        self.dirs_once += len(ids) == len(set(ids))
        if json.loads((run / "run.json").read_text()).get("state") == "complete":
            self.complete += 1
            planned = {t["id"] for t in json.loads((run / "resolved.json").read_text())["trials"]}
            self.complete_whole += set(ids) == planned and (run / "report.html").exists()

    def db(self, path: Path) -> None:
        if not path.exists():
            return
        self.dbs += 1
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self.dbs_ok += con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            con.close()
        except sqlite3.Error:
            pass


def mmbench(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmbench", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, tally: Tally, timeout: float = 600) -> str:
    _, err = proc.communicate(timeout=timeout)
    tally.exit(proc, err)
    return err


def resume_cmd(err: str) -> list[str] | None:
    lines = [x.strip() for x in err.strip().splitlines()]
    return shlex.split(lines[-1])[1:] if lines and lines[-1].startswith("mmbench run ") else None


def complete_it(suite: Path, out: Path, tally: Tally) -> None:
    """Finish every run directory left (as a user would) and count what they hold."""
    for run in sorted((out / "race").glob("*")) if (out / "race").exists() else []:
        if json.loads((run / "run.json").read_text()).get("state") != "complete":
            finish(mmbench("run", str(suite), "--resume", str(run), "--json"), tally)
        tally.run_dir(run)
    tally.db(out / "history.sqlite")


def wait_for_run_dir(out: Path, proc: subprocess.Popen, limit: float = 300) -> Path | None:
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        found = list((out / "race").glob("*/run.json")) if (out / "race").exists() else []
        if found:
            return found[0].parent
        time.sleep(0.02)
    found = list((out / "race").glob("*/run.json")) if (out / "race").exists() else []
    return found[0].parent if found else None


def resume_race(suite: Path, out: Path, rng: random.Random, tally: Tally, duration: float) -> None:
    first = mmbench("run", str(suite), "--out", str(out), "--json")
    run = wait_for_run_dir(out, first)
    time.sleep(rng.uniform(0, duration * 0.6))
    if run is None:
        finish(first, tally)
        return
    if rng.random() < 0.5:  # resume while the owner runs
        finish(mmbench("run", str(suite), "--resume", str(run), "--json"), tally)
        finish(first, tally)
    else:  # kill -9 the owner, then two resumes at once
        first.send_signal(signal.SIGKILL)
        first.communicate()
        a, b = (mmbench("run", str(suite), "--resume", str(run), "--json") for _ in range(2))
        finish(a, tally)
        finish(b, tally)
    complete_it(suite, out, tally)


def signal_race(suite: Path, out: Path, rng: random.Random, tally: Tally, duration: float) -> None:
    workers = ["--workers", "1"] if rng.random() < 0.5 else []
    proc = mmbench("run", str(suite), "--out", str(out), *workers)
    time.sleep(rng.uniform(0, duration))
    proc.send_signal(rng.choice([signal.SIGTERM, signal.SIGINT]))
    err = finish(proc, tally)
    again = resume_cmd(err)
    if proc.returncode in (130, 143) and again:
        finish(mmbench(*again, "--json"), tally)
    complete_it(suite, out, tally)


def report_race(suite: Path, out: Path, writers: int, tally: Tally) -> None:
    if not (out / "race").exists():
        finish(mmbench("run", str(suite), "--out", str(out), "--json"), tally)
    (run,) = list((out / "race").glob("*"))
    procs = [mmbench("report", str(run)) for _ in range(writers)]
    for p in procs:
        finish(p, tally)
    html = (run / "report.html").read_text()
    tally.run_dir(run)
    if not html.rstrip().endswith("</html>") or list(run.glob(".*.tmp")):
        tally.silent += 1
        tally.silent_examples.append("report.html torn or a temporary file left")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resume-races", type=int, default=3)
    ap.add_argument("--signals", type=int, default=4)
    ap.add_argument("--report-races", type=int, default=2)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=33)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = tmp / "race.yaml"
        suite.write_text(SUITE)
        t0 = time.monotonic()
        base = Tally()
        finish(mmbench("run", str(suite), "--out", str(tmp / "timing"), "--json"), base)
        duration = time.monotonic() - t0
        print(f"one unsignalled run: {duration:.1f} s (9 trials, interpreter start included)", flush=True)
        results = {}
        for name, n, race in (("resume while running", args.resume_races,
                               lambda o, t: resume_race(suite, o, rng, t, duration)),
                              ("signals at random instants", args.signals,
                               lambda o, t: signal_race(suite, o, rng, t, duration)),
                              (f"{args.writers} report writers at once", args.report_races,
                               lambda o, t: report_race(suite, o, args.writers, t))):
            tally = Tally()
            t1 = time.monotonic()
            for i in range(n):
                race(tmp / f"{name[:6].strip()}-{i}", tally)
            results[name] = tally
            print(f"\n{name}: {n} round(s), {time.monotonic() - t1:.0f} s", flush=True)
            print(f"  processes: {tally.processes}, silent exits: {tally.silent}"
                  + (f" (e.g. {tally.silent_examples[0]})" if tally.silent_examples else "")
                  + f"; exit codes: {dict(sorted(tally.codes.items()))}")
            if tally.where:
                print(f"  where the interrupted ones said they stopped: {tally.where}")
            if tally.refused:
                print(f"  resumes refused while another process owned the run: {tally.refused} "
                      f"({tally.refused_named} naming its pid)")
            if tally.dirs:
                print(f"  run directories: {tally.dirs}, every trial present exactly once: {tally.dirs_once}; "
                      f"complete {tally.complete}, holding every planned trial and report.html: "
                      f"{tally.complete_whole}")
            if tally.dbs:
                print(f"  databases: {tally.dbs}, passing PRAGMA integrity_check: {tally.dbs_ok}")
        print(f"\nload: {os.getloadavg()[0]:.2f} (1-minute average at the end)")


if __name__ == "__main__":
    main()
