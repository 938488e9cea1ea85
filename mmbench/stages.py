"""Where a forward's time goes: its stages, each timed on its own, and the remainder named, never hidden.

A FusionModel's forward is two stages: the encoders (one per modality) and the fusion layer. Nothing follows the
fusion (model.py: its output is the prediction), so there is no head stage. Each stage is a timing of its own
(`encoder_latency`, `fusion_latency`: same rounds and evidence as the whole forward, `latency`), and the three are
sampled together (measure.latency_rounds' ``together``: each sample times a block of each in turn), so they are
taken at the same instants of the host's speed and their medians can be subtracted. What the whole forward takes
beyond the stages' sum is the framework's overhead: the model's own Python (its module call, its forward, the list of
encoder outputs) and whatever the two stages' separate calls do not share. It is a difference of medians, so it can
be slightly negative when the overhead is below the timings' noise. Plain numbers only: no torch (the report reads
it).
"""
from __future__ import annotations

from typing import Any, Iterable

WHOLE = "latency"
STAGES = (("encoders", "encoder_latency"), ("fusion", "fusion_latency"))  # (what the report calls it, timing term)
OVERHEAD = "framework_overhead"


def timed_together(b: int) -> tuple[tuple[str, int], ...]:
    """The timing keys of batch size b sampled as one group: the whole forward and its stages."""
    return ((WHOLE, b), *((term, b) for _, term in STAGES))


def overhead_column(b: int) -> str:
    return f"{OVERHEAD}_ms_b{b}"


def share_column(b: int) -> str:
    return f"{OVERHEAD}_share_b{b}"


def overhead_columns(row: dict[str, Any], batch_sizes: Iterable[int]) -> dict[str, float | None]:
    """The framework overhead at each batch size (ms, and its share of the whole forward): empty where a stage or
    the whole was not measured."""
    out: dict[str, float | None] = {}
    for b in batch_sizes:
        whole = row.get(f"{WHOLE}_ms_b{b}")
        parts = [row.get(f"{term}_ms_b{b}") for _, term in STAGES]
        ok = whole is not None and whole > 0 and all(p is not None for p in parts)
        over = whole - sum(parts) if ok else None
        out[overhead_column(b)] = over
        out[share_column(b)] = over / whole if ok else None
    return out


def split(row: dict[str, Any], b: int) -> dict[str, float] | None:
    """One row's forward at batch size b as {stage: ms, "framework overhead": ms, "whole": ms}, or None when the row
    has no stage timings there."""
    whole = row.get(f"{WHOLE}_ms_b{b}")
    parts = {name: row.get(f"{term}_ms_b{b}") for name, term in STAGES}
    if whole is None or any(v is None for v in parts.values()) or whole != whole:
        return None
    return {**parts, "framework overhead": whole - sum(parts.values()), "whole": whole}
