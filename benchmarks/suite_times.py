"""Issue 2's floors: wall time of the main job, `mmbench run suites/tfn_vs_lmf.yaml`, full (≤ 5 min) and --quick
(≤ 60 s) on this 2-core CPU, through the real CLI (imports and data generation included). Also prints the
accuracy table's key check: on synergy, TFN and LMF beat late fusion clearly.

    python benchmarks/suite_times.py [quick|full ...]
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"quick": 60.0, "full": 300.0}


def run(mode: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "mmbench", "run", "suites/tfn_vs_lmf.yaml", "--out", out, "--json"]
        if mode == "quick":
            args.append("--quick")
        t0 = time.perf_counter()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{mode}: FAILED ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            return
        rows = json.loads(proc.stdout)["rows"]
    acc: dict[str, list[float]] = {}
    for r in rows:
        acc.setdefault(r["method"], []).append(r.get("acc_mean", float("nan")))
    mean = {m: sum(v) / len(v) for m, v in acc.items()}
    bayes = rows[0].get("bayes_accuracy")
    print(f"{mode:5}: {len(rows)} trials in {wall:6.1f} s (floor ≤ {FLOORS[mode]:.0f} s); statuses "
          f"{sorted({r['status'] for r in rows})}; mean test accuracy by method "
          + ", ".join(f"{m} {a:.3f}" for m, a in mean.items()) + f"; Bayes {bayes:.3f}")


if __name__ == "__main__":
    for mode in sys.argv[1:] or ["quick", "full"]:
        run(mode)
