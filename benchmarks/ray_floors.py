"""Issue 13's floors for the Ray executor: its overhead against the local worker pool, trials per second on a
simulated one- and two-node cluster, and drivers killed at random instants then resumed.

    python benchmarks/ray_floors.py                          # all three, full size
    python benchmarks/ray_floors.py overhead --trials 200    # or: scaling [--trials 40], kills [--kills 5]

Needs `pip install 'mmbench[ray]'`. Prints its figures; asserts nothing (speed goals are floors to read, not tests).
A simulated cluster's nodes share this machine's cores: the two-node figure shows scaling only where the machine has
the cores for both nodes (at least 4 here).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
MiB = 2**20

# Counts only (parameters, FLOPs): the cheapest trial there is, so executor overhead is all that differs.
CHEAP = """\
name: raycheap
task: {dataset: synthetic, params: {modalities: 2, n_train: 50, n_val: 50, n_test: 50}}
measure: {device: cpu, threads: 1, accuracy: false, memory: false, latency: null}
sweep:
  dims: [DIMS]
methods: [{method: tfn}, {method: lmf, params: {rank: 2}}, {method: early}, {method: late}]
"""

# A little training per trial: enough work that more nodes can help.
TRAINING = """\
name: raytrain
task: {dataset: synthetic, params: {interaction: synergy, modalities: 2, dim: 4, n_train: 2000, n_val: 200, n_test: 200}}
train: {epochs: 5, batch_size: 32, seeds: [0]}
measure: {device: cpu, threads: 1, flops: false, memory: false, latency: null}
sweep:
  dims: [DIMS]
methods: [{method: early}, {method: late}]
"""

def _prepared(template: str, n: int, tmp: str):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    per_dim = 2 if "raytrain" in template else 4
    dims = ", ".join(str(4 + i) for i in range(max(1, -(-n // per_dim))))
    path = Path(tmp) / "suite.yaml"
    path.write_text(template.replace("DIMS", dims))
    prepared = prepare(load_suite(path))
    prepared.trials = prepared.trials[:n]
    return prepared


def _drain(executor, prepared) -> tuple[float, list[dict]]:
    """Wall time of the executor alone: every trial submitted, every result back (no run directory, no report)."""
    t0 = time.perf_counter()
    rows = [r.row for _, r in executor.run(prepared.trials, prepared.tasks)]
    return time.perf_counter() - t0, rows


def overhead(trials: int = 200) -> None:
    import ray

    from mmbench.execute import WorkerPool
    from mmbench.ray_executor import RayExecutor

    cpus = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepared(CHEAP, trials, tmp)
        pool = WorkerPool(workers=cpus)
        t0 = time.perf_counter()
        pool.start()  # the pool's own start (spawning workers that import torch) is part of its cost
        _, pool_rows = _drain(pool, prepared)
        pool_wall = time.perf_counter() - t0
        pool.close()
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, object_store_memory=200 * MiB, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter() - t0
        ex = RayExecutor()
        ray_wall, ray_rows = _drain(ex, prepared)
        ex.close()
        ray.shutdown()
    same = {r["trial_id"]: (r["status"], r["params"], r["flops"]) for r in pool_rows} == \
        {r["trial_id"]: (r["status"], r["params"], r["flops"]) for r in ray_rows}
    print(f"## Overhead: {len(prepared.trials)} count-only trials, {cpus} CPUs "
          f"(rows equal: {same}; statuses {sorted({r['status'] for r in ray_rows})})")
    print(f"local worker pool ({cpus} workers, their start included): {pool_wall:6.1f} s")
    print(f"Ray executor, after the cluster started:            {ray_wall:6.1f} s   (cluster start {start:.1f} s apart)")
    print(f"Ray / pool: {ray_wall / pool_wall:.2f}×   floor: ≤ 1.5×\n")


def scaling(trials: int = 40) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from mmbench.ray_executor import JOB_ENV, RayExecutor

    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepared(TRAINING, trials, tmp)
        rates = {}
        for nodes in (1, 2):
            c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, object_store_memory=100 * MiB))
            for _ in range(nodes - 1):
                c.add_node(num_cpus=2, object_store_memory=100 * MiB)
            ray.init(address=c.address, runtime_env={"env_vars": JOB_ENV}, log_to_driver=False)
            ex = RayExecutor()
            warm = prepared.trials[: 2 * nodes]  # start each node's workers (torch imports) before the clock
            list(ex.run(warm, prepared.tasks))
            wall, rows = _drain(ex, prepared)
            ex.close()
            ray.shutdown()
            c.shutdown()
            used = len({r.get("node_id") for r in rows})
            rates[nodes] = len(rows) / wall
            print(f"{nodes} node(s) of 2 CPUs: {len(rows)} trials in {wall:.1f} s = {rates[nodes]:.2f} trials/s "
                  f"(measured on {used} node(s))")
    print(f"## Scaling: two nodes / one node = {rates[2] / rates[1]:.2f}× trials/s "
          f"(this machine has {os.cpu_count()} CPUs for the simulated nodes' 4)\n")


def kills(n: int = 5, seed: int = 0) -> None:
    """A cluster that outlives its drivers; each driver killed (SIGKILL) at a random instant, then resumed once."""
    from ray.cluster_utils import Cluster

    from benchmarks.runner_floors import KILL_SUITE, json_doc, kill_and_resume, run_cli, scores

    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, object_store_memory=100 * MiB))
    ray_args = ["--executor", "ray", "--address", c.address]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            suite = Path(tmp) / "killable.yaml"
            suite.write_text(textwrap.dedent(KILL_SUITE.replace("name: killable", "name: raykillable")))
            t_ref, ref = run_cli(str(suite), "--out", f"{tmp}/ref", "--json", *ray_args)
            expected = scores(json_doc(ref).get("rows", []))
            if not expected:
                print(f"reference run FAILED: {ref.stderr[-400:]}")
                return
            print(f"## Kills: reference run (Ray, 1 node) {len(expected)} trials in {t_ref:.1f} s; each driver killed "
                  f"at a random instant in [0.15, 0.85] × {t_ref:.1f} s, then `--resume`d")
            good = kill_and_resume(suite, "raykillable", tmp, t_ref, expected, n, seed, *ray_args)
            print(f"{good}/{n} complete, correct run directories   floor: {n}/{n}\n")
    finally:
        c.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", help="overhead, scaling, kills (default: all three)")
    ap.add_argument("--trials", type=int, default=None, help="trials for overhead (200) and scaling (40)")
    ap.add_argument("--kills", type=int, default=5)
    a = ap.parse_args()
    if set(a.which) - {"overhead", "scaling", "kills"}:
        ap.error(f"unknown floor(s): {' '.join(sorted(set(a.which) - {'overhead', 'scaling', 'kills'}))}")
    which = a.which or ["overhead", "scaling", "kills"]
    if len(which) > 1:  # each floor in a fresh process: a Ray session started and ended here leaves state behind
        for name in which:  # (a later cluster's auth token no longer matched the one its drivers read)
            extra = (["--trials", str(a.trials)] if a.trials else []) + ["--kills", str(a.kills)]
            subprocess.run([sys.executable, __file__, name, *extra], env=ENV)
    elif which[0] == "kills":
        kills(a.kills)
    else:
        globals()[which[0]](*([a.trials] if a.trials else []))
