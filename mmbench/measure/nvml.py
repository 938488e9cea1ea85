"""NVML (the driver's management library, via nvidia-ml-py's ``pynvml``): GPU facts without a CUDA context.

The parent process must never initialise CUDA (a context holds GPU memory for the whole run, shows in NVML figures
and blocks workers on GPUs in exclusive-process mode), so everything it needs to know about the GPUs comes from here.
NVML numbers devices in PCI order and ignores CUDA_VISIBLE_DEVICES, while CUDA numbers them in its own order after
that variable has hidden or reordered them: the only safe link between the two is the device UUID.
Every function returns None / [] when NVML is missing or fails: a column left empty, never a wrong GPU's figure.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator


@contextlib.contextmanager
def session() -> Iterator[Any]:
    """pynvml, initialised; None when it cannot be (not installed, no driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # not installed, no driver, a MIG quirk: no NVML figures
        yield None
        return
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def norm_uuid(uuid) -> str:
    """'GPU-8f6c…' (NVML) and torch's '8f6c…' (device properties: a UUID object or its string) as one form. torch
    spells a MIG instance's UUID the same bare way, so the 'gpu-' given it here may be 'mig-' in NVML: handle_by_uuid
    tries both, and device_row records NVML's own spelling."""
    s = _text(uuid).strip().lower()
    return s if s.startswith(("gpu-", "mig-")) else f"gpu-{s}"


def _bare(uuid: str) -> str:
    return uuid[4:] if uuid.startswith(("gpu-", "mig-")) else uuid


def _device(nv, h) -> dict[str, Any]:
    major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
    return {"uuid": _text(nv.nvmlDeviceGetUUID(h)), "name": _text(nv.nvmlDeviceGetName(h)),
            "capability": (int(major), int(minor)),
            "mem_total_mib": nv.nvmlDeviceGetMemoryInfo(h).total / 2**20}


def visible_gpus() -> list[dict[str, Any]] | None:
    """The GPUs this process's CUDA would see, in CUDA_VISIBLE_DEVICES's order, each with ``visible`` (the string that
    names it in CUDA_VISIBLE_DEVICES: a worker pinned to it sets exactly that), uuid, name, capability and memory.
    None when NVML is unusable. MIG instances and entries NVML does not know are kept by name, without facts."""
    with session() as nv:
        if nv is None:
            return None
        try:
            devices = [_device(nv, nv.nvmlDeviceGetHandleByIndex(i)) for i in range(nv.nvmlDeviceGetCount())]
        except Exception:
            return None
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:  # CUDA's own order may differ from NVML's: pin by UUID, never by index
        return [{**d, "visible": d["uuid"]} for d in devices]
    out = []
    for entry in (e.strip() for e in env.split(",")):
        if not entry:
            break
        if entry.isdigit():  # CUDA reads indices in CUDA_DEVICE_ORDER; PCI_BUS_ID order is NVML's order
            if int(entry) >= len(devices):
                break  # CUDA stops at the first invalid entry
            match = devices[int(entry)] if os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" else None
        else:
            match = next((d for d in devices if norm_uuid(d["uuid"]).startswith(norm_uuid(entry))), None)
        out.append({**(match or {}), "visible": entry})
    return out


def handle_by_uuid(nv, uuid):
    """The NVML handle of the device with this UUID (torch's or NVML's spelling), or None."""
    want = norm_uuid(uuid)
    for prefix in dict.fromkeys((want[:3].upper(), "GPU", "MIG")):  # NVML's spelling: 'GPU-'/'MIG-' + lower-case hex
        try:
            return nv.nvmlDeviceGetHandleByUUID(f"{prefix}-{_bare(want)}")
        except Exception:
            pass
    for h in _all_handles(nv):  # older bindings or spellings: compare every device's (and MIG instance's) UUID
        try:
            if _bare(norm_uuid(nv.nvmlDeviceGetUUID(h))) == _bare(want):
                return h
        except Exception:
            continue
    return None


def _all_handles(nv) -> Iterator[Any]:
    """Every GPU's handle, each followed by its MIG instances' handles (when MIG is on)."""
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        yield h
        try:
            count = nv.nvmlDeviceGetMaxMigDeviceCount(h)
        except Exception:  # no MIG support, or an older binding
            continue
        for j in range(count):
            try:
                yield nv.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
            except Exception:  # an empty slot
                continue


def processes(nv, h) -> list[tuple[int, float | None]]:
    """(pid, used MiB or None) of every process holding a context on the device (compute and graphics)."""
    out: dict[int, float | None] = {}
    for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            for p in getattr(nv, fn)(h):
                used = getattr(p, "usedGpuMemory", None)
                out[int(p.pid)] = None if used is None or used < 0 or used >= 2**63 else used / 2**20
        except Exception:
            continue
    return list(out.items())


def torch_uuid(device: str) -> str | None:
    """The UUID of a torch CUDA device (in a worker: CUDA is initialised there anyway)."""
    import torch

    try:
        index = torch.device(device).index
        return norm_uuid(torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).uuid)
    except Exception:
        return None


def device_row(device: str) -> dict[str, Any]:
    """Which GPU measured a row: gpu_name, gpu_uuid, gpu_driver, gpu_mem_total_mib, matched to NVML by UUID;
    nvml_used_mib (the whole device: every process and CUDA context) and nvml_process_mib (this process alone)."""
    uuid = torch_uuid(device)
    row: dict[str, Any] = {"gpu_uuid": uuid}
    if uuid is None:
        return row
    with session() as nv:
        if nv is None:
            return row
        try:
            h = handle_by_uuid(nv, uuid)
            if h is None:
                return row
            row["gpu_uuid"] = norm_uuid(nv.nvmlDeviceGetUUID(h))  # NVML's spelling: 'mig-…' for a MIG instance
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            row.update(gpu_name=_text(nv.nvmlDeviceGetName(h)), gpu_driver=_text(nv.nvmlSystemGetDriverVersion()),
                       gpu_mem_total_mib=mem.total / 2**20, nvml_used_mib=mem.used / 2**20,
                       nvml_process_mib=dict(processes(nv, h)).get(os.getpid()))
        except Exception:  # a half-read device: what was read stays, the rest is empty
            pass
    return row
