"""Accuracy floors of issue 5, printed (no assertions in tests: figures live here).

- digits two-view (suites/real_digits.yaml, full budget): early, TFN and LMF mean test accuracy over 3 seeds ≥ 0.95;
- suites/interactions.yaml (full budget, 3 seeds): on synergy, TFN and LMF within 0.05 of the Bayes-optimal accuracy
  and late fusion within 0.10 of chance; on redundancy, every method within 0.05 of Bayes-optimal;
- the wall time of `python -m mmbench run suites/interactions.yaml --quick` ≤ 180 s.

Run from the repository root:  python benchmarks/accuracy_floors.py   (exit code 1 if a floor fails)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmbench.run import prepare, run_suite  # noqa: E402
from mmbench.suite import load_suite  # noqa: E402

failures: list[str] = []


def check(name: str, ok: bool, figure: str) -> None:
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {figure}")
    if not ok:
        failures.append(name)


def run(suite_file: str, out: Path) -> list[dict]:
    t0 = time.perf_counter()
    rows = run_suite(prepare(load_suite(ROOT / suite_file)), out).rows()
    print(f"{suite_file}: {len(rows)} trials in {time.perf_counter() - t0:.1f} s")
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad:
        check(f"{r['task']} {r['label']} status", False, f"{r['status']} {r['error']}")
    return rows


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = run("suites/real_digits.yaml", out)
        for r in rows:
            if r["method"] in ("early", "tfn", "lmf") and r["label"] in ("early", "tfn", "lmf(rank=4)"):
                check(f"digits {r['label']} acc ≥ 0.95", r["acc_mean"] >= 0.95,
                      f"{r['acc_mean']:.4f} ± {r['acc_std'] or 0:.4f} over {r['n_seeds']} seeds")
        rows = run("suites/interactions.yaml", out)
        for r in rows:
            acc, bayes, chance = r["acc_mean"], r["bayes_accuracy"], r["chance_accuracy"]
            fig = f"acc {acc:.4f} ± {r['acc_std'] or 0:.4f}, Bayes {bayes:.4f}, chance {chance:.4f}"
            if r["task"] == "synergy" and r["method"] in ("tfn", "lmf"):
                check(f"synergy {r['label']} within 0.05 of Bayes", bayes - acc <= 0.05, fig)
            if r["task"] == "synergy" and r["method"] == "late":
                check(f"synergy {r['label']} within 0.10 of chance", abs(acc - chance) <= 0.10, fig)
            if r["task"] == "redundancy":
                check(f"redundancy {r['label']} within 0.05 of Bayes", bayes - acc <= 0.05, fig)
            if r["task"] not in ("redundancy", "synergy"):  # no floor: shown for the whole picture
                print(f"  [info] {r['task']} {r['label']}: {fig}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mmbench", "run", "suites/interactions.yaml", "--quick",
                               "--out", str(out / "quick"), "--json"], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        check("interactions --quick exits 0", proc.returncode == 0, proc.stderr.strip()[-300:] or "ok")
        check("interactions --quick wall time ≤ 180 s", wall <= 180, f"{wall:.1f} s")
    print("all floors hold" if not failures else f"{len(failures)} floor(s) failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
