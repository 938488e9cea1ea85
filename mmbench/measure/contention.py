"""Was a measured region descheduled? Evidence read from the OS around each timing round, and the thread count the
machine can give a trial.

A CPU timing loop never waits voluntarily (no I/O, no sleep), so time its threads spent runnable but not running is
contention: the kernel's per-thread run-queue delay (/proc/self/task/*/schedstat, Linux) measures it directly. Where
that file is missing, the timing thread's own CPU time over the wall time stands in (descheduled → below 1).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

# A region whose threads waited this share of their time in the run queue was descheduled: its wall-clock figure
# belongs partly to someone else. Quiet machines measure ~0.001; one co-running CPU hog per core ~0.3-0.5.
MAX_WAIT_FRACTION = 0.05
# Fallback without schedstat: the timing thread ran less than this share of the wall time.
MIN_THREAD_UTIL = 0.8

_TASKS = Path("/proc/self/task")


def _run_delay_ns() -> int | None:
    """Run-queue wait of every thread of this process so far (ns), or None where the kernel does not say."""
    total, seen = 0, False
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(_TASKS / tid / "schedstat", "rb") as f:
                total += int(f.read().split()[1])
                seen = True
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total if seen else None


def system_load() -> dict[str, float | int | None]:
    """Load average (1 min) and runnable tasks (this process's included) as the kernel reports them now."""
    try:
        fields = Path("/proc/loadavg").read_text().split()
        return {"load_avg_1m": float(fields[0]), "runnable_procs": int(fields[3].split("/")[0])}
    except (OSError, IndexError, ValueError):
        try:
            return {"load_avg_1m": os.getloadavg()[0], "runnable_procs": None}
        except OSError:
            return {"load_avg_1m": None, "runnable_procs": None}


@dataclass(frozen=True)
class RegionEvidence:
    """What the OS saw during one measured region."""
    wall_s: float
    process_cpu_s: float
    thread_cpu_s: float
    run_delay_s: float | None   # summed over threads; None: not available
    threads: int

    @staticmethod
    def pooled(regions: "list[RegionEvidence]") -> "RegionEvidence":
        delays = [r.run_delay_s for r in regions]
        return RegionEvidence(sum(r.wall_s for r in regions), sum(r.process_cpu_s for r in regions),
                              sum(r.thread_cpu_s for r in regions),
                              None if any(d is None for d in delays) else sum(delays),
                              max((r.threads for r in regions), default=1))

    @property
    def cpu_util(self) -> float | None:
        """Process CPU time / (wall time × threads): 1.0 when every thread ran the whole time."""
        return self.process_cpu_s / (self.wall_s * self.threads) if self.wall_s > 0 else None

    @property
    def wait_fraction(self) -> float | None:
        """Run-queue wait / (wall time × threads)."""
        if self.run_delay_s is None or self.wall_s <= 0:
            return None
        return self.run_delay_s / (self.wall_s * self.threads)

    @property
    def contended(self) -> bool:
        if self.wall_s <= 0:
            return False
        wait = self.wait_fraction
        if wait is not None:
            return wait > MAX_WAIT_FRACTION
        return self.thread_cpu_s / self.wall_s < MIN_THREAD_UTIL


class CpuProbe:
    """start() before a measured region, stop(token) after it: the region's RegionEvidence. Costs ~0.1 ms (a read
    per thread), so it wraps a round of samples, never a single timed call."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)

    def start(self) -> tuple[float, float, float, int | None]:
        return time.perf_counter(), time.process_time(), time.thread_time(), _run_delay_ns()

    def stop(self, token: tuple[float, float, float, int | None]) -> RegionEvidence:
        delay = _run_delay_ns()
        wall, proc, thread, delay0 = token
        return RegionEvidence(time.perf_counter() - wall, time.process_time() - proc, time.thread_time() - thread,
                              None if delay is None or delay0 is None else (delay - delay0) / 1e9, self.threads)


def free_cores(window_s: float = 0.2) -> tuple[int, str]:
    """Physical cores that other processes are not already using, measured over ``window_s``; at least 1.

    This process and its children are left out of "others" (workers starting up are ours). Returns the count and
    how it was found, for the run's record."""
    import psutil

    physical = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    logical = psutil.cpu_count() or physical
    me = psutil.Process()

    def own_cpu() -> float:
        total = sum(me.cpu_times()[:2])
        for child in me.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    def busy_cpu() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) \
            + getattr(t, "steal", 0.0)

    b0, o0, w0 = busy_cpu(), own_cpu(), time.perf_counter()
    time.sleep(window_s)
    b1, o1, w1 = busy_cpu(), own_cpu(), time.perf_counter()
    others = max(0.0, ((b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-6))  # logical CPUs busy with other processes
    busy_physical = others * physical / logical
    free = max(1, min(physical, int(physical - busy_physical + 0.25)))  # a quarter core of background is not a core
    return free, f"{physical} physical cores, {busy_physical:.2f} busy with other processes"


# --- the host's speed: a fixed workload timed between the trial's own rounds -------------------------------------
# A VM's vCPU can run slower for seconds at a time (a co-tenant on the host, its frequency) with no run-queue wait
# and full CPU utilisation inside the guest: nothing above sees it. A fixed reference workload read between every
# two timing rounds runs at the host's speed of that moment. Within a trial, a round beside a slow reading is left out
# (measure.latency_rounds); across runs, compare reads the trial's reference figure (a timing that moved with it
# moved with the machine, not the code).
REFERENCE = "host_ref"
# A reading this much slower than the trial's usual (the median of its readings) says the host was slow beside it.
# The usual, not the best: on this project's 2-core VM the host's speed wanders (readings of one trial 0.34-0.65 ms
# on 2026-12-02, a p90/p10 of 1.2-1.5 run to run) and a gate on the best quantile left out 71% of the rounds and
# flagged most figures host_slow. Rounds beside a reading over the usual are 13% slower at the median, 35-60% at
# the upper quartiles (benchmarks/compare_floors.py runs): what the gate takes out are the slow stretches; the speed
# the rest were taken at is host_ref_ms, by which compare matches a history's runs.
HOST_GATE = 0.15


class HostReference:
    """The reference workload, read as the median of three ~1 ms blocks (one interrupt cannot move a reading; a slow
    stretch of the host, lasting a few hundred ms, moves all three). ~3 ms a reading."""

    def __init__(self, fn=None, *, block_ms: float = 1.0, gate: float = HOST_GATE, clock=time.perf_counter):
        self.fn, self.gate, self.now = fn or reference_workload(), gate, clock
        self.block_ms, self.calls = block_ms, 0
        self.readings: list[float] = []   # seconds per call

    def _block(self, calls: int) -> float:
        t0 = self.now()
        for _ in range(calls):
            self.fn()
        return self.now() - t0

    def read(self) -> float:
        if not self.calls:  # warm up, then size the block
            self._block(5)
            self.calls = max(1, round(self.block_ms / 1e3 / max(self._block(5) / 5, 1e-9)))
        blocks = sorted(self._block(self.calls) / self.calls for _ in range(3))
        self.readings.append(blocks[1])
        return blocks[1]

    @property
    def usual(self) -> float:
        """The host's usual speed in this trial: the median of its readings (a trial timed wholly in a slow stretch
        keeps its rounds; the speed they were taken at is median_ms)."""
        return statistics.median(self.readings) if self.readings else float("inf")

    def slow(self, *readings: float | None) -> bool:
        usual = self.usual
        return any(r is not None and r > usual * (1 + self.gate) for r in readings)

    @property
    def median_ms(self) -> float | None:
        """The host's speed the trial's figures were taken at: the median of the readings within the gate (only
        rounds beside those stay in a figure, unless it is flagged host_slow). Set against another run's, it says
        whether the two figures were taken at one speed of the host (compare matches a history's runs by it)."""
        kept = sorted(r for r in self.readings if not self.slow(r))
        return statistics.median(kept) * 1e3 if kept else None

    @property
    def readings_ms(self) -> list[float]:
        return [r * 1e3 for r in self.readings]


def reference_workload():
    """A fixed, seeded CPU workload (~220 µs), the same in every run and process: its three parts (reference_parts)
    called in turn. Runs on torch's intra-op threads, as the trial's functions do."""
    parts = list(reference_parts().values())

    def call():
        for part in parts:
            part()

    return call


def reference_parts() -> dict:
    """The reference's parts, name → call: a chain of small matmuls and tanh (the arithmetic of a fusion layer), a
    chain of tiny elementwise ops (the per-op dispatch that dominates a small model's forward) and a training step
    of a two-layer perceptron (autograd's backward and an Adam update: what a small model's training step is bound
    by). A host's slow stretches do not slow these alike: on this project's VMs some slowed a small training step
    4-5× more than the first two parts, inside the 5% match compare makes on this reading; benchmarks/
    host_reference.py measures how each part tracks the trials' timings. The step's learning rate is 0: the weights,
    and so the work, stay the same call after call."""
    import torch

    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(64, 64, generator=g) / 8, torch.randn(16, 64, generator=g)
    tiny = torch.ones(4)
    w1 = (torch.randn(16, 16, generator=g) / 4).requires_grad_()
    w2 = (torch.randn(16, 2, generator=g) / 4).requires_grad_()
    xs, ys = torch.randn(8, 16, generator=g), torch.randint(0, 2, (8,), generator=g)
    opt = torch.optim.Adam([w1, w2], lr=0.0)

    @torch.inference_mode()
    def matmuls():
        y = x
        for _ in range(8):
            y = torch.tanh(y @ w)
        return y

    @torch.inference_mode()
    def dispatch():
        z = tiny
        for _ in range(6):
            z = z * 1.0001 + 0.0001
        return z

    @torch.enable_grad()
    def train_step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(torch.relu(xs @ w1) @ w2, ys).backward()
        opt.step()

    return {"matmuls": matmuls, "dispatch": dispatch, "train_step": train_step}
