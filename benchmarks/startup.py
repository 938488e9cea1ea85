"""Issue 16's floor: `mmbench --help` and a failing `mmbench validate BAD.yaml` / `mmbench run missing.yaml` answer
in under 0.5 s (best of N, a fresh interpreter each time: imports included). A bad suite is read and checked before
torch is imported, so its answer does not wait for torch.

    python benchmarks/startup.py [--reps 3]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR_S = 0.5


def best_of(args: list[str], reps: int, expect: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mmbench", *args], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != expect:
            raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}, expected {expect}: {proc.stderr.strip()}")
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    reps = ap.parse_args().reps
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("name: bad\nmethods: [\n")  # malformed YAML
        schema = Path(tmp) / "schema.yaml"
        schema.write_text("name: bad\ntask: {dataset: synthetic}\nmethods: [{method: lmf}]\ntrian: {}\n")  # unknown key
        cases = [("--help", ["--help"], 0), ("validate BAD.yaml (malformed)", ["validate", str(bad)], 2),
                 ("validate BAD.yaml (unknown key)", ["validate", str(schema)], 2),
                 ("run missing.yaml", ["run", str(Path(tmp) / "missing.yaml")], 2)]
        missed = 0
        for name, args, code in cases:
            t = best_of(args, reps, code)
            missed += t > FLOOR_S
            print(f"{name:34} {t:6.3f} s (best of {reps}; floor ≤ {FLOOR_S} s){'  MISSED' if t > FLOOR_S else ''}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
