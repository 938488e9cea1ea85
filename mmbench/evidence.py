"""What a result row says about how its timings were taken: the flags that make a number evidence or not.

One home for it: compare (a flagged metric is `noise`, never `regressed`), the history baseline (flagged runs are
left out of its spread) and the report (how many rows are flagged, and why) all read the flags through here.
Plain dicts only: no torch.
"""
from __future__ import annotations

import re
from typing import Any

# A timed metric `{name}_ms_b{B}` (name: latency, fusion_latency, train_step, graph_latency, fusion_graph_latency)
# carries `{name}_{flag}_b{B}` beside it.
TIMED = re.compile(r"((?:fusion_)?(?:graph_)?latency|train_step)_ms_b(\d+)")
FLAGS = {
    "contended": "the measured region was descheduled (its CPU time fell short of wall time × threads)",
    "noisy": "the spread stayed above the target when the time budget ran out",
    "throttled": "the GPU was throttled (clocks, power or temperature) while timed",
    "co_tenants": "other processes used the GPU while timed",
}


def timed(metric: str) -> tuple[str, str] | None:
    """(name, batch) of a timed metric `{name}_ms_b{B}`, else None."""
    m = TIMED.fullmatch(metric)
    return (m.group(1), m.group(2)) if m else None


def rounds_key(metric: str) -> str | None:
    """The raw key holding a timed metric's per-round medians (samples.jsonl)."""
    t = timed(metric)
    return f"{t[0]}_rounds_ms_b{t[1]}" if t else None


def flags(row: dict[str, Any], metric: str) -> list[str]:
    """The flags set on a timed metric of a row (a row-level `contended` counts where the metric has no flag)."""
    t = timed(metric)
    if t is None:
        return []
    name, b = t
    out = [f for f in FLAGS if _truthy(row.get(f"{name}_{f}_b{b}"))]
    if f"{name}_contended_b{b}" not in row and _truthy(row.get("contended")) and "contended" not in out:
        out.append("contended")
    return out


def describe(row: dict[str, Any], metric: str) -> str:
    """'contended, noisy (CPU utilisation 0.45)' for a flagged metric, '' otherwise."""
    fs = flags(row, metric)
    if not fs:
        return ""
    name, b = timed(metric)  # type: ignore[misc]
    util, wait = row.get(f"{name}_cpu_util_b{b}"), row.get(f"{name}_wait_b{b}")
    extra = []
    if _number(wait) and "contended" in fs:
        extra.append(f"waited {wait:.0%} of its time for a CPU")
    if _number(util):
        extra.append(f"CPU utilisation {util:.2f}")
    return ", ".join(fs) + (f" ({', '.join(extra)})" if extra else "")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def row_flags(row: dict[str, Any]) -> set[str]:
    """Every flag set on any timed metric of a row."""
    return {f for k in row if timed(k) for f in flags(row, k)}


def _truthy(v: Any) -> bool:
    return (isinstance(v, bool) and v) or (isinstance(v, (int, float)) and v != 0 and v == v)
