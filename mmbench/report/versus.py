"""Several runs in one report: every later run against the first, grouped by trial, a line per metric with the delta,
the ratio and compare's verdict. compare judges (by the vocabulary's kinds and directions); this only arranges its
entries."""
from __future__ import annotations

from dataclasses import dataclass

from mmbench import compare as C
from mmbench import vocabulary as V
from mmbench.errors import UserError
from mmbench.store import Run


@dataclass
class Versus:
    base: str                      # run labels, as the report names them
    other: str
    comparison: C.Comparison | None
    error: str = ""                # why there is no comparison (e.g. a run that cannot be read strictly)

    def by_task(self) -> dict[str, dict[str, list[C.Entry]]]:
        """task → 'label · dims' → entries, in the order compare found them."""
        out: dict[str, dict[str, list[C.Entry]]] = {}
        for e in self.comparison.entries if self.comparison else []:
            out.setdefault(e.task, {}).setdefault(f"{e.label} · {e.dims}", []).append(e)
        return out


def versus(runs: list[Run]) -> list[Versus]:
    if len(runs) < 2:
        return []
    out = []
    first = runs[0]
    for run in runs[1:]:
        try:
            cmp = C.compare(C.side_from_run(first.path), C.side_from_run(run.path), same_suite=False)
        except UserError as exc:  # e.g. a truncated run: the merged tables still show it
            out.append(Versus(first.label, run.label, None, str(exc)))
            continue
        out.append(Versus(first.label, run.label, cmp))
    return out


def delta(e: C.Entry) -> str:
    if e.baseline is None or e.current is None:
        return "—"
    col = V.column(e.metric)
    return format(e.current - e.baseline, "+" + (col.kind.fmt if col else ".4g"))


def row(e: C.Entry) -> list[str]:
    """metric, baseline, current, delta, ratio, verdict, detail — as text."""
    return [e.metric, C.value_text(e.metric, e.baseline), C.value_text(e.metric, e.current), delta(e),
            "—" if e.ratio is None else f"{e.ratio:.3g}×", e.state, e.detail]


HEADER = ["metric", "{base}", "{other}", "delta", "ratio", "verdict", "detail"]
