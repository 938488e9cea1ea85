"""Floors of `mmbench compare` and of report generation, measured and printed (never asserted in tests).

1. Report generation for a synthetic run of 500 trials (report.md with PNG figures, and report.html), in a fresh
   interpreter as `mmbench run` would pay for it. Floor: <= 10 s.
2. Quick pairs: two back-to-back `--quick` runs of suites/tfn_vs_lmf.yaml, compared; PAIRS times. Floor: 0
   regressions in 10 of 10 pairs.
3. Nights: back-to-back runs of suites/nightly.yaml, each recorded in a history database and compared with
   `history:nightly` (the last 5 runs before it, on this environment) exactly as .github/workflows/nightly.yml does;
   NIGHTS compared nights (one more run starts the history). Floor: 0 regressions in 10 of 10 nights.
4. Detection at the nightly budget: with that history, a run in which one trial's fusion layer (LMF rank 8 at dims
   32, wrapped here, not in the product) is 25% slower. Floor: that trial is found, and no other.
5. Under a CPU hog (a busy process per core beside the runs): two back-to-back runs of the nightly suite with
   `rounds: 5` (so that two single runs can be judged at all: with 3 rounds a side the smallest possible p is 0.05),
   compared. Floor: 0 regressions (timings flagged contended become noise).

Every run is a fresh `mmbench run` process, as in the workflow. Every comparison prints its counts per state and why its `noise` entries are noise (flagged, the host's speed, a
budget too small to judge, …), so a floor that holds only because nothing was judged shows as such.
Run on a quiet machine (nothing else running):  python benchmarks/compare_floors.py [--pairs 10] [--nights 10]
(about 1-1.5 hours on 2 cores). --smoke: one of each on tiny budgets, to check the script works (minutes).
--rejudge DIR: the nights and detection run kept by an earlier --keep DIR, judged again by this checkout's compare.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SLOW = {"dims": (32, 32, 32), "rank": 8}  # the trial slowed in part 4 (nightly.yaml has LMF ranks 2 and 8)
SLOWDOWN = 0.25
# --smoke: the same suites, cut to a minimum (the floors mean nothing then; the script's workings are checked)
SMOKE = {"train": {"epochs": 1, "seeds": [0]}, "sweep": {"dims": [8, 16]},
         "measure": {"latency": {"batch_sizes": [1, 8], "max_time_s": 0.05, "min_time_s": 0.0, "min_samples": 5,
                                 "warmup": 1}}}


def _deep(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _suite_file(work: Path, name: str, *, quick: bool, smoke: bool, extra: dict | None = None) -> Path:
    raw = yaml.safe_load((ROOT / "suites" / f"{name}.yaml").read_text())
    if smoke:
        raw.pop("quick", None)
        raw = _deep(raw, SMOKE)
        raw["sweep"] = {**raw["sweep"], **({"rank": [4]} if "rank" in raw["sweep"] else {})}
        if name == "nightly":  # keep the slowed trial's dims in the smoke sweep
            raw["sweep"]["dims"] = [8, SLOW["dims"][0]]
    raw = _deep(raw, extra or {})
    path = work / f"{name}{'-quick' if quick else ''}{'-smoke' if smoke else ''}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _runner(suite_path: Path, out: Path, *, quick: bool, db: Path | None = None):
    """A function running the suite once as the workflow does — a fresh `mmbench run` process (run-to-run variation
    lives between processes) — and returning its run directory. ``slow=True``: with the injected slowdown."""
    def run(slow: bool = False) -> Path:
        args = ["run", str(suite_path), "--out", str(out), "--json"] + (["--quick"] if quick else []) + \
            (["--db", str(db)] if db else ["--db", str(out / "unused-history.sqlite")])
        code = ("import sys; sys.path.insert(0, {root!r}); import benchmarks.compare_floors as f; "
                "f.install_slowdown() if {slow} else None; from mmbench.cli import main; "
                "sys.argv = ['mmbench', *{args!r}]; main()").format(root=str(ROOT), slow=slow, args=args)
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"mmbench run failed ({r.returncode}): {r.stderr[-2000:]}")
        return Path(json.loads(r.stdout)["run_dir"])

    return run


def _summary(cmp) -> str:
    refusal = f" · REFUSED (exit 2): {cmp.refusal}" if cmp.refusal else ""
    return f"{cmp.counts_text()}{refusal}"  # noise with its causes: a floor held by judging nothing shows as such


def _gating(run_dir: Path) -> str:
    """What the host reference did inside one run: rounds left out beside a slow reading, figures flagged host_slow."""
    from mmbench.store import load_run

    rows = load_run(run_dir).rows
    counts = [v for r in rows for k, v in r.items() if k.rsplit("_b", 1)[0].endswith("_slow_rounds")]
    flags = sum(v is True for r in rows for k, v in r.items() if k.rsplit("_b", 1)[0].endswith("_host_slow"))
    return f"{sum(counts)} rounds left out beside a slow host over {len(counts)} figures, {flags} flagged host_slow"


def host_spread(run_dirs: list[Path]) -> str:
    """How far the host's own speed wandered over these runs: per trial, p90/p10 of its host_ref_ms run to run, and
    of one timing (fusion latency at the first batch size) raw and divided by host_ref_ms. A floor that fails on a
    host wandering far more than the suite's threshold says so beside it."""
    import numpy as np
    from mmbench.store import load_run

    by: dict[str, list[dict]] = {}
    for d in run_dirs:
        for r in load_run(d).rows:
            if r.get("host_ref_ms"):
                by.setdefault(r["trial_id"], []).append(r)
    ratio = lambda v: float(np.percentile(v, 90) / np.percentile(v, 10))  # noqa: E731
    metric = next((k for rows in by.values() for k in rows[0] if k.startswith("fusion_latency_ms_b")), None)
    ref = [ratio([r["host_ref_ms"] for r in rows]) for rows in by.values() if len(rows) >= 3]
    if not ref or metric is None:
        return "no host reference in these runs"
    raw = [ratio([r[metric] for r in rows]) for rows in by.values() if len(rows) >= 3]
    rel = [ratio([r[metric] / r["host_ref_ms"] for r in rows]) for rows in by.values() if len(rows) >= 3]
    return (f"the host over {len(run_dirs)} runs, p90/p10 per trial (median, max): host_ref_ms {np.median(ref):.2f}, "
            f"{max(ref):.2f}; {metric} {np.median(raw):.2f}, {max(raw):.2f}; {metric} / host_ref_ms "
            f"{np.median(rel):.2f}, {max(rel):.2f}")


