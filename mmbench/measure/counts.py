"""Parameter and FLOP counts of a model and of its submodules."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.utils.flop_counter as _fc
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

_aten = torch.ops.aten


def _sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_backward_flop_count(grad_out, q, k, v)


# torch.utils.flop_counter counts scaled_dot_product_attention on CUDA but not its CPU kernel (it would report 0):
# count that kernel with the same formula.
_EXTRA = {}
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA[_aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu
    _EXTRA[_aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward

# Fused kernels that do matmul work the counter may have no formula for (the nn.TransformerEncoderLayer and
# nn.MultiheadAttention fast paths in eval + no_grad): recorded by name so a note can say what was missed.
_FUSED_HINTS = ("attention", "transformer", "multi_head")


class _OpRecorder(TorchDispatchMode):
    """Records every aten op that runs (entered outside the counter, so it sees the ops the counter is given)."""

    def __init__(self):
        super().__init__()
        self.ops: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


def params(module: nn.Module) -> int:
    """Registered parameters (a factor kept in a plain list would be missed: that is the point)."""
    return sum(p.numel() for p in module.parameters())


def flops(fn: Callable[[], object], module: nn.Module, parts: tuple[str, ...] = (), *,
          backward: bool = False) -> dict[str, int]:
    """FLOPs of one call of ``fn`` (torch.utils.flop_counter: 2 × multiply-adds of matmul-like ops).

    Returns {"total": …, part: …} for each named child in ``parts`` (e.g. "fusion"), from the counter's
    per-module breakdown. ``backward=True``: fn runs with autograd on (a training step's forward + backward).
    "uncounted" lists the fused attention/transformer ops that ran without a FLOP formula (their work is missing).
    """
    grad = contextlib.nullcontext() if backward else torch.no_grad()
    with grad, _OpRecorder() as rec, FlopCounterMode(display=False, custom_mapping=_EXTRA) as counter:
        fn()
    counts = counter.get_flop_counts()
    root = type(module).__name__
    out: dict = {"total": int(sum(counts.get("Global", {}).values()))}
    out["uncounted"] = sorted(str(op) for op in rec.ops
                              if op not in counter.flop_registry and any(h in str(op) for h in _FUSED_HINTS))
    for part in parts:
        out[part] = _part_flops(counts, module, root, part)
    return out


def _part_flops(counts: dict, module: nn.Module, root: str, part: str) -> int:
    """A child's FLOPs. A container (ModuleList/ModuleDict) is never called itself, so the counter files its work
    under its children: sum those (direct children only, whose totals already hold their own descendants)."""
    child = getattr(module, part)
    if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
        return sum(int(sum(counts.get(f"{root}.{part}.{name}", {}).values())) for name, _ in child.named_children())
    return int(sum(counts.get(f"{root}.{part}", {}).values()))


def weight_flops_floor(module: nn.Module) -> int:
    """A forward FLOP floor per sample: every matrix weight multiplies something at least once (2 FLOPs per entry),
    halved because a weight may fold its bias in as one row (LMF's factors: that row is an add, not counted).

    Embedding tables (lookups) are excluded. A count below this floor means the counter missed operations, e.g. a
    fused fast path (nn.TransformerEncoderLayer in eval + no_grad) that hides its matmuls.
    """
    skip = {id(m.weight) for m in module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    return sum(p.numel() for p in module.parameters() if p.dim() >= 2 and id(p) not in skip)


def flops_note(counted: int, module: nn.Module, batch: int = 1, *, lengths: list[int] | None = None,
               uncounted: list[str] = ()) -> str:
    """'' when the count is credible; otherwise what is wrong with it (reported, never silently zero).

    ``lengths``: the sequence lengths of a sequence task (their closed forms need them); ``uncounted``: fused ops
    that ran without a formula (from ``flops``)."""
    if uncounted:
        return f"not counted by torch.utils.flop_counter: {', '.join(uncounted)} (the count is a lower bound)"
    expected = getattr(module, "expected_flops", None)
    try:
        formula = None if not callable(expected) else expected(batch) if lengths is None else expected(batch, lengths)
    except TypeError:  # a user's closed form with another signature
        formula = None
    if formula is not None:  # a stated closed form that holds outranks the floor (a weight may be training-only,
        # e.g. encdec's decoder runs in aux_loss, not in forward)
        return "" if formula == counted else f"counter {counted} != closed form {formula}"
    floor = weight_flops_floor(module) * batch
    if counted < floor:
        return f"counter {counted} < weight floor {floor}: operations missed (fused kernel?)"
    return ""
