"""Which CPU attention kernel for which shape: the evidence behind mmbench.methods.attention_blocks.attend's rule.

Each sequence method's forward at batch 1, 32 and 128 (three unaligned modalities, half the samples padded) is timed
three ways: every attention call forced onto torch's fused scaled_dot_product_attention, every call forced onto the
two batched GEMMs, and the shape rule mmbench ships. Timed in the models rather than kernel by kernel, because a lone
kernel in a loop reuses its own freed buffers while in a model the allocator's state (and so the cost of the big score
tensors) differs. torch.utils.benchmark, in rounds that alternate the three; each figure is the least-disturbed round.
Prints `rule/best`: 1.00 where the rule is as fast as the better kernel.

    python benchmarks/attention_kernels.py [--threads N] [--min-run-time 0.6] [--rounds 4]
"""
from __future__ import annotations

import argparse

import torch
from torch.utils import benchmark

from mmbench import methods
from mmbench.methods import attention_blocks

DIMS, LENGTHS = [32, 32, 32], [50, 30, 20]
METHODS = ["mult", "lmf_mult", "merged_attn", "co_attn"]
BATCHES = [1, 32, 128]
LIMITS = {  # (BATCHED_MAX_STEPS, BATCHED_MAX_SCORES, BATCHED_MIN_SCORES)
    "rule": (attention_blocks.BATCHED_MAX_STEPS, attention_blocks.BATCHED_MAX_SCORES,
             attention_blocks.BATCHED_MIN_SCORES),
    "batched": (1 << 62, 1 << 62, 0),
    "fused": (0, 0, 0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--min-run-time", type=float, default=0.6, help="seconds per variant and model, over all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"dims {DIMS}, lengths {LENGTHS}, threads {args.threads}, torch {torch.__version__}; ms per forward")
    print(f"{'method':<12} {'batch':>5} {'batched':>9} {'fused':>9} {'rule':>9} {'rule/best':>9}")
    worst = 0.0
    try:
        for name in METHODS:
            for b in BATCHES:
                g = torch.Generator().manual_seed(0)
                xs = [torch.randn(b, t, d, generator=g) for t, d in zip(LENGTHS, DIMS)]
                masks = [torch.ones(b, t, dtype=torch.bool) for t in LENGTHS]
                for m in masks:
                    m[::2, -5:] = False
                torch.manual_seed(0)
                model = methods.create(name, DIMS, 2).eval()
                best: dict[str, float] = {}
                with torch.inference_mode():
                    outs = {}
                    for variant, limits in LIMITS.items():
                        (attention_blocks.BATCHED_MAX_STEPS, attention_blocks.BATCHED_MAX_SCORES,
                         attention_blocks.BATCHED_MIN_SCORES) = limits
                        outs[variant] = model(xs, masks=masks)
                    torch.testing.assert_close(outs["batched"], outs["fused"], rtol=1e-4, atol=1e-4)
                    order = list(LIMITS)
                    for r in range(args.rounds):
                        for variant in (order if r % 2 == 0 else order[::-1]):
                            (attention_blocks.BATCHED_MAX_STEPS, attention_blocks.BATCHED_MAX_SCORES,
                             attention_blocks.BATCHED_MIN_SCORES) = LIMITS[variant]
                            timer = benchmark.Timer("model(xs, masks=masks)", num_threads=args.threads,
                                                    globals={"model": model, "xs": xs, "masks": masks})
                            t = timer.blocked_autorange(min_run_time=args.min_run_time / args.rounds).median
                            best[variant] = min(best.get(variant, float("inf")), t)
                ratio = best["rule"] / min(best["batched"], best["fused"])
                worst = max(worst, ratio)
                print(f"{name:<12} {b:>5} {best['batched'] * 1e3:>9.2f} {best['fused'] * 1e3:>9.2f} "
                      f"{best['rule'] * 1e3:>9.2f} {ratio:>9.2f}", flush=True)
    finally:
        (attention_blocks.BATCHED_MAX_STEPS, attention_blocks.BATCHED_MAX_SCORES,
         attention_blocks.BATCHED_MIN_SCORES) = LIMITS["rule"]
    print(f"worst rule/best: {worst:.2f}")


if __name__ == "__main__":
    main()
