"""Forward latency of the sequence methods: mmbench's attention (torch's fused scaled_dot_product_attention or two
batched GEMMs, chosen by shape: see mmbench.methods.attention_blocks.attend) next to the same modules with attention
written the straightforward way (softmax(QKᵀ/√d_h)V with explicit matmuls, as the public MulT/METER code does).

Both variants share every weight; the script first checks that their outputs agree, then times each with
torch.utils.benchmark (blocked_autorange: warm-up, blocks of calls, median and IQR kept) in rounds that alternate the
two variants; each variant's figure is its least-disturbed round. Prints a table and the
ratio ours/straightforward; the issue's goal is ratio ≤ 1.05. Timings on a shared, loaded machine are noisy: rerun
on a quiet one.

    python benchmarks/sequence_latency.py [--batch 32] [--threads N] [--min-run-time 1.0] [--rounds 5]
"""
from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from mmbench import methods
from mmbench.methods.attention_blocks import Attention

DIMS, LENGTHS = [32, 32, 32], [50, 30, 20]  # mid-size: three unaligned modalities (MulT's MOSI-like lengths)
CONFIGS = [("mult", {}), ("lmf_mult", {}), ("lmf_mult", {"variant": 2}), ("merged_attn", {}), ("co_attn", {})]


def _explicit_forward(self: Attention, x, kv, key_mask=None):
    b, tq, e = x.shape
    tk, h = kv.shape[1], self.heads
    q = self.q(x).view(b, tq, h, -1).transpose(1, 2) * (e // h) ** -0.5
    k = self.k(kv).view(b, tk, h, -1).transpose(1, 2)
    v = self.v(kv).view(b, tk, h, -1).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2))
    if key_mask is not None:
        key_mask = getattr(key_mask, "mask", key_mask)  # the models hand their layers KeyMask wrappers
        rows = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None]  # per query: MulT's future mask
        scores = scores.masked_fill(~rows, float("-inf"))
    w = F.dropout(torch.softmax(scores, -1), self.dropout, self.training)
    return self.o(torch.matmul(w, v).transpose(1, 2).reshape(b, tq, e))


@contextlib.contextmanager
def explicit_attention():
    original = Attention.forward
    Attention.forward = _explicit_forward
    try:
        yield
    finally:
        Attention.forward = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--min-run-time", type=float, default=1.0, help="seconds per variant and method, over all rounds")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(args.batch, t, d, generator=g) for t, d in zip(LENGTHS, DIMS)]
    masks = [torch.ones(args.batch, t, dtype=torch.bool) for t in LENGTHS]
    for m in masks:
        m[::2, -5:] = False  # half the samples padded: the masked path is timed
    print(f"batch {args.batch}, dims {DIMS}, lengths {LENGTHS}, threads {args.threads}, torch {torch.__version__}")
    print(f"{'method':<20} {'params':>9} {'GFLOP':>7} {'ours ms':>9} {'iqr':>6} {'plain ms':>9} {'iqr':>6} {'ratio':>6}")
    for name, hp in CONFIGS:
        torch.manual_seed(0)
        model = methods.create(name, DIMS, 2, **hp).eval()
        with torch.inference_mode():
            ours = model(xs, masks=masks)
            with explicit_attention():
                plain = model(xs, masks=masks)
        torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-4)  # same function, else the timing is moot
        times = {"ours": [], "plain": []}
        # Alternate the variants over rounds so a change in the host's speed hits both alike; each variant's figure is
        # its least-disturbed round (interference only ever adds time).
        for r in range(args.rounds):
            for variant in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
                ctx = explicit_attention() if variant == "plain" else contextlib.nullcontext()
                with ctx, torch.inference_mode():
                    timer = benchmark.Timer("model(xs, masks=masks)",
                                            globals={"model": model, "xs": xs, "masks": masks}, num_threads=args.threads)
                    times[variant].append(timer.blocked_autorange(min_run_time=args.min_run_time / args.rounds))
        o, f = (min(times[v], key=lambda m: m.median) for v in ("ours", "plain"))
        gflop = model.expected_flops(args.batch, LENGTHS) / 1e9
        label = name + "".join(f" {k}={v}" for k, v in hp.items())
        print(f"{label:<20} {model.expected_params():>9,} {gflop:>7.3f} {o.median * 1e3:>9.3f} {o.iqr * 1e3:>6.2f} "
              f"{f.median * 1e3:>9.3f} {f.iqr * 1e3:>6.2f} {o.median / f.median:>6.2f}")


if __name__ == "__main__":
    main()
