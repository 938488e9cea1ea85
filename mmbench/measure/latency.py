"""Latency of a callable: warm up, time blocks of calls, repeat until the spread is small or the budget is spent.

Every sample is kept; median, IQR, p5/p95 and the count are derived from them. On CUDA each block is timed with CUDA
events (device time, no host-side sync inside the block); on CPU with time.perf_counter.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    samples_ms: tuple[float, ...]   # per-call time of each sample (block time / calls_per_sample)
    calls_per_sample: int
    target_rel_iqr: float
    timer: str                      # "perf_counter" | "cuda_event"

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    def _q(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def median_ms(self) -> float:
        return self._q(50)

    @property
    def iqr_ms(self) -> float:
        return self._q(75) - self._q(25)

    @property
    def p5_ms(self) -> float:
        return self._q(5)

    @property
    def p95_ms(self) -> float:
        return self._q(95)

    @property
    def rel_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        """The budget ran out before the spread got under the target: flag it, don't hide it."""
        return self.rel_iqr > self.target_rel_iqr

    def summary(self) -> dict[str, float | int | bool]:
        return {"median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "p5_ms": self.p5_ms, "p95_ms": self.p95_ms,
                "n": self.n, "calls_per_sample": self.calls_per_sample, "noisy": self.noisy}


def latency(fn: Callable, inputs: Any = None, *, warmup: int = 5, min_samples: int = 10, max_samples: int = 200,
            max_time_s: float = 1.0, target_rel_iqr: float = 0.05, min_block_ms: float = 1.0,
            device: str = "cpu", flush_l2: bool = False, clock: Callable[[], float] | None = None) -> LatencyStats:
    """Time ``fn()``, or ``fn(inputs)`` under inference mode when inputs are given (e.g. a module and its list of
    input tensors). ``flush_l2`` (CUDA) overwrites a buffer twice the L2 size before each sample, outside the timed
    region, and times one call per sample. ``clock`` (seconds) replaces the timer in tests.
    """
    if inputs is not None:
        import torch

        module = fn

        def fn():
            with torch.inference_mode():
                return module(inputs)

    cuda = device.startswith("cuda") and clock is None
    flush = _l2_flusher(device) if (cuda and flush_l2) else None
    if cuda:
        import torch

        def block(calls: int) -> float:
            if flush is not None:
                flush()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        now = clock or time.perf_counter

        def block(calls: int) -> float:
            t0 = now()
            for _ in range(calls):
                fn()
            return now() - t0

    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    # Calibrate: grow the block until it lasts min_block_ms, so tiny calls are not lost in timer overhead.
    calls, min_block = 1, min_block_ms / 1e3
    first = block(calls)
    while flush is None and first < min_block and calls < 1_000_000:
        calls *= max(2, min(10, int(min_block / max(first, 1e-9)) + 1)) if first > 0 else 10
        first = block(calls)
    samples = [first / calls]
    budget_end = (clock or time.perf_counter)() + max_time_s
    while len(samples) < max_samples:
        samples.append(block(calls) / calls)
        if len(samples) >= min_samples:
            q25, q50, q75 = np.percentile(samples, [25, 50, 75])
            if (q75 - q25) <= target_rel_iqr * q50 or (clock or time.perf_counter)() >= budget_end:
                break
    return LatencyStats(tuple(s * 1e3 for s in samples), calls, target_rel_iqr,
                        "cuda_event" if cuda else "perf_counter")


def _l2_flusher(device: str) -> Callable[[], None]:
    import torch

    size = max(torch.cuda.get_device_properties(device).L2_cache_size, 1 << 20) * 2
    buf = torch.empty(size, dtype=torch.uint8, device=device)
    return lambda: buf.zero_()


def cuda_graph(fn: Callable[[], object]) -> Callable[[], None]:
    """Capture fn's kernels once; the returned callable replays them with no Python or launch overhead per op.
    Timing the replay against eager shows how much of a small method's latency is launch overhead."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up on a side stream, as graph capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay
