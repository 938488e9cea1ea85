"""Issue 28's main-job floors: wall time of `mmbench run suites/tfn_vs_lmf.yaml`, full (≤ 60 s) and --quick (≤ 15 s)
on a quiet 2-core CPU, through the real CLI (imports, data generation and the report included), with the accuracies
inside their seed spread of the baseline (benchmarks/main_job_baseline.json: each seed's test accuracy per
configuration, from the run before issue 28's changes).

"Inside the seed spread": a configuration's mean test accuracy lies within the baseline's seeds' range widened by
the test split's binomial SE (one seed, as --quick, has no range of its own: the full baseline's seeds give it).
The load average before and after is printed beside each figure: on a loaded machine the times are upper bounds.

    python benchmarks/suite_times.py [quick|full ...] [--out DIR]   # --out: keep the runs there
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"quick": 15.0, "full": 60.0}
BASELINE = Path(__file__).with_name("main_job_baseline.json")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _inside(rows: list[dict]) -> tuple[int, list[str]]:
    """How many configurations' mean accuracy lies inside the baseline's seed range ± the test SE; the rest named."""
    base = json.loads(BASELINE.read_text())["full"]
    ok, out = 0, []
    for r in rows:
        key = f"{r['label']} {r['dims']}"
        acc, then = r.get("acc_mean"), base.get(key)
        if acc is None or not then:
            out.append(f"{key}: no accuracy to compare")
            continue
        se = math.sqrt(acc * (1 - acc) / r["_test_rows"])
        lo, hi = min(then) - se, max(then) + se
        if lo <= acc <= hi:
            ok += 1
        else:
            out.append(f"{key}: {acc:.4f} outside [{lo:.4f}, {hi:.4f}] (baseline seeds {then}, SE {se:.4f})")
    return ok, out


def run(mode: str, keep: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = keep or tmp
        args = [sys.executable, "-m", "mmbench", "run", "suites/tfn_vs_lmf.yaml", "--out", out, "--json"]
        if mode == "quick":
            args.append("--quick")
        before = _load()
        t0 = time.perf_counter()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{mode}: FAILED ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            return
        doc = json.loads(proc.stdout)
        rows = doc["rows"]
        tasks = json.loads((Path(doc["run_dir"]) / "tasks.json").read_text())
    n_test = tasks[0]["sizes"]["test"]
    for r in rows:
        r["_test_rows"] = n_test
    ok, outside = _inside(rows)
    trained = sum(r.get("train_time_s") or 0 for r in rows)
    print(f"{mode:5}: {len(rows)} trials in {wall:6.1f} s (floor ≤ {FLOORS[mode]:.0f} s: "
          f"{'met' if wall <= FLOORS[mode] else 'NOT met'}); training {trained:.1f} s of it; statuses "
          f"{sorted({r['status'] for r in rows})}; seeds trained {sorted({str(r.get('seeds_trained')) for r in rows})}"
          f"\n       accuracy inside the baseline's seed spread ± test SE: {ok} of {len(rows)}; "
          f"load average before {before}, after {_load()}")
    for line in outside:
        print("       " + line)


if __name__ == "__main__":
    args = sys.argv[1:]
    keep = None
    if "--out" in args:  # keep the runs (e.g. to compare two full runs with `mmbench compare`)
        i = args.index("--out")
        keep, args = args[i + 1], args[:i] + args[i + 2:]
    for mode in args or ["quick", "full"]:
        run(mode, keep)
