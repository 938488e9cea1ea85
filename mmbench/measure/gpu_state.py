"""What the GPU was doing while a block was timed: clocks, temperature, power, NVML's clock-event (throttle) reasons and
violation counters, and other processes on the same GPU. Read around each measured block, folded into row flags:
a number measured while throttled or beside another process is flagged (``throttled``, ``co_tenants``), never hidden.

The device is found in NVML by its UUID (see nvml.py), so CUDA_VISIBLE_DEVICES reordering cannot point it at the
wrong GPU. Without NVML every reading is empty (None), and the flags are None too: unknown, not "fine".
"""
from __future__ import annotations

import os
from typing import Any

from mmbench.measure import nvml

# NVML clock-event reason bits that mean "slower than the clocks asked for" (idle, application-clock and
# display settings and sync boost are not throttling).
SW_POWER_CAP, HW_SLOWDOWN, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE = 0x4, 0x8, 0x20, 0x40, 0x80
THROTTLE_MASK = SW_POWER_CAP | HW_SLOWDOWN | SW_THERMAL | HW_THERMAL | HW_POWER_BRAKE
_POLICIES = {"power": 0, "thermal": 1}  # NVML_PERF_POLICY_POWER / _THERMAL: cumulative violation time (ns)


class GpuProbe:
    """``start()`` before a measured block, ``stop(started)`` after it: evidence of the block as a dict. Holds one NVML
    session for its life (``close()``), so a reading costs a few driver calls, not an init."""

    def __init__(self, device: str, *, uuid: str | None = None, pid: int | None = None, nv=None):
        self.pid = os.getpid() if pid is None else pid
        self._own = nv is None
        self._ctx = None
        if nv is None:
            self._ctx = nvml.session()
            nv = self._ctx.__enter__()
        self.nv = nv
        uuid = uuid or (nvml.torch_uuid(device) if nv is not None else None)
        self.handle = nvml.handle_by_uuid(nv, uuid) if (nv is not None and uuid) else None

    @property
    def available(self) -> bool:
        return self.handle is not None

    def _read(self, fn: str, *args):
        try:
            return getattr(self.nv, fn)(self.handle, *args)
        except Exception:  # a reading this GPU or driver lacks: empty, not zero
            return None

    def _reasons(self) -> int | None:
        r = self._read("nvmlDeviceGetCurrentClocksEventReasons")  # the newer name of the same bitmask
        return self._read("nvmlDeviceGetCurrentClocksThrottleReasons") if r is None else r

    def _violations(self) -> dict[str, int | None]:
        out = {}
        for name, policy in _POLICIES.items():
            v = self._read("nvmlDeviceGetViolationStatus", policy)
            out[name] = None if v is None else int(v.violationTime)
        return out

    def _others(self) -> int | None:
        """Other processes with a context on this GPU. This process holds one (the probe runs in a worker whose
        model is on the GPU), so an empty list means NVML cannot see this PID namespace: unknown, not 0; and when
        NVML lists PIDs of another namespace (a container seeing host PIDs) one of them is this process."""
        if self.handle is None:
            return None
        pids = {pid for pid, _ in nvml.processes(self.nv, self.handle)}
        if not pids:
            return None
        return len(pids - {self.pid}) if self.pid in pids else len(pids) - 1

    def reading(self) -> dict[str, Any]:
        if self.handle is None:
            return {}
        nv = self.nv
        power = self._read("nvmlDeviceGetPowerUsage")
        return {"sm_clock_mhz": self._read("nvmlDeviceGetClockInfo", getattr(nv, "NVML_CLOCK_SM", 1)),
                "mem_clock_mhz": self._read("nvmlDeviceGetClockInfo", getattr(nv, "NVML_CLOCK_MEM", 2)),
                "temp_c": self._read("nvmlDeviceGetTemperature", getattr(nv, "NVML_TEMPERATURE_GPU", 0)),
                "power_w": None if power is None else power / 1e3,
                "reasons": self._reasons(), "violation_ns": self._violations(), "co_tenants": self._others()}

    def start(self) -> dict[str, Any]:
        return self.reading()

    def stop(self, started: dict[str, Any]) -> dict[str, Any]:
        """Evidence of the block: each reading before (``*_start``) and after, the reasons seen at either end, how
        long the driver held clocks down for power or heat in between, and the two flags."""
        end = self.reading()
        if not started or not end:
            return {"throttled": None, "co_tenants": None}
        ev: dict[str, Any] = {}
        for k in ("sm_clock_mhz", "mem_clock_mhz", "temp_c", "power_w"):
            ev[f"{k}_start"], ev[k] = started.get(k), end.get(k)
        reasons = [r for r in (started.get("reasons"), end.get("reasons")) if r is not None]
        ev["reasons_start"], ev["reasons"] = started.get("reasons"), end.get("reasons")
        held = {}
        for name in _POLICIES:
            a, b = started["violation_ns"].get(name), end["violation_ns"].get(name)
            held[name] = None if a is None or b is None else max(0, b - a)
        ev["violation_ns"] = held
        known = reasons or any(v is not None for v in held.values())
        ev["throttled"] = (any(r & THROTTLE_MASK for r in reasons) or any(v for v in held.values() if v)) \
            if known else None
        tenants = [t for t in (started.get("co_tenants"), end.get("co_tenants")) if t is not None]
        ev["co_tenants"] = max(tenants) if tenants else None
        return ev

    def close(self) -> None:
        if self._own and self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


def fold(evidence: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    """Row columns from the stop() dicts of every measured block, keyed by (metric name, batch size):
    ``{name}_throttled_b{B}`` (any block throttled), ``{name}_co_tenants_b{B}`` (most other processes seen), and the
    row-level ``throttled`` / ``co_tenants`` over all of them, with the lowest SM clock and highest temperature seen.
    A flag nobody could read stays None."""
    row: dict[str, Any] = {}
    for (name, b), stops in evidence.items():
        t = [s["throttled"] for s in stops if s.get("throttled") is not None]
        c = [s["co_tenants"] for s in stops if s.get("co_tenants") is not None]
        row[f"{name}_throttled_b{b}"] = any(t) if t else None
        row[f"{name}_co_tenants_b{b}"] = max(c) if c else None
    row.update(summary([s for stops in evidence.values() for s in stops]))
    return row


def summary(stops: list[dict[str, Any]]) -> dict[str, Any]:
    """Row-level ``throttled``, ``co_tenants``, lowest SM clock and highest temperature over these blocks."""
    flags = [s["throttled"] for s in stops if s.get("throttled") is not None]
    tenants = [s["co_tenants"] for s in stops if s.get("co_tenants") is not None]
    clocks = [v for s in stops for v in (s.get("sm_clock_mhz_start"), s.get("sm_clock_mhz")) if v is not None]
    temps = [v for s in stops for v in (s.get("temp_c_start"), s.get("temp_c")) if v is not None]
    return {"throttled": any(flags) if flags else None, "co_tenants": max(tenants) if tenants else None,
            "gpu_sm_clock_min_mhz": min(clocks) if clocks else None, "gpu_temp_max_c": max(temps) if temps else None}
