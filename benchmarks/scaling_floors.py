"""The fit floors of issue 32, measured on a run and printed (never asserted in tests).

1. TFN's fitted latency exponent against Π(d_m+1) and LMF's against r·Σ(d_m+1), at the largest batch size, with
   their 95% CI and leave-one-out error (the floor: under 25% on CPU).
2. The crossovers of TFN against each LMF rank along the uniform modality dim, at each batch size, with intervals.
3. Prediction: each uniform size left out of the run in turn, its trials' latency predicted from the rest (the floor:
   within 30% of the measured for at least 80% of them), and how often the 95% interval holds the measured.

    PYTHONPATH=. python -m mmbench run benchmarks/scaling_floors.yaml --out /tmp/runs   # 42 trials, costs only
    PYTHONPATH=. python benchmarks/scaling_floors.py /tmp/runs/scaling_floors/<run>
"""
from __future__ import annotations

import argparse
import os

from mmbench import scaling
from mmbench import vocabulary as V
from mmbench.predict import predict_rows
from mmbench.report.tables import tagged_rows
from mmbench.store import load_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run directory (benchmarks/scaling_floors.yaml, or any run of tfn and lmf)")
    args = ap.parse_args()
    rows = tagged_rows(load_runs([args.run]))
    print(f"load average {os.getloadavg()[0]:.1f} (now; the run's own is in its rows' load_avg_1m)")
    fits = scaling.fit_rows(rows)
    batches = V.batch_sizes({k for r in rows for k in r})
    big = V.column_of("latency", batches[-1])
    print(f"1. latency exponents at batch {batches[-1]}:")
    for f in fits:
        if f.cost == big:
            k, lo, hi = f.exponent
            print(f"   {f.name:8s} vs {f.size_name:11s} {f.law.model:17s} k = {k:.3f} [{lo:.3f}, {hi:.3f}]  "
                  f"LOO error {f.loo:.1%}  ({len(f.sizes)} sizes, {f.n_flagged} flagged of {f.n_rows} rows)")
    print("2. crossovers, tfn against lmf:")
    for x in scaling.crossovers(rows, fits):
        if {x.a.split("(")[0], x.b.split("(")[0]} == {"tfn", "lmf"} and V.column(x.cost).term.name == "latency":
            print(f"   {x.cost:16s} {x.a} vs {x.b}: {x.text}")
    print("3. each uniform size left out, its trials' latency predicted:")
    ds = sorted({r["dims"] for r in rows if len(set(str(r["dims"]).split("x"))) == 1},
                key=lambda d: int(d.split("x")[0]))
    n = close = inside = 0
    for d in ds[1:-1]:  # inner sizes: interpolation (the ends would be extrapolation)
        out = [r for r in rows if r["dims"] == d and r.get("status") == "ok"]
        rest = scaling.fit_rows([r for r in rows if r["dims"] != d])
        for p, r in zip(predict_rows(out, rest), out):
            for e in p.estimates:
                if V.column(e.cost).term.name == "latency" and isinstance(r.get(e.cost), (int, float)):
                    n += 1
                    close += abs(e.value / r[e.cost] - 1) <= 0.30
                    inside += e.low <= r[e.cost] <= e.high
    print(f"   {close} of {n} within 30% ({close / max(n, 1):.0%}); the 95% interval holds {inside} "
          f"({inside / max(n, 1):.0%})")


if __name__ == "__main__":
    main()
