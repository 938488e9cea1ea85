"""The crossover floor of issue 32, checked by a direct timing: "the crossover on the main job lies inside the range
run, with its interval, and a direct timing at that size agrees with it within the interval".

Reads a run's TFN-vs-LMF crossovers (mmbench.scaling over its rows, as the report finds them) on the timed costs
(latency, training step), then times both methods again with mmbench's own trial code (trial.run_trial, the run's
measure settings and thread count, its stage timings on or off as in the run) at the crossover's uniform dim (rounded) and at
its interval's edges, and prints for each:
  - at the crossover: the measured cost ratio tfn / lmf, and whether the two costs are equal within the fits'
    prediction intervals (|log ratio| ≤ t · the two fits' combined prediction SE at that size);
  - at the edges: whether the measured ratio's sign flips inside the interval, the way the fits say (the series
    cheaper below cheaper at the lower edge, the other at the upper);
  - "agrees" when both hold. Every figure with its flags and the load average: a loaded machine pollutes them.

    PYTHONPATH=. python benchmarks/crossover_check.py RUN_DIR [--quick] [--only N]

--quick: the smallest timing budget (a dry run of the script, not a check); --only N: the first N crossovers.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import yaml

from mmbench import evidence, scaling, sizes
from mmbench import vocabulary as V
from mmbench.report.tables import tagged_rows
from mmbench.store import load_runs


def _pair(x: scaling.Crossover) -> bool:
    return {x.a.split("(")[0], x.b.split("(")[0]} == {"tfn", "lmf"} and \
        V.column(x.cost).term.name in ("latency", "train_step")


def _rows_of(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and str(r.get("_key", r.get("label"))) == name]


def _suite(run: Path, methods: list[dict], dims: list[int], quick: bool) -> str:
    """A suite of the run's task and measure settings (no accuracy, memory or FLOPs: costs only), at these dims."""
    src = yaml.safe_load((run / "suite.yaml").read_text())
    lat = dict(yaml.safe_load((run / "resolved.json").read_text())["trials"][0]["measure"]["latency"])
    # the same functions timed as in the run: its stages (left out of the resolved config: read from its suite file)
    lat["stages"] = bool(((src.get("measure") or {}).get("latency") or {}).get("stages", True))
    if quick:
        lat.update(max_time_s=0.02, min_time_s=0.0, min_samples=3, warmup=1)
    resolved = yaml.safe_load((run / "resolved.json").read_text())
    threads, device = resolved.get("threads"), resolved["trials"][0].get("device", "cpu")  # the run's own device
    suite = {"name": "crossover-check", "task": src["task"], "train": {"epochs": 1, "seeds": [0]},
             "measure": {"device": device, "threads": threads, "accuracy": False, "memory": False, "flops": False,
                         "latency": lat},
             "sweep": {"dims": sorted(set(dims))}, "methods": methods}
    return yaml.safe_dump(suite, sort_keys=False)


