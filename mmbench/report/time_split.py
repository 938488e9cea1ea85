"""Where the time goes: each method configuration's forward at the largest batch size, split into its timed stages
(encoders, fusion: stages.py) and the framework overhead that remains, as table rows for the markdown and HTML
reports. From rows only."""
from __future__ import annotations

from mmbench import evidence, sizes, stages
from mmbench import vocabulary as V

HEADER = ["configuration", "dims", "batch", "whole forward (ms)", "encoders (ms, share)", "fusion (ms, share)",
          "framework overhead (ms, share)", "flagged"]
NOTE = ("Each configuration at its largest dims and the largest batch size. Encoders and fusion are timed on their "
        "own, with the same evidence as the whole forward and sampled together with it (a block of each in turn, "
        "sample by sample: the three see the same speed of the host); the model has no head (the fusion's output is "
        "the prediction). Framework overhead = whole − encoders − fusion: the model's own Python and call overhead, "
        "a difference of medians (near zero it can be slightly negative).")


def _size(row: dict) -> float:
    dims = sizes.parse_dims(row.get("dims"))
    return float(sum(dims)) if dims else 0.0


def rows(task_rows: list[dict]) -> list[list[str]]:
    """One table row per configuration (the row's _key) that has stage timings."""
    bs = sorted({b for r in task_rows for b in V.batch_sizes(r)
                 if r.get("status") == "ok" and stages.split(r, b) is not None})
    if not bs:
        return []
    b = bs[-1]
    best: dict[str, dict] = {}
    for r in task_rows:
        if r.get("status") == "ok" and stages.split(r, b) is not None:
            k = r.get("_key", r.get("label", "?"))
            if k not in best or _size(r) > _size(best[k]):
                best[k] = r
    out = []
    for k, r in best.items():
        s = stages.split(r, b)
        whole = s["whole"]
        cells = [f"{s[name]:.4g} ({s[name] / whole:.0%})" for name in ("encoders", "fusion", "framework overhead")]
        cols = [f"{stages.WHOLE}_ms_b{b}", *(f"{term}_ms_b{b}" for _, term in stages.STAGES)]
        flagged = sorted({f for c in cols for f in evidence.flags(r, c)})
        out.append([str(k), str(r.get("dims")), str(b), f"{whole:.4g}", *cells, ", ".join(flagged) or "—"])
    return out
