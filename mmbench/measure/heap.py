"""The C library's heap held still while mmbench measures.

glibc's malloc adapts as a process runs: a freed block served by mmap raises the mmap threshold to its size, and a
heap whose free top passes the trim threshold is given back to the kernel. Which of a call's tensors come from
fresh pages (a page fault each, zeroed by the kernel) then depends on what ran before in the same process. Measured:
BLOCK 16×16 at batch 256 took 0.33 ms or 1.1-2.0 ms per call from one run of benchmarks/methods_vs_naive.py to the
next, with 44 k against 750-940 k minor faults, and 0.34-0.40 ms in every run once the thresholds were fixed.
"""
from __future__ import annotations

import ctypes
import sys

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3

# Timings: every block up to 32 MiB (the most glibc's own adaptation reaches) reused from the heap, as in a process
# that has run long enough; a freed heap kept (up to 1 GiB) rather than trimmed and faulted in again.
TIMING = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
# Instruction counts (valgrind runs a fresh process: set by environment variables, read as it starts). Chosen and
# measured for counts (block-to-block spread 0.16% → 0.03%); the gate's baselines were counted with them.
COUNT_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1073741824",
             "MALLOC_TOP_PAD_": "67108864"}

_held: dict[str, int] | None = None


def hold_for_timing() -> dict[str, int] | None:
    """Fix the thresholds in this process (once; a forked child inherits them). Returns what is in effect, None
    where the C library is not glibc (the heap then adapts as it will)."""
    global _held
    if _held is None and sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            return None
        if all(mallopt(param, value) == 1 for param, value in TIMING.items()):
            _held = {"mmap_threshold": TIMING[M_MMAP_THRESHOLD], "trim_threshold": TIMING[M_TRIM_THRESHOLD],
                     "top_pad": TIMING[M_TOP_PAD]}
    return _held


def held() -> dict[str, int] | None:
    """The thresholds this process holds (for env.json), None if it holds none."""
    return _held
