"""Issue 4's floors on this CPU: latency fidelity and stability, and the runner's overhead outside measured regions.

    python benchmarks/measure_floors.py            # all three
    python benchmarks/measure_floors.py fidelity   # or: stability, overhead

Prints its figures; asserts nothing (speed goals are floors to read, not tests).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import torch.utils.benchmark as tb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmbench import measure, methods  # noqa: E402


def fidelity(rounds: int = 6) -> None:
    """mmbench's median vs torch.utils.benchmark's blocked_autorange median, same module, same process.

    This VM's speed drifts by up to ~30% over seconds (memory-bound modules most), so the two timers run in
    alternating order, round after round, each for about a second; a round's ratio compares two neighbouring
    windows and the verdict reads the median ratio over rounds (every round is printed)."""
    print("## Fidelity: mmbench.measure.latency vs torch.utils.benchmark.Timer.blocked_autorange (median ms)")
    print(f"{'module':32} {'round':>5} {'mmbench':>9} {'torch.utils.benchmark':>22} {'ratio':>7}")
    torch.manual_seed(0)
    cases = [("tfn 32x32x32 o=8 batch 512", methods.create("tfn", [32, 32, 32], 8), [32, 32, 32], 512),
             ("lmf r16 64x64x64 o=64 batch 2048", methods.create("lmf", [64, 64, 64], 64, rank=16), [64] * 3, 2048),
             ("early(mlp 512) 3x256 batch 1024", methods.create("early", [256] * 3, 10, hidden=512), [256] * 3, 1024)]
    verdicts = []
    for name, module, dims, batch in cases:
        xs = [torch.randn(batch, d) for d in dims]
        ratios = []
        with torch.inference_mode():
            for r in range(rounds):
                def ours():
                    return measure.latency(lambda: module(xs), warmup=10, min_samples=20, max_samples=2000,
                                           max_time_s=1.0, target_rel_ci=0.02).median_ms

                def theirs():
                    # Same thread count on both sides: Timer defaults to one thread, mmbench to the suite's setting.
                    timer = tb.Timer("module(xs)", globals={"module": module, "xs": xs},
                                     num_threads=torch.get_num_threads())
                    return timer.blocked_autorange(min_run_time=1.0).median * 1e3

                if r % 2 == 0:
                    a, b = ours(), theirs()
                else:
                    b, a = theirs(), ours()
                ratios.append(a / b)
                print(f"{name:32} {r:5d} {a:9.3f} {b:22.3f} {a / b:7.3f}")
        med = statistics.median(ratios)
        verdicts.append(0.95 <= med <= 1.05)
        print(f"{name:32} median ratio over {rounds} rounds: {med:.3f}  {'ok' if verdicts[-1] else 'OUTSIDE ±5%'}")
    print(f"floor: the median ratio within 0.95–1.05 for every module (≥ 1 ms): {'PASS' if all(verdicts) else 'FAIL'}\n")


def stability(repeats: int = 5) -> None:
    """The same trial measured 5 times in a row: max/min of each latency median."""
    from mmbench import data
    from mmbench.plan import Trial, TrialMeasure
    from mmbench.suite import LatencySpec, ModelSpec, TrainSpec
    from mmbench.trial import run_trial

    print("## Stability: one trial (lmf rank 4, dims 32x32x32) measured 5 times in a row")
    task = data.load("synthetic", n_train=10, n_val=10, n_test=10)
    lat = LatencySpec(batch_sizes=[1, 256], max_time_s=1.0, target_rel_ci=0.05)
    trial = Trial(method="lmf", hparams={"rank": 4}, dims=(32, 32, 32),
                  task={"dataset": "synthetic", "params": {}}, model=ModelSpec(), train=TrainSpec(),
                  measure=TrialMeasure(accuracy=False, latency=lat), device="cpu", label="lmf")
    rows = [run_trial(trial, task).row for _ in range(repeats)]
    cols = [k for k in rows[0] if k.endswith("_ms_b1") or k.endswith("_ms_b256")]
    cols = [c for c in cols if "_iqr_" not in c]
    worst = 0.0
    for c in cols:
        vals = [r[c] for r in rows]
        ratio = max(vals) / min(vals)
        worst = max(worst, ratio)
        print(f"{c:28} " + " ".join(f"{v:8.4f}" for v in vals) + f"   max/min {ratio:.3f}")
    print(f"worst max/min {worst:.3f}   floor: ≤ 1.10\n")


def overhead() -> None:
    """A suite of ≥ 50 cheap trials (params, FLOPs, latency): wall time outside mmbench.measure.latency calls."""
    import mmbench.measure as m
    import mmbench.trial as trial_mod
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    inside = [0.0]
    real = m.latency_rounds

    def timed(*args, **kwargs):  # instrumentation lives here, in the benchmark, not in the product
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - t0

    trial_mod.measure.latency_rounds = timed
    suite = textwrap.dedent("""\
        name: overhead
        task: {dataset: synthetic, params: {n_train: 50, n_val: 50, n_test: 50}}
        measure:
          device: cpu
          accuracy: false
          memory: false
          latency: {batch_sizes: [1, 64], max_time_s: 0.1, min_samples: 10}
        sweep:
          dims: [4, 8, 16, 32, 48, 64, [8, 16, 32], [16, 32, 64], [32, 32, 64]]
          rank: [1, 4, 16]
        methods: [{method: tfn}, {method: lmf}, {method: early}, {method: late}]
        """)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(suite)
        prepared = prepare(load_suite(path))
        t0 = time.perf_counter()
        run = run_suite(prepared, Path(tmp) / "out")
        wall = time.perf_counter() - t0
    trial_mod.measure.latency_rounds = real
    n = len(run.rows())
    print(f"## Overhead: {n} trials, wall {wall:.1f} s, inside latency measurement {inside[0]:.1f} s, "
          f"outside {wall - inside[0]:.1f} s = {(wall - inside[0]) / wall:.1%} of wall   floor: ≤ 15%\n")


if __name__ == "__main__":
    which = sys.argv[1:] or ["fidelity", "stability", "overhead"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    for name in which:
        globals()[name]()
