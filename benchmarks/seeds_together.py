"""Issue 28's second floor: three seeds of one configuration trained together (one vectorised model, measure/
seeds_together.py) against one seed's ``fit`` and against the three one by one (floor: together ≤ 1.5× one seed),
on the main job's task (synergy, 3 modalities, 3000 samples, 20 epochs, batch 128, Adam lr 0.003), CPU, one thread.
Interleaved in one process, medians of the repeats, the load average printed beside them.

"bound": one seed's fit at three times the batch (and a third of the steps): the three seeds' arithmetic with one
model's per-step overheads, i.e. the best any vectorised run can do here. Where it is itself above 1.5× one seed, the
step is bound by arithmetic, which one CPU thread cannot do faster for three seeds than for one.

    python benchmarks/seeds_together.py [--repeats 3] [--epochs 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from mmbench.data.registry import load
from mmbench.measure.seeds_together import fit_seeds
from mmbench.measure.train import fit
from mmbench.model import build
from mmbench.suite import TrainSpec

MODELS = {"tfn 16³": ("tfn", {}, [16, 16, 16]), "lmf rank 4, 32³": ("lmf", {"rank": 4}, [32, 32, 32])}
SEEDS = [0, 1, 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = load("synthetic", interaction="synergy", modalities=3, dim=16, num_classes=2, noise=0.4, n_train=3000,
                n_val=1000, n_test=2000, seed=0)
    spec = TrainSpec(epochs=args.epochs, batch_size=128, lr=0.003, seeds=SEEDS)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}, "
          f"1 thread, {args.epochs} epochs, medians of {args.repeats} interleaved runs")
    print(f"{'model':18} {'one seed':>9} {'3 alone':>9} {'3 together':>11} {'bound':>7} {'together/one':>13} "
          f"{'bound/one':>10}  how")
    for name, (method, hp, dims) in MODELS.items():
        make = lambda: build(method, hp, task.input_dims, dims, task.num_classes)  # noqa: E731
        runs = {
            "one": lambda: fit(make, task.train, task.val, spec, seed=SEEDS[0]),
            "alone": lambda: [fit(make, task.train, task.val, spec, seed=s) for s in SEEDS],
            "together": lambda: fit_seeds(make, task.train, task.val, spec, SEEDS),
            "bound": lambda: fit(make, task.train, task.val, spec.model_copy(update={"batch_size": 3 * 128}),
                                 seed=SEEDS[0]),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        how = fit_seeds(make, task.train, task.val, spec.model_copy(update={"epochs": 1}), SEEDS)[1]  # warm
        for r in range(args.repeats):
            for key in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                t0 = time.perf_counter()
                runs[key]()
                times[key].append(time.perf_counter() - t0)
        one, alone, together, bound = (statistics.median(times[k]) for k in ("one", "alone", "together", "bound"))
        print(f"{name:18} {one:8.2f}s {alone:8.2f}s {together:10.2f}s {bound:6.2f}s {together / one:13.2f} "
              f"{bound / one:10.2f}  {how} (floor: together/one ≤ 1.5)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
