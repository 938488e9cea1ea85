"""Peak memory of one call: the torch allocator on CUDA, the resident-set high-water mark on CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import psutil

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _vm_hwm_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Linux lets a process reset its peak RSS (writing 5 to clear_refs): then VmHWM is this region's peak."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> dict[str, float | str]:
    """{"peak_mem_mib": peak above the level before the call, "mem_measure": how it was measured}."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"peak_mem_mib": (torch.cuda.max_memory_allocated() - base) / 2**20, "mem_measure": "cuda_allocated"}
    proc = psutil.Process()
    base = proc.memory_info().rss
    if _reset_hwm():
        fn()
        peak = _vm_hwm_bytes()
        if peak is not None:
            return {"peak_mem_mib": max(0, peak - base) / 2**20, "mem_measure": "cpu_rss_hwm_delta"}
    fn()  # no resettable high-water mark: the RSS after the call is a lower bound of its peak
    return {"peak_mem_mib": max(0, proc.memory_info().rss - base) / 2**20, "mem_measure": "cpu_rss_delta_after"}
