"""Latency of a callable: warm up, time blocks of calls, repeat until the median is pinned down or the budget is spent.

Every sample is kept; median, IQR, p5/p95 and the count are derived from them. Sampling stops once the median is
pinned down (the 95% confidence interval of the median, ±1.57·IQR/√n as a box plot's notch, within ``target_rel_ci``
of it) after ``min_time_s``; a figure whose budget ran out first is flagged ``noisy``. (Not the spread of the samples
itself: that is a property of the machine, which more samples never shrink; on this project's VMs a 30 µs call's
samples spread 10-40% while its median is known to 2%.) On CUDA each block is timed with CUDA
events (device time, no host-side sync inside the block); on CPU with time.perf_counter. Each round of samples is
wrapped in a CpuProbe (measure/contention.py): the run-queue wait and CPU time of the round say whether the numbers
were taken while the process was descheduled (`contended`), and each round's median is kept, since rounds, not the
samples of one process, are the unit a comparison can treat as independent.
"""
from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mmbench.measure.contention import CpuProbe, RegionEvidence


@dataclass(frozen=True)
class LatencyStats:
    samples_ms: tuple[float, ...]   # per-call time of each sample (block time / calls_per_sample)
    calls_per_sample: int
    target_rel_ci: float
    timer: str                      # "perf_counter" | "cuda_event"
    rounds_ms: tuple[float, ...] = ()        # the median of each round's samples (the rounds the figure is from)
    evidence: RegionEvidence | None = None   # the OS's view of every round, pooled
    probes: tuple[dict, ...] = ()            # other probes' reports (GPU state), one per round
    slow_rounds_ms: tuple[float, ...] = ()   # medians of the rounds left out: the host ran slow beside them
    host_slow: bool = False                  # too few rounds were left once those were out: flag, don't trust
    rounds_host_ms: tuple[tuple[float, float], ...] = ()  # the host reference's readings before and after each kept
    #                                                        round (rounds_ms's order): each round's own host speed

    @property
    def contended(self) -> bool:
        """The measured rounds waited in the run queue (or the timing thread was starved): flag, don't trust."""
        return self.evidence is not None and self.evidence.contended

    @property
    def cpu_util(self) -> float | None:
        return None if self.evidence is None else self.evidence.cpu_util

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
    def rel_ci(self) -> float:
        """Half-width of the median's ~95% confidence interval, relative to it (McGill's notch: 1.57·IQR/√n)."""
        return _rel_ci(self._q(25), self._q(50), self._q(75), self.n)

    @property
    def noisy(self) -> bool:
        """The budget ran out before the median was known to within the target: flag it, don't hide it."""
        return self.rel_ci > self.target_rel_ci


