"""Floors of the instruction-count gate (issue: nightly tracking that holds on any shared runner), measured and
printed, never asserted in tests.

1. Stability: the same trials counted in PROCS separate valgrind passes (one process each, as a run does). Floor:
   every instruction figure within 0.1% (max/min - 1) across the processes.
2. No false alarms: NIGHTS nights of a small gate suite (a user's fusion module, LMF, early fusion; instructions on),
   each a fresh `mmbench run` recorded in a history and judged by `mmbench compare history:gate RUN` exactly as the
   nightly workflow does; first on the machine as it is, then with two busy loops running beside every night.
   Floor: 0 regressions in every night of both.
3. Detection: the user's module's forward does 10% more real work (one more elementwise pass over its hidden state
   in every ten; same class name, so the same trial id), TRIES nights in a row, none accepted. Floor: every night
   exit 1 with that trial's instruction figures regressed and no other trial's (a night after an unaccepted
   regression is still red); then `mmbench history --accept` of the last and one more night: exit 0.
4. Cost: `mmbench run suites/nightly.yaml` with its instructions on: the run's wall time and the pass's share
   (env.json's instructions.pass_s). Floor: the run under 10 minutes on a 2-core machine.

Every figure is printed with the load average. Instruction counts do not move with the load; the run's wall time does.
  python benchmarks/instr_floors.py [--procs 5] [--nights 10] [--tries 10] [--skip stability nights hog detect cost]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODULE = '''"""A user's fusion module for the gate floors: BLOCKS passes of real elementwise work over the hidden state."""
import torch
from torch import nn

BLOCKS = {blocks}


class Slowable(nn.Module):
    family = "user"
    rank_param = "hidden"

    def __init__(self, dims, out_dim, hidden: int = 32):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, xs):
        h = torch.stack([p(x) for p, x in zip(self.proj, xs)]).sum(0)
        for _ in range(BLOCKS):
            h = torch.tanh(h * 1.01 + 0.01)
        return self.out(h)