def rejudge(keep: Path) -> None:
    """The nights and the detection run kept in ``keep`` (--keep), judged again by the compare of this checkout: a
    change to compare measured on recorded runs, with no run taken again (a change to the measurement needs new
    runs)."""
    from mmbench import history
    from mmbench.compare import compare, load_sides

    runs = sorted((keep / "nights" / "nightly").glob("2*"))
    if not runs:
        raise SystemExit(f"{keep}: no nights kept (run with --keep {keep} first)")
    db = keep / "rejudge-history.sqlite"
    db.unlink(missing_ok=True)
    clean = 0
    for night, run_dir in enumerate(runs):
        history.record_run(db, run_dir)
        if night == 0:
            continue
        cmp = compare(*load_sides("history:nightly", str(run_dir), db))
        reg = _regressions(cmp)
        clean += not reg and not cmp.refusal
        print(f"  night {night:2d}: {len(reg)} trial(s) regressed · {_summary(cmp)}", flush=True)
        _print_regressions(reg)
    print(f"  {clean}/{len(runs) - 1} nights with 0 regressions · {host_spread(runs)}")
    for run_dir in sorted((keep / "detect" / "nightly").glob("2*")):
        copy = keep / "rejudge-detection.sqlite"
        shutil.copy(db, copy)
        history.record_run(copy, run_dir)
        reg = _regressions(compare(*load_sides("history:nightly", str(run_dir), copy)))
        want = f"lmf(rank={SLOW['rank']}) {'x'.join(map(str, SLOW['dims']))}"
        found = len(reg) == 1 and next(iter(reg)).startswith(want)
        print(f"  detection ({run_dir.name}): {'PASS' if found else 'FAIL'}")
        _print_regressions(reg)