class _Sampler:
    """One timed function: warmed up and calibrated once, then sampled in one or several rounds."""

    def __init__(self, fn: Callable, *, device: str, flush_l2: bool, clock, context: Callable | None = None,
                 threads: int = 1, probes: tuple = ()):
        self.fn, self.context, self.samples, self.calls = fn, context, [], 0
        self.cuda = device.startswith("cuda") and clock is None
        self.flush = _l2_flusher(device) if (self.cuda and flush_l2) else None
        self.now = clock or time.perf_counter
        self.cpu, self.probes = CpuProbe(threads), tuple(probes)
        self.rounds: list[tuple[float, ...]] = []      # each round's samples
        self.brackets: list[tuple[float, float]] = []  # the host reference's readings before and after each round
        self.slow: list[bool] = []                     # each round: the host ran slow beside it (left out)
        self.evidence: list[RegionEvidence] = []
        self.reports: list[dict] = []

    def block(self, calls: int) -> float:
        fn = self.fn
        with self.context() if self.context else contextlib.nullcontext():
            if self.cuda:
                import torch

                if self.flush is not None:
                    return _flushed_block(fn, calls, self.flush)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(calls):
                    fn()
                end.record()
                end.synchronize()
                return start.elapsed_time(end) / 1e3
            t0 = self.now()
            for _ in range(calls):
                fn()
            return self.now() - t0

    def prepare(self, warmup: int, min_block_ms: float, warmup_s: float = 0.0) -> None:
        """Warm up (at least ``warmup`` calls and ``warmup_s`` seconds: clocks and caches ramp up over time, not over
        a call count), then calibrate the calls per sample."""
        with self.context() if self.context else contextlib.nullcontext():
            start, n = self.now(), 0
            while n < warmup or (warmup_s > 0 and self.now() - start < warmup_s):
                self.fn()
                n += 1
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        # Calibrate: grow the block until it lasts min_block_ms, so tiny calls are not lost in timer overhead.
        calls, min_block = 1, min_block_ms / 1e3
        first = self.block(calls)
        while self.flush is None and first < min_block and calls < 1_000_000:
            calls *= max(2, min(10, int(min_block / max(first, 1e-9)) + 1)) if first > 0 else 10
            first = self.block(calls)
        self.calls = calls
        self.samples.append(first / calls)

    def sample(self, *, min_samples: int, max_samples: int, target_rel_ci: float, min_time_s: float,
               max_time_s: float) -> None:
        """One round: add samples (at least one) until the kept pool holds min_samples and its median is pinned down
        (after min_time_s), or max_time_s / max_samples is spent. The round is probed (contention, GPU state) and its
        samples kept apart."""
        first = len(self.samples)
        tokens = [p.start() for p in self.probes]
        cpu = self.cpu.start()
        self._sample(min_samples=min_samples, max_samples=max_samples, target_rel_ci=target_rel_ci,
                     min_time_s=min_time_s, max_time_s=max_time_s)
        self.evidence.append(self.cpu.stop(cpu))
        self.reports.extend(p.stop(t) for p, t in zip(self.probes, tokens))
        if len(self.samples) > first:
            self.rounds.append(tuple(self.samples[first:]))
            self.slow.append(False)

    def judge(self, host, before: float, after: float) -> None:
        """Bracket the round just sampled with the host reference's readings; leave it out of the pool (the stopping
        rule's and the figure's) when the host ran slow on either side of it."""
        if len(self.brackets) == len(self.rounds):  # the round added no samples
            return
        self.brackets.append((before, after))
        self.rejudge(host)

    def rejudge(self, host) -> None:
        """Judge every round again against the host's usual speed so far (it moves as readings come in)."""
        self.slow = [host.slow(*b) for b in self.brackets]
        # the calibration sample, taken before any reading, goes: nothing says what the host was doing then
        self.samples = [x for r, slow in zip(self.rounds, self.slow) if not slow for x in r]

    @property
    def kept(self) -> int:
        return self.slow.count(False)

    def _sample(self, *, min_samples: int, max_samples: int, target_rel_ci: float, min_time_s: float,
                max_time_s: float) -> None:
        start = self.now()
        while len(self.samples) < max_samples:
            self.samples.append(self.block(self.calls) / self.calls)
            if len(self.samples) >= min_samples:
                elapsed = self.now() - start
                if elapsed >= max_time_s:
                    break
                q25, q50, q75 = np.percentile(self.samples, [25, 50, 75])
                if _rel_ci(q25, q50, q75, len(self.samples)) <= target_rel_ci and elapsed >= min_time_s:
                    break

    def stats(self, target_rel_ci: float) -> LatencyStats:
        kept = [r for r, slow in zip(self.rounds, self.slow) if not slow]
        left_out = [r for r, slow in zip(self.rounds, self.slow) if slow]
        kept_brackets = [b for b, slow in zip(self.brackets, self.slow) if not slow]
        if not kept:  # the host ran slow beside every round: the figure is all of them, flagged
            kept, left_out, kept_brackets = self.rounds, [], self.brackets
        samples = ([] if self.brackets else self.samples[:1]) + [x for r in kept for x in r]
        return LatencyStats(tuple(s * 1e3 for s in samples), self.calls, target_rel_ci,
                            "cuda_event" if self.cuda else "perf_counter",
                            rounds_ms=tuple(float(np.median(r)) * 1e3 for r in kept),
                            evidence=RegionEvidence.pooled(self.evidence) if self.evidence else None,
                            probes=tuple(self.reports),
                            slow_rounds_ms=tuple(float(np.median(r)) * 1e3 for r in left_out),
                            host_slow=bool(self.rounds) and self.kept < _enough(len(self.rounds)),
                            rounds_host_ms=tuple((b * 1e3, a * 1e3) for b, a in kept_brackets))


