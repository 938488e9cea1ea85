"""Parameter and FLOP counts of a model and of its submodules."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def params(module: nn.Module) -> int:
    """Registered parameters (a factor kept in a plain list would be missed: that is the point)."""
    return sum(p.numel() for p in module.parameters())


def flops(fn: Callable[[], object], module: nn.Module, parts: tuple[str, ...] = ()) -> dict[str, int]:
    """FLOPs of one call of ``fn`` (torch.utils.flop_counter: 2 × multiply-adds of matmul-like ops).

    Returns {"total": …, part: …} for each named child in ``parts`` (e.g. "fusion"), from the counter's
    per-module breakdown.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    counts = counter.get_flop_counts()
    root = type(module).__name__
    out = {"total": int(sum(counts.get("Global", {}).values()))}
    for part in parts:
        out[part] = int(sum(counts.get(f"{root}.{part}", {}).values()))
    return out