def _regressions(cmp) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in cmp.regressions:
        out.setdefault(f"{e.label} {e.dims} ({e.trial_id})", set()).add(e.metric)
    return out


def _print_regressions(reg: dict[str, set[str]]) -> None:
    for k, v in reg.items():
        print(f"      regressed: {k}: {', '.join(sorted(v))}", flush=True)


def report_time(work: Path) -> float:
    from tests.fakerun import make_run

    methods = [f"method{i}" for i in range(10)]
    specs = [{"trial_id": f"{m}-{d}-{r}", "method": m, "label": f"{m}(rank={r})", "dims": f"{d}x{d}x{d}", "rank": r,
              "d": d} for m in methods for d in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) for r in (1, 2, 4, 8, 16)]
    assert len(specs) == 500
    run = make_run(work, "r500", suite="report500", specs=specs, robustness=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from mmbench.report import write_report; write_report({str(run)!r})"],
                   cwd=ROOT, check=True)
    return time.perf_counter() - t0


def quick_pairs(work: Path, pairs: int, smoke: bool) -> int:
    from mmbench.compare import compare, side_from_run

    run = _runner(_suite_file(work, "tfn_vs_lmf", quick=not smoke, smoke=smoke), work / "quick", quick=not smoke)
    clean = 0
    for i in range(pairs):
        t0 = time.perf_counter()
        cmp = compare(side_from_run(run()), side_from_run(run()))
        reg = _regressions(cmp)
        clean += not reg
        print(f"  pair {i + 1:2d}: {len(reg)} trial(s) regressed · {_summary(cmp)} · {time.perf_counter() - t0:.0f} s",
              flush=True)
        _print_regressions(reg)
    return clean


def nights(work: Path, n: int, smoke: bool) -> tuple[int, Path, Path]:
    """n compared nights (n + 1 runs). Returns (clean nights, the history database, the suite file)."""
    from mmbench.compare import compare, load_sides
    from mmbench.errors import UserError

    db = work / "nightly-history.sqlite"
    suite = _suite_file(work, "nightly", quick=False, smoke=smoke)
    run = _runner(suite, work / "nights", quick=False, db=db)
    clean = 0
    for night in range(n + 1):
        t0 = time.perf_counter()
        run_dir = run()  # `mmbench run` records itself in the history
        try:
            cmp = compare(*load_sides("history:nightly", str(run_dir), db))
        except UserError as exc:
            print(f"  night {night:2d}: {exc.render() if hasattr(exc, 'render') else exc} (the workflow passes: "
                  f"{'no baseline' in str(exc)})", flush=True)
            continue
        reg = _regressions(cmp)
        clean += not reg and not cmp.refusal
        print(f"  night {night:2d}: {len(reg)} trial(s) regressed · {_summary(cmp)} · "
              f"{time.perf_counter() - t0:.0f} s · {_gating(run_dir)}", flush=True)
        _print_regressions(reg)
    print(f"  {host_spread(sorted((work / 'nights' / 'nightly').glob('2*')))}", flush=True)
    return clean, db, suite


def install_slowdown() -> None:
    """LMF's forward at SLOW's dims and rank: busy-wait SLOWDOWN × the forward's own time after it (in the run's own
    process: see _runner)."""
    from mmbench.methods.tensor import LowRankFusion

    orig = LowRankFusion.forward

    def forward(module, xs):
        if tuple(module.dims) != SLOW["dims"] or module.rank != SLOW["rank"]:
            return orig(module, xs)
        t0 = time.perf_counter()
        y = orig(module, xs)
        end = time.perf_counter() + SLOWDOWN * (time.perf_counter() - t0)
        while time.perf_counter() < end:
            pass
        return y

    LowRankFusion.forward = forward