class _Together:
    """Several functions sampled as one: each sample times a block of each member in turn (each block calibrated to
    min_block_ms on its own), so every member's samples are taken at the same instants of the host's speed. Their
    medians can then be set against each other (the stage split: whole − encoders − fusion) without the host's wander
    between separately timed functions moving the difference: on this project's 2-core VM a 0.05 ms forward's
    stages timed one after another summed to 60–140% of the whole; interleaved per sample, within a few percent.
    The round, its probes and its host-reference brackets are the group's: one round, judged once for all."""

    def __init__(self, members: dict[Any, _Sampler]):
        self.members = members
        first = next(iter(members.values()))
        self.cpu, self.probes, self.now = first.cpu, first.probes, first.now

    def prepare(self, warmup: int, min_block_ms: float, warmup_s: float = 0.0) -> None:
        for m in self.members.values():
            m.prepare(warmup, min_block_ms, warmup_s)

    @property
    def samples(self) -> list[float]:  # the group's sample count is each member's
        return next(iter(self.members.values())).samples

    def sample(self, *, min_samples: int, max_samples: int, target_rel_ci: float, min_time_s: float,
               max_time_s: float) -> None:
        members = list(self.members.values())
        first = len(members[0].samples)
        tokens = [p.start() for p in self.probes]
        cpu = self.cpu.start()
        start = self.now()
        while len(members[0].samples) < max_samples:
            for m in members:
                m.samples.append(m.block(m.calls) / m.calls)
            if len(members[0].samples) >= min_samples:
                elapsed = self.now() - start
                if elapsed >= max_time_s:
                    break
                pinned = all(_rel_ci(*np.percentile(m.samples, [25, 50, 75]), len(m.samples)) <= target_rel_ci
                             for m in members)
                if pinned and elapsed >= min_time_s:
                    break
        evidence = self.cpu.stop(cpu)
        reports = [p.stop(t) for p, t in zip(self.probes, tokens)]
        if len(members[0].samples) > first:
            for m in members:
                m.evidence.append(evidence)
                m.reports.extend(reports)
                m.rounds.append(tuple(m.samples[first:]))
                m.slow.append(False)

    def judge(self, host, before: float, after: float) -> None:
        for m in self.members.values():
            m.judge(host, before, after)

    def rejudge(self, host) -> None:
        for m in self.members.values():
            m.rejudge(host)

    @property
    def kept(self) -> int:
        return next(iter(self.members.values())).kept


