"""Issue 28's second floor: three seeds of one configuration trained together (measure/seeds_together.py: the
seed-batched model, and the vmap one) against one seed's ``fit`` and against the three one by one (floor: together
(batched) ≤ 1.5× one seed),
on the main job's task (synergy, 3 modalities, 3000 samples, 20 epochs, batch 128, Adam lr 0.003; two modalities for
the pair methods), CPU, one thread
(--threads N: the main job's own count, which `measure.threads: auto` resolves to the machine's cores).
Interleaved in one process, medians of the repeats, the load average printed beside them.

A second table times single training steps (CPU time, the fastest of 7 blocks of 40 steps: robust to the load):
one seed's step at the batch of 128, the same model's step at 3 × 128 rows (three seeds' arithmetic with one set of
weights and one step's overheads: no way of training three seeds together can take less, so where it is above 1.5×
one step, the floor is out of reach on one thread whatever the implementation), and the seed-batched step.

Times are the process's CPU time (``time.process_time``: on a shared, loaded machine it counts only this process's
running, which wall time does not) and wall time, both printed; one thread, so CPU time ≈ wall time on a quiet
machine.

    python benchmarks/seeds_together.py [--repeats 3] [--epochs 20]
The C library's heap is held still, as in every process that runs a trial (mmbench/measure/heap.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from mmbench.data.registry import load
from mmbench.measure import heap
from mmbench.measure.seeds_together import fit_seeds
from mmbench.measure.train import fit
from mmbench.model import build
from mmbench.suite import TrainSpec

MODELS = {"tfn 16³": ("tfn", {}, [16, 16, 16]), "lmf rank 4, 32³": ("lmf", {"rank": 4}, [32, 32, 32]),
          "early 16³": ("early", {}, [16, 16, 16]), "early(mlp) 16³": ("early", {"hidden": 64}, [16, 16, 16]),
          "late 16³": ("late", {}, [16, 16, 16]),
          # the pair methods (two modalities: the task then has two), at fusion_zoo's settings
          "mlb 16²": ("mlb", {"mm": 64}, [16, 16]), "mfb 16²": ("mfb", {}, [16, 16]),
          "tucker 16²": ("tucker", {"mm": 16}, [16, 16]), "mutan 16²": ("mutan", {}, [16, 16]),
          "block 16²": ("block", {}, [16, 16]), "block_tucker 16²": ("block_tucker", {}, [16, 16])}
SEEDS = [0, 1, 2]


def _vmap_only(make, task, spec):
    """The vmap way, as the seed-batched one would fall back to it."""
    from mmbench.measure import seeds_together as st
    return st._together(make, task.train, task.val, spec, SEEDS, "classification", "cpu", st._vmapped)


def _steps(make, task, spec) -> tuple[float, float, float]:
    """CPU seconds of one training step: one seed at the batch, one seed at three times it, three seeds batched."""
    from mmbench.measure import seed_batched
    from mmbench.measure import train as T

    xs, y = T.tensors(task.train, "cpu")
    b = spec.batch_size
    models = []
    for s in SEEDS:
        torch.manual_seed(s)
        models.append(make())
    step = T.training_step(models[0], spec, "classification")
    opt = step.optimizer()
    joint = seed_batched.SeedBatched(models)
    jopt = step.optimizer(joint.parameters())
    loss = seed_batched.per_seed_loss("classification", spec.loss)
    rows = torch.stack([torch.randperm(len(y))[:b] for _ in SEEDS])

    def batched():
        jopt.zero_grad(set_to_none=True)
        loss(joint([x[rows.flatten()].view(len(SEEDS), b, -1) for x in xs]), y[rows.flatten()].view(rows.shape)).sum(
            ).backward()
        jopt.step()

    calls = {"one": lambda: step(opt, [x[:b] for x in xs], y[:b]),
             "wide": lambda: step(opt, [x[:3 * b] for x in xs], y[:3 * b]), "batched": batched}
    best = {k: float("inf") for k in calls}
    for _ in range(7):
        for k, f in calls.items():
            for _ in range(5):
                f()
            c0 = time.process_time()
            for _ in range(40):
                f()
            best[k] = min(best[k], (time.process_time() - c0) / 40)
    return best["one"], best["wide"], best["batched"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", nargs="*", default=list(MODELS)[:2], help=f"of {list(MODELS)}")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch's intra-op threads (the main job trains at the machine's count: 2 here); CPU time "
                         "then counts every thread's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    heap.hold_for_timing()  # as in every process that runs a trial: no page faults that depend on what ran before
    tasks = {m: load("synthetic", interaction="synergy", modalities=m, dim=16, num_classes=2, noise=0.4,
                     n_train=3000, n_val=1000, n_test=2000, seed=0) for m in {len(MODELS[n][2]) for n in args.models}}
    spec = TrainSpec(epochs=args.epochs, batch_size=128, lr=0.003, seeds=SEEDS)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.epochs} epochs, medians of {args.repeats} interleaved runs")
    print(f"{'model':18} {'one seed':>9} {'3 alone':>9} {'batched':>8} {'vmap':>7} {'alone/one':>10} "
          f"{'batched/one':>12} {'vmap/one':>9}")
    for name in args.models:
        method, hp, dims = MODELS[name]
        task = tasks[len(dims)]
        make = lambda: build(method, hp, task.input_dims, dims, task.num_classes)  # noqa: E731
        runs = {
            "one": lambda: fit(make, task.train, task.val, spec, seed=SEEDS[0]),
            "alone": lambda: [fit(make, task.train, task.val, spec, seed=s) for s in SEEDS],
            "batched": lambda: fit_seeds(make, task.train, task.val, spec, SEEDS),
            "vmap": lambda: _vmap_only(make, task, spec),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        walls: dict[str, list[float]] = {k: [] for k in runs}
        warm = spec.model_copy(update={"epochs": 1})
        how = fit_seeds(make, task.train, task.val, warm, SEEDS)[1]
        assert how == "together (batched)", how
        _vmap_only(make, task, warm)
        for r in range(args.repeats):
            for key in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                c0, t0 = time.process_time(), time.perf_counter()
                runs[key]()
                times[key].append(time.process_time() - c0)
                walls[key].append(time.perf_counter() - t0)
        for what, ts in (("cpu", times), ("wall", walls)):
            one, alone, batched, vm = (statistics.median(ts[k]) for k in runs)
            print(f"{name:13} {what:4} {one:8.2f}s {alone:8.2f}s {batched:7.2f}s {vm:6.2f}s {alone / one:10.2f} "
                  f"{batched / one:12.2f} {vm / one:9.2f}")
    print("floor: batched/one ≤ 1.5 (tfn 16³, lmf rank 4 32³)")
    print(f"\nsingle steps, CPU time, fastest of 7 blocks of 40\n{'model':18} {'one (128)':>10} {'one (384)':>10} "
          f"{'batched':>8} {'384/128':>8} {'batched/one':>12}")
    for name in args.models:
        method, hp, dims = MODELS[name]
        task = tasks[len(dims)]
        one, wide, batched = _steps(lambda: build(method, hp, task.input_dims, dims, task.num_classes), task, spec)
        print(f"{name:18} {one * 1e3:8.3f}ms {wide * 1e3:8.3f}ms {batched * 1e3:6.3f}ms {wide / one:8.2f} "
              f"{batched / one:12.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