def detection(work: Path, db: Path, suite: Path) -> bool:
    from mmbench.compare import compare, load_sides

    copy = work / "detection-history.sqlite"
    shutil.copy(db, copy)  # the slowed run must not become anyone's baseline
    run_dir = _runner(suite, work / "detect", quick=False, db=copy)(slow=True)
    cmp = compare(*load_sides("history:nightly", str(run_dir), copy))
    reg = _regressions(cmp)
    print(f"  {_summary(cmp)} · {_gating(run_dir)}")
    _print_regressions(reg)
    want = f"lmf(rank={SLOW['rank']}) {'x'.join(map(str, SLOW['dims']))}"
    for e in cmp.entries:  # what became of the slowed trial's timings, found or not
        if f"{e.label} {e.dims}".startswith(want) and e.change is not None and "_ms_b" in e.metric:
            print(f"      {e.metric}: {e.change * 100:+.1f}% {e.state} ({e.detail})", flush=True)
    return len(reg) == 1 and next(iter(reg)).startswith(want)


@contextlib.contextmanager
def cpu_hog(n: int):
    """n busy Python processes beside the runs (killed by their own pids afterwards)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def under_hog(work: Path, smoke: bool) -> int:
    from mmbench.compare import compare, side_from_run

    suite = _suite_file(work, "nightly", quick=False, smoke=smoke, extra={"measure": {"latency": {"rounds": 5}}})
    run = _runner(suite, work / "hog", quick=False)
    with cpu_hog(os.cpu_count() or 2):
        a, b = run(), run()
    cmp = compare(side_from_run(a), side_from_run(b))
    reg = _regressions(cmp)
    print(f"  {len(reg)} trial(s) regressed · {_summary(cmp)}")
    _print_regressions(reg)
    return len(reg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--nights", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="tiny budgets: check that the script works, not the floors")
    ap.add_argument("--skip", nargs="*", default=[], choices=["report", "quick", "nights", "hog"])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (the runs, the history database)")
    ap.add_argument("--rejudge", type=Path, metavar="DIR", help="judge the nights and detection run kept in DIR "
                    "again with this checkout's compare, and stop (no runs)")
    args = ap.parse_args()
    if args.rejudge:
        rejudge(args.rejudge)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="mmbench-floors-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        if "report" not in args.skip:
            print("1. report generation, synthetic run of 500 trials (md + PNG figures + html):", flush=True)
            secs = report_time(work)
            print(f"  {secs:.2f} s  (floor <= 10 s: {'PASS' if secs <= 10 else 'FAIL'})\n", flush=True)
        if "quick" not in args.skip:
            print(f"2. {args.pairs} pairs of back-to-back `--quick` runs of suites/tfn_vs_lmf.yaml, compared:",
                  flush=True)
            clean = quick_pairs(work, args.pairs, args.smoke)
            print(f"  {clean}/{args.pairs} pairs with 0 regressions (floor: all: "
                  f"{'PASS' if clean == args.pairs else 'FAIL'})\n", flush=True)
        if "nights" not in args.skip:
            print(f"3. {args.nights} nights of suites/nightly.yaml, each against history:nightly (as the workflow):",
                  flush=True)
            clean, db, suite = nights(work, args.nights, args.smoke)
            print(f"  {clean}/{args.nights} nights with 0 regressions (floor: all: "
                  f"{'PASS' if clean == args.nights else 'FAIL'})\n", flush=True)
            print(f"4. detection at the nightly budget: LMF rank {SLOW['rank']} at dims {SLOW['dims']} "
                  f"{SLOWDOWN:.0%} slower, against that history:", flush=True)
            ok = detection(work, db, suite)
            print(f"  that trial and no other: {'PASS' if ok else 'FAIL'}\n", flush=True)
        if "hog" not in args.skip:
            print(f"5. two back-to-back nightly runs (rounds: 5) beside a CPU hog of {os.cpu_count()} busy "
                  f"processes, compared:", flush=True)
            n = under_hog(work, args.smoke)
            print(f"  floor 0 regressions: {'PASS' if n == 0 else 'FAIL'}\n", flush=True)
        print(f"total {time.perf_counter() - t_start:.0f} s" + ("  (--smoke: the floors mean nothing)" if args.smoke
                                                               else ""))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
