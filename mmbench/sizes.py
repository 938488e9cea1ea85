"""Each fusion method's own size variable: the leading term of its closed-form cost, what its latency, training-step
time and memory grow with. Torch-free (a table, not the method classes): the report, the fits and `mmbench predict`
read it from a row's method, dims and rank alone.

TFN's outer product of the (d_m + 1)-padded vectors has Π(d_m+1) entries; LMF's rank-r factors project each
(d_m + 1)-vector r times, r·Σ(d_m+1); early fusion concatenates (Σd_m), late fusion sums per-modality heads (Σd_m).
A method not in the table is sized by its fusion FLOPs per sample (the row's exact closed-form count, whose leading
term it is), so every method can be fitted; `mmbench predict` needs the table (the FLOPs of a configuration not run
are not in any row).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class SizeVariable:
    name: str                                                  # how the report writes it
    of: Callable[[Sequence[int], int | None], float | None]    # (dims, rank) → size


def _rank(f: Callable[[Sequence[int], int], float]) -> Callable[[Sequence[int], int | None], float | None]:
    return lambda dims, rank: None if rank is None else f(dims, rank)


SIZES: dict[str, SizeVariable] = {
    "tfn": SizeVariable("Π(d_m+1)", lambda dims, rank: float(math.prod(d + 1 for d in dims))),
    "lmf": SizeVariable("r·Σ(d_m+1)", _rank(lambda dims, r: float(r * sum(d + 1 for d in dims)))),
    "early": SizeVariable("Σd_m", lambda dims, rank: float(sum(dims))),
    "late": SizeVariable("Σd_m", lambda dims, rank: float(sum(dims))),
}
FALLBACK = "fusion FLOPs/sample"       # the size of a method without an entry: its row's fusion_flops
DEFAULT_RANK = {"lmf": 4}              # the class's default, for a row without a rank


def parse_dims(dims: Any) -> list[int] | None:
    """'8x8x16' (a row's dims) or a list → [8, 8, 16]; None when it is neither."""
    if isinstance(dims, (list, tuple)):
        parts = list(dims)
    else:
        parts = str(dims).split("x")
    try:
        out = [int(p) for p in parts]
    except (TypeError, ValueError):
        return None
    return out if out and all(d > 0 for d in out) else None


def rank_of(row: dict[str, Any]) -> int | None:
    r = row.get("rank")
    if r is None:
        hp = row.get("hparams") if isinstance(row.get("hparams"), dict) else {}
        r = hp.get("rank", DEFAULT_RANK.get(str(row.get("method"))))
    return int(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else None


def name_of(method: str) -> str:
    return SIZES[method].name if method in SIZES else FALLBACK


def size_of(row: dict[str, Any]) -> float | None:
    """A row's size variable (see name_of for what it is), or None where it cannot be known."""
    method = str(row.get("method"))
    if method in SIZES:
        dims = parse_dims(row.get("dims"))
        return None if dims is None else SIZES[method].of(dims, rank_of(row))
    v = row.get("fusion_flops")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None
