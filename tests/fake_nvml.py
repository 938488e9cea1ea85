"""A fake ``pynvml`` (installed into sys.modules by the ``fake_nvml`` fixture): GPUs described by plain dicts, so NVML
matching, GPU-state probes and env.json can be tested without a GPU. Readings change when a test edits the dicts."""
from __future__ import annotations

import types
from dataclasses import dataclass


class NVMLError(Exception):
    pass


@dataclass
class _Mem:
    total: int
    used: int
    free: int


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int


@dataclass
class _Violation:
    referenceTime: int
    violationTime: int


def gpu(uuid: str, name: str = "NVIDIA H200", cap=(9, 0), total_mib: int = 143771, **state) -> dict:
    return {"uuid": uuid, "name": name, "cap": cap, "total": total_mib * 2**20, "used": 1024 * 2**20, "procs": [],
            "sm": 1980, "mem": 3201, "temp": 40, "power_mw": 120_000, "reasons": 0x1, "violation": {0: 0, 1: 0},
            "persistence": 1, "app_sm": 1980, "app_mem": 3201, **state}


def make(gpus: list[dict], driver: str = "570.86.15") -> types.ModuleType:
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 1, 2, 0
    nv.gpus, nv.calls = gpus, []

    def by_uuid(u):
        u = u.decode() if isinstance(u, bytes) else u
        for g in gpus + [m for g in gpus for m in g.get("migs", [])]:  # MIG instances by their 'MIG-…' UUID too
            if g["uuid"] == u:  # NVML wants its own spelling exactly: 'GPU-' + lower-case hex
                return g
        raise NVMLError("Not Found")

    def mig(h, i):
        if i >= len(h.get("migs", [])):
            raise NVMLError("Not Found")
        return h["migs"][i]

    def counted(name, fn):
        def wrapped(*a):
            nv.calls.append(name)
            return fn(*a)
        return wrapped

    fns = {
        "nvmlInit": lambda: None, "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: driver,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i],
        "nvmlDeviceGetHandleByUUID": by_uuid,
        "nvmlDeviceGetUUID": lambda h: h["uuid"],
        "nvmlDeviceGetName": lambda h: h["name"],
        "nvmlDeviceGetCudaComputeCapability": lambda h: h["cap"],
        "nvmlDeviceGetMemoryInfo": lambda h: _Mem(h["total"], h["used"], h["total"] - h["used"]),
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [_Proc(p, m * 2**20) for p, m in h["procs"]],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [],
        "nvmlDeviceGetClockInfo": lambda h, c: h["sm"] if c == 1 else h["mem"],
        "nvmlDeviceGetMaxClockInfo": lambda h, c: 1980 if c == 1 else 3201,
        "nvmlDeviceGetApplicationsClock": lambda h, c: h["app_sm"] if c == 1 else h["app_mem"],
        "nvmlDeviceGetTemperature": lambda h, s: h["temp"],
        "nvmlDeviceGetPowerUsage": lambda h: h["power_mw"],
        "nvmlDeviceGetPowerManagementLimit": lambda h: 700_000,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: h["reasons"],
        "nvmlDeviceGetViolationStatus": lambda h, p: _Violation(0, h["violation"][p]),
        "nvmlDeviceGetPersistenceMode": lambda h: h["persistence"],
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7 if h.get("migs") is not None else 0,  # 7 slots on MIG GPUs
        "nvmlDeviceGetMigDeviceHandleByIndex": mig,
    }
    for name, fn in fns.items():
        setattr(nv, name, counted(name, fn))
    return nv