def _time(run: Path, plan: dict[str, tuple[dict, set[int]]], quick: bool) -> dict[tuple[str, int], dict]:
    """Each method configuration timed at its dims, in this process, with mmbench's trial code: (label, d) → row."""
    from mmbench.plan import task_key
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (method, ds) in plan.items():
            path = Path(tmp) / "s.yaml"
            path.write_text(_suite(run, [method], sorted(ds), quick))
            prepared = prepare(load_suite(path))
            for trial in prepared.trials:
                row = run_trial(trial, prepared.tasks[task_key(trial.task)]).row
                out[label, trial.dims[0]] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run directory of the main job (tfn_vs_lmf)")
    ap.add_argument("--quick", action="store_true", help="the smallest timing budget: a dry run, not a check")
    ap.add_argument("--only", type=int, default=None, help="check only the first N crossovers")
    args = ap.parse_args()
    runs = load_runs([args.run])
    rows = tagged_rows(runs)
    fits = scaling.fit_rows(rows)
    index = {(f.task, f.run, f.group, f.cost): f for f in fits}
    found = [x for x in scaling.crossovers(rows, fits) if _pair(x) and x.found][:args.only]
    loads = [r["load_avg_1m"] for r in rows if isinstance(r.get("load_avg_1m"), (int, float))]
    print(f"run {args.run} (its rows' load_avg_1m: {min(loads, default=math.nan):.2f}–{max(loads, default=math.nan):.2f})")
    print(f"load average now {os.getloadavg()[0]:.2f}; {len(found)} TFN-vs-LMF timing crossover(s) told apart inside the range "
          "run")
    if not found:  # say what the run does show, pair by pair
        for x in scaling.crossovers(rows, fits):
            if _pair(x):
                print(f"  {x.cost}: {x.a} vs {x.b}: {x.text}")
        return
    # what to time: every series at the crossover and interval edges of each of its crossovers
    checks, plan = [], {}
    for x in found:
        lo, hi = x.interval
        ds = {"lower edge": max(1, round(lo)), "crossover": max(1, round(x.at)), "upper edge": max(1, round(hi))}
        checks.append((x, ds))
        for name in (x.a, x.b):
            r = _rows_of(rows, name)[0]
            method = {"method": r["method"], "label": name, "params": dict(r.get("hparams") or {})}
            plan.setdefault(name, (method, set()))[1].update(ds.values())
    timed = _time(args.run, plan, args.quick)
    print(f"load average after timing {os.getloadavg()[0]:.2f}")
    agree = 0
    for x, ds in checks:
        lo, hi = x.interval
        print(f"\n{x.cost}: {x.a} vs {x.b}: the fits cross at d ≈ {x.at:.3g} (95% interval {lo:.3g}–{hi:.3g}); "
              f"{x.cheaper_below} cheaper below")
        signs, equal = {}, None
        for where, d in ds.items():
            ra, rb = timed[x.a, d], timed[x.b, d]
            ya, yb = ra.get(x.cost), rb.get(x.cost)
            if not (isinstance(ya, float) and isinstance(yb, float)):
                print(f"  {where:10s} d={d:3d}: not measured ({ra.get('status')} {ra.get('error', '')[:80]} / "
                      f"{rb.get('status')} {rb.get('error', '')[:80]})")
                continue
            flags = ", ".join(sorted(set(evidence.flags(ra, x.cost)) | set(evidence.flags(rb, x.cost)))) or "unflagged"
            log_ratio = math.log(ya / yb)
            signs[where] = x.a if ya < yb else x.b  # which is cheaper there
            # the two fits' prediction intervals at this size: a new measurement of each
            fa, fb = (index[(r["task"], scaling.run_of(r), scaling.group_of(r), x.cost)]
                      for r in (_rows_of(rows, x.a)[0], _rows_of(rows, x.b)[0]))
            pa, sa = fa.law.log_predict(sizes.size_of(ra), new=True)
            pb, sb = fb.law.log_predict(sizes.size_of(rb), new=True)
            t = max(fa.law.t, fb.law.t)
            band = t * math.hypot(float(sa[0]), float(sb[0]))
            inside_a = abs(math.log(ya) - float(pa[0])) <= t * float(sa[0])
            inside_b = abs(math.log(yb) - float(pb[0])) <= t * float(sb[0])
            out_a, out_b = ("" if ok else ", outside its 95% PI" for ok in (inside_a, inside_b))
            print(f"  {where:10s} d={d:3d}: {x.a} {ya:.4g} ms (fit {math.exp(pa[0]):.4g}{out_a}), "
                  f"{x.b} {yb:.4g} ms (fit {math.exp(pb[0]):.4g}{out_b}); "
                  f"ratio {ya / yb:.3f}, cheaper: {signs[where]}; |log ratio| {abs(log_ratio):.3f} vs band {band:.3f}"
                  f" [{flags}]")
            if where == "crossover":
                equal = abs(log_ratio) <= band
        other = x.b if x.cheaper_below == x.a else x.a
        flip = signs.get("lower edge") == x.cheaper_below and signs.get("upper edge") == other
        ok = bool(equal) and flip
        agree += ok
        print(f"  → equal at the crossover within the fits' prediction intervals: {equal}; the cheaper one flips "
              f"inside the interval as the fits say: {flip}; {'AGREES' if ok else 'does not agree'}")
    print(f"\n{agree} of {len(checks)} crossover(s) agree with the direct timing "
          f"(load average now {os.getloadavg()[0]:.2f}{'; --quick: a dry run, not a check' if args.quick else ''})")


if __name__ == "__main__":
    main()
