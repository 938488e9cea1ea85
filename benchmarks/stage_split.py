"""The stage-split floor of issue 32: "the stage split sums to the whole forward within 10% (the rest is named as
framework overhead, not hidden)". Runs a few trials with mmbench's own trial code (tfn, lmf rank 4 and early fusion at
two uniform dims, batch sizes 1 and 256, stage timings on, one thread) and prints per trial and batch size the whole
forward, the encoders, the fusion, their sum and the framework overhead's share of the whole, with the timings'
flags and the load average (a loaded machine pollutes every figure).

    PYTHONPATH=. python benchmarks/stage_split.py [--dims 16 64] [--max-time 0.5]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from mmbench import evidence, stages

SUITE = """\
name: stage-split
task:
  dataset: synthetic
  params: {{interaction: synergy, modalities: 3, dim: 16, num_classes: 2, n_train: 300, n_val: 100, n_test: 100}}
train: {{epochs: 1, seeds: [0]}}
measure:
  device: cpu
  threads: 1
  accuracy: false
  memory: false
  flops: false
  latency: {{batch_sizes: [1, 256], max_time_s: {max_time}, train_step: false, stages: true}}
sweep:
  dims: {dims}
methods:
  - method: tfn
  - method: lmf
    params: {{rank: 4}}
  - method: early
"""
FLOOR = 0.10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs=2, default=[16, 64])
    ap.add_argument("--max-time", type=float, default=0.5, help="latency.max_time_s per function and batch size")
    args = ap.parse_args()
    from mmbench.plan import task_key
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    print(f"load average before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(SUITE.format(dims=list(args.dims), max_time=args.max_time))
        prepared = prepare(load_suite(path))
        rows = [run_trial(t, prepared.tasks[task_key(t.task)]).row for t in prepared.trials]
    print(f"load average after {os.getloadavg()[0]:.2f}\n")
    print(f"{'trial':24s} {'batch':>5s} {'whole ms':>9s} {'encoders':>9s} {'fusion':>9s} {'sum':>9s} "
          f"{'overhead':>9s} {'share':>7s}  within 10%  flags")
    n = within = 0
    for r in rows:
        for b in (1, 256):
            s = stages.split(r, b)
            if s is None:
                print(f"{r['label']:12s} {r['dims']:11s} {b:5d}  not measured: {r.get('status')} {r.get('error')}")
                continue
            share = s["framework overhead"] / s["whole"]
            flags = sorted({f for t in ("latency", "encoder_latency", "fusion_latency")
                            for f in evidence.flags(r, f"{t}_ms_b{b}")})
            n += 1
            within += abs(share) <= FLOOR
            print(f"{r['label']:12s} {r['dims']:11s} {b:5d} {s['whole']:9.4f} {s['encoders']:9.4f} {s['fusion']:9.4f} "
                  f"{s['encoders'] + s['fusion']:9.4f} {s['framework overhead']:9.4f} {share:7.1%}  "
                  f"{'yes' if abs(share) <= FLOOR else 'no':>10s}  {', '.join(flags) or '-'}")
    print(f"\n{within} of {n} splits sum to the whole forward within 10% (the rest: framework overhead); "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
