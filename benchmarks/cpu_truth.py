"""Issue 14's measuring floors on CPU: the memory column against a hand count, and the contention flag under a hog.

    python benchmarks/cpu_truth.py memory        # TFN 64³ training step at batch 256: tracker vs hand count (≤ 10 %)
    python benchmarks/cpu_truth.py contention    # a latency suite quiet, then beside a CPU hog: flags vs inflation

`contention` runs the same latency-only suite twice through the real CLI: on the machine as it is (run it quiet:
check `uptime`), then with one busy-looping process per core. Floors: ≥ 90 % of the latency figures that came out
more than 2× their quiet value are flagged `contended`; ≤ 5 % of the quiet run's figures are flagged.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def memory() -> None:
    import torch

    from mmbench.data import load
    from mmbench.plan import Trial, TrialMeasure
    from mmbench.suite import LatencySpec, ModelSpec, TrainSpec
    from mmbench.trial import run_trial

    torch.set_num_threads(1)
    data = load("synthetic", interaction="synergy", modalities=3, dim=16, num_classes=2, n_train=64, n_val=32,
                n_test=32, seed=0)
    b, d, o, din = 256, 64, 2, 16
    lat = LatencySpec(batch_sizes=[b], warmup=1, min_samples=1, max_samples=2, max_time_s=0.01, min_time_s=0.0,
                      rounds=1, target_rel_ci=1.0, min_block_ms=0.01)
    measure = TrialMeasure(flops=False, accuracy=False, threads=1, retrieval=False, latency=lat)
    trial = Trial(method="tfn", hparams={}, dims=(d, d, d), task={"dataset": "synthetic", "params": {}},
                  model=ModelSpec(), measure=measure, device="cpu", train=TrainSpec(lr=1e-3))
    row = run_trial(trial, data).row
    assert row["status"] == "ok", row["error"]
    # Hand count of what is alive at the training step's peak, in float32 elements. TFN runs split 1 at this shape
    # (z = x̃_2 ⊗ x̃_3 times the weight, then x̃_1); the peak is in the outer product's backward, where autograd forms
    # both products grad_z·x̃_3 and grad_z·x̃_2, (B, 65·65) each, before it sums either (z itself is freed by then):
    s = d + 1
    weights = 3 * (din * d + d) + (s**3 + 1) * o          # encoders + TFN Linear
    inputs = 3 * b * din                                   # the batch (targets: int64, below)
    relu_outs = 3 * b * d                                  # saved by ReLU for its backward
    x_tilde = 2 * b * s                                    # x̃_2, x̃_3, saved by the outer product (x̃_1's is freed)
    grad_z = b * s * s                                     # the matmul's input gradient
    products = 2 * b * s * s                               # the outer product's backward, before its sums
    grad_w = (s**3) * o                                    # the TFN weight's gradient
    grad_x = 2 * b * s                                     # x̃_1's gradient (from the bmm) and the first sum
    hand = 4 * (weights + inputs + relu_outs + x_tilde + grad_z + products + grad_w + grad_x) + 8 * b
    got = row[f"train_peak_alloc_mib_b{b}"] * MIB
    print(f"TFN 64³, batch {b}, Adam training step: tracker {got / MIB:.2f} MiB, hand count {hand / MIB:.2f} MiB "
          f"(ratio {got / hand:.3f}; floor: within 10 %)  [above the start: {row[f'train_peak_mem_mib_b{b}']:.2f} MiB]")
    print(f"forward at batch {b}: {row[f'peak_alloc_mib_b{b}']:.2f} MiB alive at its peak "
          f"(weights {4 * weights / MIB:.2f} MiB)")


def _hog() -> None:
    while True:
        pass


SUITE = """\
name: cpu_truth_contention
task:
  dataset: synthetic
  params: {{interaction: synergy, modalities: 3, dim: 16, num_classes: 2, n_train: 200, n_val: 100, n_test: 100}}
measure:
  device: cpu
  threads: {threads}
  accuracy: false
  latency: {{batch_sizes: [1, 256], max_time_s: {budget}, min_time_s: {min_time}}}
sweep:
  dims: [8, 16, 32, 64]
  rank: [1, 4, 16]
methods:
  - method: tfn
  - method: lmf
  - method: early
"""


def _run(suite: Path, out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "mmbench", "run", str(suite), "--out", str(out), "--json"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"run failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)["rows"]


def _figures(rows: list[dict]) -> dict[tuple, tuple[float, bool]]:
    out = {}
    for r in rows:
        for k, v in r.items():
            if k.endswith(tuple(f"_ms_b{b}" for b in (1, 256))) and "_iqr_" not in k and isinstance(v, (int, float)):
                name, b = k.rsplit("_ms_b", 1)
                out[r["trial_id"], k] = (v, bool(r.get(f"{name}_contended_b{b}")))
    return out


def contention(threads: int, budget: float, hogs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(SUITE.format(threads=threads, budget=budget, min_time=budget / 2))
        print(f"load before the quiet run: {os.getloadavg()}")
        t0 = time.perf_counter()
        quiet = _figures(_run(suite, Path(tmp) / "quiet"))
        print(f"quiet run: {len(quiet)} latency figures in {time.perf_counter() - t0:.0f} s")
        procs = [mp.Process(target=_hog, daemon=True) for _ in range(hogs)]
        for p in procs:
            p.start()
        try:
            t0 = time.perf_counter()
            loaded = _figures(_run(suite, Path(tmp) / "hog"))
            print(f"run beside {hogs} busy-looping process(es): {time.perf_counter() - t0:.0f} s, "
                  f"load {os.getloadavg()}")
        finally:
            for p in procs:
                p.kill()
    flagged_quiet = sum(f for _, f in quiet.values())
    inflated = [k for k in loaded if k in quiet and loaded[k][0] > 2 * quiet[k][0]]
    caught = sum(loaded[k][1] for k in inflated)
    flagged_hog = sum(f for _, f in loaded.values())
    ratios = sorted(loaded[k][0] / quiet[k][0] for k in loaded if k in quiet)
    print(f"quiet: {flagged_quiet}/{len(quiet)} figures flagged contended ({flagged_quiet / len(quiet):.1%}; "
          f"floor ≤ 5 %)")
    print(f"hog: {len(inflated)}/{len(loaded)} figures more than 2× their quiet value; {caught} of them flagged "
          f"({caught / max(1, len(inflated)):.1%}; floor ≥ 90 %); {flagged_hog} flagged in all; "
          f"hog/quiet ratio median {ratios[len(ratios) // 2]:.2f}, max {ratios[-1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("memory")
    c = sub.add_parser("contention")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--budget", type=float, default=0.2, help="max_time_s per timed function")
    c.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    if a.what == "memory":
        memory()
    else:
        contention(a.threads, a.budget, a.hogs)


if __name__ == "__main__":
    main()
