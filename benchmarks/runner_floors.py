"""Issue 7's floors on this CPU: cheap trials at scale (memory growth, wall time), the cost of isolation, and runs
killed at a random instant then resumed.

    python benchmarks/runner_floors.py              # all three
    python benchmarks/runner_floors.py cheap        # or: isolation, kills

Prints its figures; asserts nothing (speed goals are floors to read, not tests).
"""
from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

CHEAP = """\
name: cheap
task: {dataset: synthetic, params: {modalities: 2, n_train: 50, n_val: 50, n_test: 50}}
measure: {device: cpu, accuracy: false, memory: false, latency: null}
sweep:
  dims: [DIMS]
  rank: [RANKS]
methods: [{method: tfn}, {method: lmf}, {method: early}, {method: late}]
"""


def cheap() -> None:
    """2,000 trials of parameters and FLOPs only, in process: RSS at the 100th and the 2,000th, and the wall time."""
    import psutil

    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    text = CHEAP.replace("DIMS", ", ".join(map(str, range(4, 104)))).replace("RANKS", ", ".join(map(str, range(1, 18))))
    proc, rss, t_trials = psutil.Process(), {}, [0.0]

    class Probe:
        n = 0

        def skipped(self, n):
            pass

        def start(self, trial):
            pass

        def done(self, trial, result):
            self.n += 1
            if self.n in (100, 1000, 2000):
                rss[self.n] = proc.memory_info().rss / 2**20
            if self.n == 2000:
                t_trials[0] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cheap.yaml"
        path.write_text(text)
        t0 = time.perf_counter()
        prepared = prepare(load_suite(path))
        run = run_suite(prepared, Path(tmp) / "out", progress=Probe())
        wall = time.perf_counter() - t0
        rows = run.rows()
    statuses = sorted({r["status"] for r in rows})
    print(f"## Cheap trials: {len(rows)} trials (params + FLOPs), statuses {statuses}")
    print(f"RSS at trial 100 / 1000 / 2000: {rss.get(100, 0):.1f} / {rss.get(1000, 0):.1f} / {rss.get(2000, 0):.1f} MiB"
          f"   growth 100→2000: {rss.get(2000, 0) - rss.get(100, 0):+.1f} MiB   floor: ≤ 100 MB")
    print(f"wall {wall:.1f} s (trials {t_trials[0] - t0:.1f} s, then CSV, report and figures {wall - t_trials[0] + t0:.1f}"
          f" s); {1e3 * (t_trials[0] - t0) / max(1, len(rows)):.1f} ms per trial   floor: ≤ 120 s\n")


def run_cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mmbench", "run", *args], cwd=ROOT, env=ENV, capture_output=True,
                       text=True)
    return time.perf_counter() - t0, r


def isolation(reps: int = 3) -> None:
    """tfn_vs_lmf --quick through the CLI, in process and in one worker process, alternated."""
    walls: dict[str, list[float]] = {"in-process": [], "--isolate": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(reps):
            for mode in (walls if i % 2 == 0 else list(walls)[::-1]):
                extra = ["--isolate"] if mode == "--isolate" else []
                wall, r = run_cli("suites/tfn_vs_lmf.yaml", "--quick", "--json", "--out", tmp, *extra)
                if r.returncode != 0:
                    print(f"{mode}: FAILED {r.stderr[-400:]}")
                    return
                walls[mode].append(wall)
    a, b = (statistics.median(walls[m]) for m in walls)
    print("## Isolation: suites/tfn_vs_lmf.yaml --quick, CLI wall time (imports, data and report included)")
    for m, ws in walls.items():
        print(f"{m:11} " + " ".join(f"{w:6.1f}" for w in ws) + f"   median {statistics.median(ws):.1f} s")
    print(f"extra wall time of isolation: {(b - a) / a:+.1%}   floor: ≤ +20%\n")


KILL_SUITE = """\
name: killable
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 400, n_val: 100, n_test: 100, noise: 0.3}
train: {epochs: 4, batch_size: 32, seeds: [0, 1]}
measure: {device: cpu, threads: 1, latency: {batch_sizes: [1], max_time_s: 0.02, min_samples: 3}}
sweep:
  dims: [4, 8]
methods: [{method: early}, {method: tfn}, {method: lmf, params: {rank: 2}}, {method: late}, {method: mlb}]
"""


def scores(rows) -> dict:
    return {r["trial_id"]: (r["status"], r.get("acc_mean"), r.get("acc_std"), r.get("params"), r.get("flops"))
            for r in rows}


def json_doc(r: subprocess.CompletedProcess) -> dict:
    """The one JSON document `mmbench run --json` prints last; {} for a failed run."""
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}


def kill_and_resume(suite: Path, name: str, tmp: str, t_ref: float, expected: dict, n: int, seed: int,
                    *extra: str) -> int:
    """n runs of ``suite`` (its name ``name``; ``extra`` CLI arguments), each killed (SIGKILL) at a random instant of
    the reference run's t_ref seconds, then resumed once. Prints a line a run; returns how many ended complete and
    equal to the reference (``expected``: scores of its rows)."""
    from mmbench.store import load_run

    rng = random.Random(seed)
    good = 0
    for i in range(n):
        out = Path(tmp) / f"k{i}"
        at = rng.uniform(0.15, 0.85) * t_ref
        proc = subprocess.Popen([sys.executable, "-m", "mmbench", "run", str(suite), "--out", str(out), "--json",
                                 *extra], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(at)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        dirs = list((out / name).glob("*")) if (out / name).exists() else []
        if dirs:
            before = load_run(dirs[0])  # valid rows only, or this raises
            state, n_before = before.meta["state"], len(before.rows)
            _, r = run_cli(str(suite), "--resume", str(dirs[0]), "--json", *extra)
        else:  # killed before the run directory existed: nothing to resume, run again
            state, n_before = "not started", 0
            _, r = run_cli(str(suite), "--out", str(out), "--json", *extra)
        doc = json_doc(r)
        ids = [x["trial_id"] for x in doc.get("rows", [])]
        ok = bool(doc) and doc["state"] == "complete" and len(ids) == len(set(ids)) and scores(doc["rows"]) == expected
        good += ok
        print(f"run {i}: killed at {at:5.1f} s ({state}, {n_before} rows kept) → resumed: "
              f"{'complete and equal to the reference' if ok else 'WRONG ' + r.stderr[-300:]}")
    return good


def kills(n: int = 10, seed: int = 0) -> None:
    """Each run killed (SIGKILL) at a random instant of an uninterrupted run's duration, then resumed once."""
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "killable.yaml"
        suite.write_text(textwrap.dedent(KILL_SUITE))
        t_ref, ref = run_cli(str(suite), "--out", f"{tmp}/ref", "--json")
        expected = scores(json.loads(ref.stdout)["rows"])
        print(f"## Kills: reference run {len(expected)} trials in {t_ref:.1f} s; each run killed at a random instant "
              f"in [0.15, 0.85] × {t_ref:.1f} s, then `--resume`d")
        good = kill_and_resume(suite, "killable", tmp, t_ref, expected, n, seed)
        print(f"{good}/{n} complete, correct run directories   floor: 10/10\n")


if __name__ == "__main__":
    which = sys.argv[1:] or ["cheap", "isolation", "kills"]
    for name in which:
        globals()[name]()
