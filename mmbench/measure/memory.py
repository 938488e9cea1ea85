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
    """Peak memory of one call of fn.

    peak_mem_mib: the peak above the level before the call (the call's own activations and workspace), measured by
    the torch allocator on CUDA ("cuda_allocated") or by the resident-set high-water mark on CPU
    ("cpu_rss_hwm_delta"). On CUDA also peak_alloc_mib (absolute, as torch.cuda.max_memory_allocated reports it:
    weights and inputs included) and peak_reserved_mib (the caching allocator's reserved pool at its peak).
    """
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_mem_mib": (peak - base) / 2**20, "peak_alloc_mib": peak / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20, "mem_measure": "cuda_allocated"}
    proc = psutil.Process()
    base = proc.memory_info().rss
    if _reset_hwm():
        fn()
        peak = _vm_hwm_bytes()
        if peak is not None:
            return {"peak_mem_mib": max(0, peak - base) / 2**20, "mem_measure": "cpu_rss_hwm_delta"}
    fn()  # no resettable high-water mark: the RSS after the call is a lower bound of its peak
    return {"peak_mem_mib": max(0, proc.memory_info().rss - base) / 2**20, "mem_measure": "cpu_rss_delta_after"}


def nvml_used_mib(device: str) -> float | None:
    """Device memory in use as NVML sees it: every process and the CUDA context included (unlike the allocator)."""
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        try:
            index = torch.cuda.current_device() if device == "cuda" else int(device.split(":")[1])
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML (driver-less box, MIG quirks): the column stays empty rather than wrong
        return None