'''

SUITE = """name: gate
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 3, dim: 8, num_classes: 2, n_train: 300, n_val: 100, n_test: 200}
train: {epochs: 2, batch_size: 64, seeds: [0]}
measure:
  device: cpu
  threads: 1
  instructions: true
  latency: {batch_sizes: [1, 64], warmup: 2, min_samples: 5, max_time_s: 0.1, min_time_s: 0.05, rounds: 3}
sweep: {dims: [16]}
methods:
  - method: gate_module:Slowable
    label: slowable (user)
  - method: lmf
    sweep: {rank: [8]}
  - method: early
"""


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def mmbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "mmbench", *args], cwd=cwd, capture_output=True, text=True, env=env)


def stability(procs: int, trials: int, cache_sim: bool = False) -> bool:
    from mmbench.measure import instructions as I
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    suite = load_suite(ROOT / "suites/nightly.yaml")
    prepared = prepare(suite)
    chosen = prepared.trials[:trials]
    print(f"1. stability: {len(chosen)} trials of suites/nightly.yaml counted in {procs} separate valgrind passes "
          f"({load()})")
    seen: dict[tuple[str, str], list[float]] = {}
    for i in range(procs):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            counts = I.count_trials(chosen, prepared.tasks, Path(tmp), cache_sim=cache_sim)
        for tid, cols in counts.columns.items():
            for k, v in cols.items():
                if k.startswith("instr_") and isinstance(v, float):
                    seen.setdefault((tid, k), []).append(v)
        for tid, raw in counts.raw.items():  # --cache-sim: the cycle estimates, judged the same way
            for k, v in raw.items():
                if k.endswith("_cycles"):
                    seen.setdefault((tid, k), []).append(v)
        print(f"   pass {i + 1}: {time.perf_counter() - t0:.0f} s, {counts.note or 'ok'} ({load()})", flush=True)
    spreads = {key: max(v) / min(v) - 1 for key, v in seen.items() if len(v) == procs and min(v) > 0}
    worst = sorted(spreads.items(), key=lambda kv: -kv[1])[:5]
    for (tid, col), s in worst:
        print(f"   {tid} {col}: {s * 100:.4f}% over {procs} processes ({min(seen[tid, col]):,.0f} … "
              f"{max(seen[tid, col]):,.0f})")
    cyc = [v for (t, k), v in spreads.items() if k.endswith("_cycles")]
    if cyc:
        print(f"   cycle estimates (--cache-sim): {len(cyc)} figures, worst {max(cyc) * 100:.4f}% over {procs} processes")
    spreads = {k: v for k, v in spreads.items() if not k[1].endswith("_cycles")}
    ok = bool(spreads) and max(spreads.values()) <= 0.001
    print(f"   {len(spreads)} figures, worst {max(spreads.values()) * 100:.4f}%: {'PASS' if ok else 'FAIL'} (≤ 0.1%)"
          if spreads else "   nothing counted: FAIL")
    return ok


class Gate:
    """A folder with the gate suite, its module and a history database: nights as the workflow runs them."""

    def __init__(self, root: Path):
        self.root = root
        (root / "gate.yaml").write_text(SUITE)
        self.blocks(10)

    def blocks(self, n: int) -> None:
        (self.root / "gate_module.py").write_text(MODULE.format(blocks=n))

    def night(self) -> tuple[int, dict, str]:
        t0 = time.perf_counter()
        run = mmbench("run", "gate.yaml", "--out", "results", "--json", cwd=self.root)
        if run.returncode != 0:
            raise SystemExit(f"mmbench run failed ({run.returncode}): {run.stderr[-1500:]}")
        run_dir = json.loads(run.stdout)["run_dir"]
        cmp = mmbench("compare", "history:gate", run_dir, "--db", "results/history.sqlite", "--json", cwd=self.root)
        took = time.perf_counter() - t0
        doc = json.loads(cmp.stdout) if cmp.stdout.strip().startswith("{") else {}
        return cmp.returncode, doc, f"{run_dir} ({took:.0f} s; {cmp.stderr.strip().splitlines()[-1:] or ''})"


def _regressed(doc: dict) -> list[tuple[str, str, str]]:
    return [(e["label"], e["metric"], e["state"]) for e in doc.get("entries", []) if e["state"] in ("regressed",
                                                                                                  "failed")]


def nights(gate: Gate, n: int, hog: bool) -> bool:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)] if hog else []
    try:
        print(f"2{'b' if hog else 'a'}. nights {'with two busy loops beside' if hog else 'as the machine is'}: {n} "
              f"({load()})")
        bad = 0
        for i in range(n):
            rc, doc, what = gate.night()
            reg = _regressed(doc)
            counts = doc.get("counts", {})
            bad += rc == 1
            print(f"   night {i + 1}: exit {rc}, {len(reg)} regressed, counts {counts}, noise by why "
                  f"{doc.get('noise_causes', {})} — {what} ({load()})", flush=True)
        ok = bad == 0
        print(f"   {n - bad}/{n} nights with 0 regressions: {'PASS' if ok else 'FAIL'}")
        return ok
    finally:
        for p in hogs:
            p.kill()


def detect(gate: Gate, tries: int) -> bool:
    print(f"3. detection: the user's module does 11 passes where it did 10 (+10% of its work), {tries} nights, none "
          f"accepted ({load()})")
    gate.blocks(11)
    good = 0
    last = None
    for i in range(tries):
        rc, doc, what = gate.night()
        reg = _regressed(doc)
        labels = {r[0] for r in reg}
        counted = [r for r in reg if r[1].startswith("instr")]
        hit = rc == 1 and labels == {"slowable (user)"} and counted
        good += bool(hit)
        moved = [f"{e['metric']} {e['change'] * 100:+.1f}%" for e in doc.get("entries", [])
                 if e["state"] == "regressed" and e.get("change") is not None][:4]
        print(f"   night {i + 1}: exit {rc}, regressed {sorted(labels) or 'none'}: {', '.join(moved)} — "
              f"{'found' if hit else 'MISSED'} ({load()})", flush=True)
        last = what.split(" ", 1)[0]
    print(f"   found, and only it, in {good}/{tries} nights: {'PASS' if good == tries else 'FAIL'}")
    acc = mmbench("history", "--accept", last, "--why", "the floor's deliberate change", "--db",
                  "results/history.sqlite", cwd=gate.root)
    rc, doc, what = gate.night()
    print(f"   accepted the last ({acc.stderr.strip()}); the next night: exit {rc}, "
          f"{len(_regressed(doc))} regressed: {'PASS' if rc == 0 else 'FAIL'}")
    return good == tries and rc == 0


def cost() -> bool:
    print(f"4. cost: mmbench run suites/nightly.yaml with instructions on ({load()})")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = mmbench("run", str(ROOT / "suites/nightly.yaml"), "--out", tmp, "--json", cwd=ROOT)
        took = time.perf_counter() - t0
        if run.returncode != 0:
            print(f"   run failed: {run.stderr[-800:]}")
            return False
        run_dir = Path(json.loads(run.stdout)["run_dir"])
        env = json.loads((run_dir / "env.json").read_text()).get("instructions", {})
    share = env.get("pass_s")
    print(f"   run {took:.0f} s, of which the instruction pass {share:.0f} s ({load()}): "
          f"{'PASS' if took < 600 else 'FAIL'} (< 10 min)" if share else f"   run {took:.0f} s, no pass recorded: FAIL")
    return took < 600 and bool(share)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=15, help="stability: the first N trials of the nightly suite")
    ap.add_argument("--nights", type=int, default=10)
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[], choices=["stability", "nights", "hog", "detect", "cost"])
    ap.add_argument("--keep", type=Path, help="keep the gate's folder (runs, history) here")
    ap.add_argument("--cache-sim", action="store_true", help="stability: also the cycle estimate (cache simulation)")
    args = ap.parse_args()
    results = {}
    if "stability" not in args.skip:
        results["stability"] = stability(args.procs, args.trials, args.cache_sim)
    if {"nights", "hog", "detect"} - set(args.skip):
        root = args.keep or Path(tempfile.mkdtemp(prefix="mmbench-gate-"))
        root.mkdir(parents=True, exist_ok=True)
        gate = Gate(root)
        if "nights" not in args.skip:
            results["nights"] = nights(gate, args.nights, hog=False)
        if "hog" not in args.skip:
            results["hog"] = nights(gate, args.nights, hog=True)
        if "detect" not in args.skip:
            results["detect"] = detect(gate, args.tries)
    if "cost" not in args.skip:
        results["cost"] = cost()
    print("summary: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
