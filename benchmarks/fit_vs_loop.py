"""Issue 28's first floor: mmbench's ``fit`` against a minimal hand-written loop on the same model and data (the main
job's task: synergy, 3 modalities, 3000 training samples, 20 epochs, batch 128, Adam lr 0.003), CPU, one thread.

The minimal loop: fused Adam where torch has it, no per-step host read of the loss, validation each epoch, the best
epoch's weights copied into buffers allocated once. Both are timed in the same process, interleaved A/B (the order
alternating), in wall time and in the process's CPU time (``time.process_time``; one thread: equal on a quiet
machine, and on a shared one CPU time leaves out the time a co-tenant took the core). The floor (fit ≤ 1.05× the loop
for every model) is judged in CPU time on the paired ratio: the median over repeats of fit ÷ loop, each repeat's two
runs back to back, at one speed of the host. This VM's host speed moves by 20-100% between runs minutes apart (the
host reference of `mmbench compare`), which moves a median of a few 0.3 s fits by ±15%; the ratio of the fastest runs
and of the medians are printed beside it. Both must reach the same validation accuracy. The load average is printed
beside the figures: on a shared machine they are upper bounds.

    python benchmarks/fit_vs_loop.py [--repeats 3] [--epochs 20]
The C library's heap is held still, as in every process that runs a trial (mmbench/measure/heap.py).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
from torch import nn

from mmbench.data.registry import load
from mmbench.measure import heap
from mmbench.measure.train import OPTIMIZERS, fit, tensors
from mmbench.model import build
from mmbench.suite import TrainSpec

MODELS = {"tfn 16³": ("tfn", {}, [16, 16, 16]), "lmf rank 4, 32³": ("lmf", {"rank": 4}, [32, 32, 32]),
          "early 16³": ("early", {}, [16, 16, 16]), "tfn 32×32×64": ("tfn", {}, [32, 32, 64])}


def minimal_loop(make, train, val, spec: TrainSpec, seed: int) -> tuple[nn.Module, float]:
    """What a person would write: nothing a fit needs beyond training, validating and keeping the best epoch."""
    torch.manual_seed(seed)
    model = make()
    opt = OPTIMIZERS[spec.optimizer](model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, fused=True)
    (xtr, ytr), (xva, yva) = tensors(train, "cpu"), tensors(val, "cpu")
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    best_score, best = -math.inf, [t.detach().clone() for t in model.state_dict().values()]
    for _ in range(spec.epochs):
        model.train()
        order = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), spec.batch_size):
            idx = order[i:i + spec.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model([x[idx] for x in xtr]), ytr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            score = (model(xva).argmax(1) == yva).float().mean().item()
        if score > best_score:
            best_score = score
            for b, t in zip(best, model.state_dict().values()):
                b.copy_(t)
    model.load_state_dict(dict(zip(model.state_dict(), best)))
    return model, best_score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    heap.hold_for_timing()  # as in every process that runs a trial: no page faults that depend on what ran before
    task = load("synthetic", interaction="synergy", modalities=3, dim=16, num_classes=2, noise=0.4, n_train=3000,
                n_val=1000, n_test=2000, seed=0)
    spec = TrainSpec(epochs=args.epochs, batch_size=128, lr=0.003)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}, "
          f"1 thread, {args.epochs} epochs, {args.repeats} interleaved A/B runs: fastest (median)")
    print(f"{'model':18} {'clock':5} {'fit':>8} {'loop':>8} {'paired':>6} {'fastest':>8} {'medians':>8}  "
          f"val acc fit / loop   (times: the fastest; ratios: paired, of the fastest, of the medians)")
    worst = 0.0
    for name, (method, hp, dims) in MODELS.items():
        make = lambda: build(method, hp, task.input_dims, dims, task.num_classes)  # noqa: E731
        times = {(w, c): [] for w in ("fit", "loop") for c in ("cpu", "wall")}
        fit(make, task.train, task.val, TrainSpec(epochs=1, batch_size=128, lr=0.003), seed=0)  # warm both paths
        minimal_loop(make, task.train, task.val, TrainSpec(epochs=1, batch_size=128, lr=0.003), seed=0)
        for r in range(args.repeats):
            for which in (("fit", "loop") if r % 2 == 0 else ("loop", "fit")):  # interleaved, order alternating
                c0, t0 = time.process_time(), time.perf_counter()
                if which == "fit":
                    _, info = fit(make, task.train, task.val, spec, seed=0)
                    fit_acc = info.val_score
                else:
                    _, loop_acc = minimal_loop(make, task.train, task.val, spec, seed=0)
                times[which, "cpu"].append(time.process_time() - c0)
                times[which, "wall"].append(time.perf_counter() - t0)
        for clock in ("cpu", "wall"):
            f, lp = times["fit", clock], times["loop", clock]
            paired = statistics.median(a / b for a, b in zip(f, lp))  # each repeat's two runs, back to back
            if clock == "cpu":
                worst = max(worst, paired)
            print(f"{name:18} {clock:5} {min(f):7.3f}s {min(lp):7.3f}s {paired:6.2f} {min(f) / min(lp):8.2f} "
                  f"{statistics.median(f) / statistics.median(lp):8.2f}  {fit_acc:.3f} / {loop_acc:.3f}  "
                  f"({info.optimizer_impl})")
    print(f"worst paired ratio (CPU time) {worst:.2f} (floor ≤ 1.05); load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
