"""How well the host reference (contention.reference_workload) follows the host's speed as the trials feel it.

    python benchmarks/host_reference.py --seconds 300

Times, in turn and over and over for ``--seconds`` on one thread, ~30 ms blocks of nightly-suite trials' forwards and
training steps (the suite's own model and training step) beside each part of the reference and the whole. A VM's
vCPU switches speed for seconds to minutes; a reference that follows it moves with each trial timing from block to
block. Prints, per timing: its block-to-block spread, and per reference its correlation with it (log times, a
3-block moving mean), the slope (timing's change per unit change of the reference; 1 = moves alike) and the timing's
spread over the blocks where the reference read within 5% of its median (what compare's host-speed match leaves).
Run it on a quiet machine (check `uptime`); nothing here is a pass/fail floor, it is the evidence behind the
reference's make-up.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

NIGHTLY = [("lmf", {"rank": 2}, 16, 1), ("early", {}, 16, 64), ("early", {}, 32, 64), ("tfn", {}, 16, 64),
           ("lmf", {"rank": 8}, 32, 1)]


def timings() -> dict:
    import torch

    from mmbench import model as M
    from mmbench.measure.train import training_step
    from mmbench.suite import TrainSpec

    out = {}
    for method, hp, d, b in NIGHTLY:
        torch.manual_seed(0)
        m = M.build(method, hp, [8] * 3, [d] * 3, 2)
        xs, y = [torch.randn(b, 8) for _ in range(3)], torch.randint(0, 2, (b,))
        step = training_step(m, TrainSpec(lr=0.003), "classification")
        opt, name = step.optimizer(), f"{method}{hp.get('rank', '')} {d}³ b{b}"

        def train(m=m, step=step, opt=opt, xs=xs, y=y):
            m.train()
            step(opt, xs, y)

        @torch.inference_mode()
        def forward(m=m, xs=xs):
            m.eval()
            m(xs)

        out[f"train {name}"], out[f"fwd {name}"] = train, forward
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    args = ap.parse_args()
    import torch

    from mmbench.measure.contention import reference_parts, reference_workload

    torch.set_num_threads(1)
    refs = {f"ref:{k}": f for k, f in reference_parts().items()}
    refs["ref:whole"] = reference_workload()
    fns = {**timings(), **refs}
    calls = {}
    for k, f in fns.items():  # warm up, then size each block to ~30 ms
        for _ in range(20):
            f()
        t = time.perf_counter()
        for _ in range(20):
            f()
        calls[k] = max(1, int(0.03 / ((time.perf_counter() - t) / 20)))
    series = {k: [] for k in fns}
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(calls[k]):
                f()
            series[k].append((time.perf_counter() - t) / calls[k])
    logs = {k: np.convolve(np.log(np.array(v) / np.median(v)), np.ones(3) / 3, mode="valid") for k, v in series.items()}
    print(f"{len(series['ref:whole'])} blocks each over {args.seconds:.0f} s")
    for k in refs:
        print(f"{k:12s} median {np.median(series[k]) * 1e6:7.1f} µs  spread {np.std(logs[k]) * 100:.1f}%")
    for k in fns:
        if k in refs:
            continue
        cells = []
        for r in refs:
            a, b = logs[r], logs[k]
            near = np.abs(a) < np.log(1.05)
            cells.append(f"{r[4:]} r={np.corrcoef(a, b)[0, 1]:+.2f} slope={np.polyfit(a, b, 1)[0]:.2f} "
                         f"left={np.std(b[near]) * 100:.1f}%")
        print(f"{k:22s} spread {np.std(logs[k]) * 100:4.1f}% | " + " | ".join(cells))


if __name__ == "__main__":
    main()
