"""A fusion method's exact parameter and FLOP counts as curves over the uniform modality dim d, for the report's
lines "through any dims" (it is torch-free, so the counts are taken here, at run time).

The one home of each formula stays its method class (`expected_params`, `expected_flops`): this module evaluates
the class at d = 1, 2, … on the meta device (shapes only: no memory, no weights initialised). A curve is kept only
where the class's closed form at the trial's own dims equals what the trial counted (params from the module,
FLOPs from torch's counter), so a line is drawn only through counts it is known to reproduce."""
from __future__ import annotations

import time
from typing import Any

GRID = sorted({*range(1, 17), *(round(2 ** (k / 4)) for k in range(16, 41))})  # every d to 16, then 4 per octave
BUDGET_S = 1.0   # a method slow to build stops its curve here (the points so far are kept: exact, just fewer)
KEY = "closed_form"   # the raw samples' entry: {"d": [...], "fusion_params": [...], "fusion_flops": [...]}


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _uniform(dims: Any, n: int) -> list[int]:
    """[d] when a row's dims ('8x8x8') are one d for every modality, else []."""
    parts = str(dims).split("x")
    return [int(parts[0])] if len(parts) == n and len(set(parts)) == 1 and parts[0].isdigit() else []


def curves(fusion, method: str, hparams: dict, n_modalities: int, out_dim: int, row: dict) -> dict | None:
    """{"d": [...], "fusion_params": [...]?, "fusion_flops": [...]?} over GRID, the counts that agree with the
    trial's own; None when neither does (no closed form, or one that is not what was counted)."""
    checks = {"fusion_params": lambda f: f.expected_params(), "fusion_flops": lambda f: f.expected_flops(1)}
    keep = {}
    for col, fn in checks.items():
        try:
            own = _int(fn(fusion))
        except Exception:  # a closed form that cannot be evaluated is none
            own = None
        if own is not None and own == _int(row.get(col)):
            keep[col] = fn
    if not keep:
        return None
    out: dict[str, list] = {"d": [], **{col: [] for col in keep}}
    own_d = {d for d in _uniform(row.get("dims"), n_modalities)}  # the trial's own d: the line passes through it
    # The same configuration at other dims has the same curve: evaluated once a process (a suite sweeps dims)
    key = (method, repr(sorted(hparams.items())), n_modalities, out_dim, tuple(keep))
    known = _SEEN.setdefault(key, {})
    t0 = time.perf_counter()
    for d in sorted({*GRID, *own_d}):
        if d not in known:
            if time.perf_counter() - t0 > BUDGET_S:
                break
            known[d] = _at(method, d, hparams, n_modalities, out_dim, keep)
        vals = known[d]
        if vals is None:
            continue
        out["d"].append(d)
        for col, v in vals.items():
            out[col].append(v)
    return out if out["d"] else None


_SEEN: dict[tuple, dict[int, dict | None]] = {}  # configuration -> d -> its counts (None: no point there)


def _at(method: str, d: int, hparams: dict, n_modalities: int, out_dim: int, keep: dict) -> dict | None:
    """The kept closed forms of the method built at uniform d on the meta device, or None (a d it does not take)."""
    import torch

    from mmbench import methods

    try:
        with torch.device("meta"):
            f = methods.create(method, [d] * n_modalities, out_dim, **hparams)
        vals = {col: _int(fn(f)) for col, fn in keep.items()}
    except Exception:  # a d the method does not take (e.g. fewer than its heads): no point there
        return None
    return None if any(v is None for v in vals.values()) else vals
