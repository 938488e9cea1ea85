"""What a result row says about how its timings were taken: the flags that make a number evidence or not.

One home for it: compare (a flagged metric is `noise`, never `regressed`), the history baseline (flagged runs are
left out of its spread) and the report (how many rows are flagged, and why) all read the flags through here; which
columns are timings and which carry their flags is the vocabulary's. Plain dicts only: no torch.
"""
from __future__ import annotations

from typing import Any

from mmbench import vocabulary as V


def flags(row: dict[str, Any], metric: str) -> list[str]:
    """The flags set on a timed metric of a row (a row-level `contended` counts where the metric has no flag)."""
    t = V.timing(metric)
    if t is None:
        return []
    out = [f for f in V.FLAGS if _truthy(row.get(t.evidence(f)))]
    if t.evidence(V.CONTENDED) not in row and _truthy(row.get(V.CONTENDED)) and V.CONTENDED not in out:
        out.append(V.CONTENDED)
    return out


def describe(row: dict[str, Any], metric: str) -> str:
    """'contended, noisy (CPU utilisation 0.45)' for a flagged metric, '' otherwise."""
    fs = flags(row, metric)
    if not fs:
        return ""
    t = V.timing(metric)
    util, wait = row.get(t.evidence(V.CPU_UTIL)), row.get(t.evidence(V.WAIT))
    slow = row.get(t.evidence(V.SLOW_ROUNDS))
    extra = []
    if _number(wait) and V.CONTENDED in fs:
        extra.append(f"waited {wait:.0%} of its time for a CPU")
    if _number(slow) and "host_slow" in fs:  # none left out: every round was beside one, and the figure is all of them
        extra.append(f"{slow:.0f} rounds left out beside a slow host reading" if slow else
                     "a slow host reading beside every round")
    if _number(util):
        extra.append(f"CPU utilisation {util:.2f}")
    return ", ".join(fs) + (f" ({', '.join(extra)})" if extra else "")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def row_flags(row: dict[str, Any]) -> set[str]:
    """Every flag set on any timed metric of a row."""
    return {f for k in row if V.timing(k) for f in flags(row, k)}


def _truthy(v: Any) -> bool:
    return (isinstance(v, bool) and v) or (isinstance(v, (int, float)) and v != 0 and v == v)
