"""Floors of `mmbench compare` and of report generation, measured and printed (never asserted in tests).

1. False alarms: two back-to-back runs of the same code and suite, compared; REPS repetitions. Floor: no regression
   reported in at least 9 of 10.
2. Detection: a 25% slowdown of one trial's fusion layer (LMF at dims 32, injected here by wrapping the method's
   forward, not in the product), compared with a clean run just before it. Floor: that trial, and no other, regressed.
3. Report generation for a synthetic run of 500 trials (report.md with PNG figures, and report.html), in a fresh
   interpreter as `mmbench run` would pay for it. Floor: ≤ 10 s.

The suite is small and fast (latency only: no training, no FLOP count, no memory) so the whole script takes a few
minutes:  python benchmarks/compare_floors.py [--reps 10]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUITE = """\
name: compare-floors
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 3, dim: 8, n_train: 64, n_val: 32, n_test: 32}
measure:
  device: cpu
  threads: 1
  accuracy: false
  flops: false
  memory: false
  latency: {batch_sizes: [1, 32], warmup: 5, min_samples: 20, max_samples: 1000, min_time_s: 0.3, max_time_s: 0.6,
            target_rel_iqr: 0.05, min_block_ms: 1.0, train_step: false}  # nightly.yaml's latency settings
sweep:
  dims: [8, 32]
methods:
  - method: tfn
  - method: lmf
    params: {rank: 4}
  - method: early
  - method: late
"""
SLOW_DIMS = (32, 32, 32)
SLOWDOWN = 0.25


def _runner(workdir: Path):
    import mmbench.report
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    mmbench.report.write_report = lambda *a, **k: None  # runs only: reports are timed in part 3
    path = workdir / "suite.yaml"
    path.write_text(SUITE)
    prepared = prepare(load_suite(path))
    return lambda: run_suite(prepared, workdir / "results", suite_text=SUITE).path


def _regressed(a: Path, b: Path) -> dict[str, set[str]]:
    from mmbench.compare import compare, side_from_run

    cmp = compare(side_from_run(a), side_from_run(b))
    out: dict[str, set[str]] = {}
    for e in cmp.regressions:
        out.setdefault(f"{e.label} {e.dims} ({e.trial_id})", set()).add(e.metric)
    return out


class _SlowLMF:
    """Wrap LMF's forward: at SLOW_DIMS, busy-wait SLOWDOWN × the forward's own time after it."""

    def __enter__(self):
        from mmbench.methods.tensor import LowRankFusion

        self.cls, self.orig = LowRankFusion, LowRankFusion.forward
        orig = self.orig

        def forward(module, xs):
            if tuple(module.dims) != SLOW_DIMS:
                return orig(module, xs)
            t0 = time.perf_counter()
            y = orig(module, xs)
            end = time.perf_counter() + SLOWDOWN * (time.perf_counter() - t0)
            while time.perf_counter() < end:
                pass
            return y

        LowRankFusion.forward = forward
        return self

    def __exit__(self, *exc):
        self.cls.forward = self.orig


def false_alarms(run, reps: int) -> int:
    clean = 0
    for i in range(reps):
        a, b = run(), run()
        reg = _regressed(a, b)
        clean += not reg
        print(f"  repetition {i + 1:2d}: {len(reg)} trial(s) regressed" +
              ("".join(f"\n      {k}: {', '.join(sorted(v))}" for k, v in reg.items())), flush=True)
    return clean


def detection(run) -> tuple[bool, dict[str, set[str]]]:
    a = run()
    with _SlowLMF():
        b = run()
    reg = _regressed(a, b)
    target = [k for k in reg if k.startswith("lmf") and "x".join(map(str, SLOW_DIMS)) in k]
    return len(reg) == 1 and len(target) == 1, reg


def report_time(workdir: Path) -> float:
    from tests.fakerun import make_run

    methods = [f"method{i}" for i in range(10)]
    specs = [{"trial_id": f"{m}-{d}-{r}", "method": m, "label": f"{m}(rank={r})", "dims": f"{d}x{d}x{d}", "rank": r,
              "d": d} for m in methods for d in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) for r in (1, 2, 4, 8, 16)]
    assert len(specs) == 500
    run = make_run(workdir, "r500", suite="report500", specs=specs, robustness=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from mmbench.report import write_report; write_report({str(run)!r})"],
                   cwd=ROOT, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmbench-floors-"))
    try:
        print(f"report generation, synthetic run of 500 trials (md + PNG figures + html):", flush=True)
        secs = report_time(work)
        print(f"  {secs:.2f} s  (floor ≤ 10 s: {'PASS' if secs <= 10 else 'FAIL'})\n", flush=True)

        run = _runner(work)
        print(f"false alarms: {args.reps} comparisons of two back-to-back runs (8 trials, latency only):", flush=True)
        clean = false_alarms(run, args.reps)
        need = -(-9 * args.reps // 10)
        print(f"  {clean}/{args.reps} comparisons reported no regression "
              f"(floor ≥ {need}: {'PASS' if clean >= need else 'FAIL'})\n", flush=True)

        print(f"detection: LMF at dims {SLOW_DIMS} slowed by {SLOWDOWN:.0%} (fusion layer):", flush=True)
        ok, reg = detection(run)
        for k, v in reg.items():
            print(f"  regressed: {k}: {', '.join(sorted(v))}")
        if not reg:
            print("  nothing regressed")
        print(f"  that trial and no other: {'PASS' if ok else 'FAIL'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