@contextlib.contextmanager
def _gc_off():
    """As timeit does: a collection pause belongs to the process's heap, not to the measured call."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def latency(fn: Callable, inputs: Any = None, *, warmup: int = 5, min_samples: int = 10, max_samples: int = 200,
            max_time_s: float = 1.0, target_rel_ci: float = 0.05, min_block_ms: float = 1.0, min_time_s: float = 0.0,
            device: str = "cpu", flush_l2: bool = False, clock: Callable[[], float] | None = None,
            warmup_s: float = 0.0, threads: int | None = None, probes: tuple = ()) -> LatencyStats:
    """Time ``fn()``, or ``fn(inputs)`` under inference mode when inputs are given (e.g. a module and its list of
    input tensors). ``flush_l2`` (CUDA) overwrites a buffer twice the L2 size before each sample, outside the timed
    region, and times one call per sample. ``min_time_s``: keep sampling at least this long even once the spread is
    small. ``clock`` (seconds) replaces the timer in tests.
    """
    if inputs is not None:
        import torch

        module = fn

        def fn():
            with torch.inference_mode():
                return module(inputs)

    sampler = _Sampler(fn, device=device, flush_l2=flush_l2, clock=clock, threads=_threads(threads), probes=probes)
    with _gc_off():
        sampler.prepare(warmup, min_block_ms, warmup_s)
        sampler.sample(min_samples=min_samples, max_samples=max_samples, target_rel_ci=target_rel_ci,
                       min_time_s=min(min_time_s, max_time_s), max_time_s=max_time_s)
    return sampler.stats(target_rel_ci)


def latency_rounds(fns: dict[Any, tuple[Callable, Callable | None]], *, rounds: int = 3, warmup: int = 5,
                   min_samples: int = 10, max_samples: int = 200, max_time_s: float = 1.0, min_time_s: float = 0.0,
                   target_rel_ci: float = 0.05, min_block_ms: float = 1.0, device: str = "cpu",
                   flush_l2: bool = False, clock: Callable[[], float] | None = None, warmup_s: float = 0.0,
                   threads: int | None = None, probes: tuple = (), host=None,
                   together: tuple[tuple[Any, ...], ...] = ()) -> dict[Any, LatencyStats]:
    """Time several functions in interleaved rounds: round 1 samples each in turn, then round 2 each again, …, each
    round with 1/rounds of the budgets. ``fns``: key → (fn, context or None), the context entered around each block of
    calls (e.g. inference mode, a precision region, train mode).

    Why rounds: shared hosts have bursts of interference (this project's VMs: ~0.2-0.5 s at half speed, every few
    seconds). A measurement made in one stretch can fall entirely inside one, tight spread and all; spread over rounds
    that lie the other functions' measurements apart, a burst holds a minority of a function's samples and the
    median barely moves (asv runs its benchmarks in rounds for the same reason).

    ``host`` (a contention.HostReference, CPU): read between every two rounds. A round with a slow reading on either
    side ran while the host was slow (a VM's vCPU slowed by a co-tenant: no run-queue wait, full utilisation, and
    nothing else in the guest sees it) and is left out of the figure; a function left with under half its rounds gets
    up to ``rounds`` more, and is flagged ``host_slow`` if under a third remain.

    ``together``: groups of keys sampled as one (_Together: a block of each in turn per sample), for figures that are
    set against each other. A group's minimum time is its members' own: min_time_s is the stretch of the host's time
    a figure's samples must span (against bursts), and each member's samples span the whole group's stretch; the count
    of samples is min_samples' and the stopping rule's to guard. Its maximum time is its members' summed, so a group
    whose figures stay noisy spends what its members would apart."""
    rounds = max(1, rounds)
    n_threads = _threads(threads)
    samplers = {k: _Sampler(fn, device=device, flush_l2=flush_l2, clock=clock, context=ctx, threads=n_threads,
                            probes=probes) for k, (fn, ctx) in fns.items()}
    budget = dict(max_time_s=max_time_s / rounds, min_time_s=min(min_time_s, max_time_s) / rounds,
                  target_rel_ci=target_rel_ci)
    per_round, max_round = -(-min_samples // rounds), -(-max_samples // rounds)
    units: dict[Any, _Sampler | _Together] = dict(samplers)  # what a round samples: a function, or a group as one
    for group in together:
        if len(group) > 1 and all(k in units for k in group):
            units[group] = _Together({k: units.pop(k) for k in group})
    with _gc_off():
        for s in units.values():
            s.prepare(warmup, min_block_ms, warmup_s)
        before = host.read() if host is not None else None

        def one_round(s: _Sampler | _Together) -> None:
            nonlocal before
            scale = len(s.members) if isinstance(s, _Together) else 1
            s.sample(min_samples=len(s.samples) + per_round, max_samples=len(s.samples) + max_round,
                     **{**budget, "max_time_s": budget["max_time_s"] * scale})
            if host is not None:
                after = host.read()
                s.judge(host, before, after)
                before = after

        for _ in range(rounds):
            for s in units.values():
                one_round(s)
        if host is not None:
            for _ in range(rounds):  # make up rounds the host's slow stretches took, while they can still escape it
                for s in units.values():
                    s.rejudge(host)
                short = [s for s in units.values() if s.kept < -(-rounds // 2)]
                if not short:
                    break
                for s in short:
                    one_round(s)
            for s in units.values():
                s.rejudge(host)
    return {k: s.stats(target_rel_ci) for k, s in samplers.items()}


def _enough(rounds: int) -> int:
    """Rounds a figure needs to stand on once the host's slow ones are out: a third of them, at least one."""
    return max(1, -(-rounds // 3))


def _threads(threads: int | None) -> int:
    """The threads a timed call may use (what the utilisation is a share of): torch's intra-op pool by default."""
    if threads is not None:
        return threads
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return 1


_FLUSH_BUFFERS: dict = {}  # device index -> the one flush buffer of this process for that device


def _rel_ci(q25: float, q50: float, q75: float, n: int) -> float:
    return 1.57 * (q75 - q25) / math.sqrt(max(n, 1)) / q50 if q50 > 0 else float("inf")


def _l2_flusher(device: str) -> Callable[[], None]:
    """Overwrite a buffer twice the L2 size: the next call starts with a cold cache. One buffer per process and
    device, allocated on first use and kept (not one per sampler: each would hold 2×L2 of device memory)."""
    import torch

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    buf = _FLUSH_BUFFERS.get(index)
    if buf is None:
        size = max(torch.cuda.get_device_properties(index).L2_cache_size, 1 << 20) * 2
        buf = _FLUSH_BUFFERS[index] = torch.empty(size, dtype=torch.uint8, device=f"cuda:{index}")
    return buf.zero_


def _flushed_block(fn: Callable, calls: int, flush: Callable[[], object]) -> float:
    """Seconds of ``calls`` calls, each with a cold L2: flush, wait for the flush to finish, then one event pair
    around the call. The wait matters: a flush still running when the start event is queued would hide the call's
    launch behind it, so a launch-bound call would look faster flushed than unflushed. What remains different from an
    unflushed block is real: a cold cache, and no overlap of one call's launch with the previous call's kernels (a
    flushed sample is a single call from an idle GPU, an unflushed one the steady state of back-to-back calls)."""
    import torch

    total = 0.0
    for _ in range(calls):
        flush()
        torch.cuda.current_stream().synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        total += start.elapsed_time(end) / 1e3
    return total


def cuda_graph(fn: Callable[[], object], *, warmup: int = 3, outputs: list | None = None) -> Callable[[], None]:
    """Capture fn's kernels once; the returned callable replays them with no Python or launch overhead per op.
    Timing the replay against eager shows how much of a small method's latency is launch overhead.

    Call it inside the precision region the eager calls run in, with autocast's cache off (``precision.region(...,
    cache=False)``): the casts of the weights are then captured, as eager runs them every call, and the graph cannot
    read the cached copies autocast frees when its region exits. fn's inputs are its own static tensors, and it is
    warmed up on a side stream first, as capture requires. ``outputs``: gets what the captured call returned (the
    tensor every replay overwrites), to check replay against eager."""
    import torch

    stream = _capture_stream()
    caller = torch.cuda.current_stream()
    stream.wait_stream(caller)
    with torch.cuda.stream(stream):  # warm up on a side stream, as graph capture requires
        for _ in range(warmup):
            fn()
    caller.wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, stream=stream):
            out = fn()
    finally:
        # A capture that throws (a host sync in fn) raises again in capture_end, inside torch.cuda.graph's __exit__,
        # which then never restores the stream: every later call would queue on the capture stream.
        torch.cuda.set_stream(caller)
    if outputs is not None:
        outputs.append(out)
    return graph.replay


_CAPTURE_STREAMS: dict = {}  # device index -> the one side stream this process warms up and captures on


def _capture_stream():
    """One side stream per device for every warm-up and capture of the process: each new stream gets its own cuBLAS
    workspace, kept for the process's life (up to ~1 GiB over a trial's captures, in peak_reserved and NVML's used)."""
    import torch

    index = torch.cuda.current_device()
    if index not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[index] = torch.cuda.Stream(index)
    return _CAPTURE_STREAMS[index]
