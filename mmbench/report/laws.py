"""The scaling laws and crossovers as table rows (header, cells), the same for the markdown and HTML reports."""
from __future__ import annotations

from mmbench import scaling
from mmbench import vocabulary as V

FIT_HEADER = ["fitted method", "size variable", "cost", "law", "exponent k (95% CI)", "overhead c", "sizes (flagged)",
              "leave-one-out error"]
POOR = 0.25  # a leave-one-out error above this: the law predicts sizes it did not see poorly (marked ⚠)
CROSS_HEADER = ["cost", "pair", "crossover (uniform modality dim d)"]
NOTE = ("Least squares in log space of each cost against the method's own size variable s, per method, task and "
        "run: y = a·s^k, or y = c + a·s^k (a fixed overhead c, then the growth) where five sizes or more tell them "
        "apart; the law kept has the lower leave-one-out error (each size left out, refitted, predicted: the mean "
        "|predicted / measured − 1|). Flagged timings are left out where four sizes remain (else counted). ⚠: a leave-one-out error over 25%, a "
        "law not to predict from. Parameters and FLOPs are exact counts, in the tables above.")


def _cost(col: str) -> str:
    c = V.column(col)
    return f"{c.term.name.replace('_', ' ')} b{c.batch} ({c.kind.unit})"


def fit_rows(fits: list[scaling.Fit], many_runs: bool) -> list[list[str]]:
    out = []
    for f in fits:
        k, lo, hi = f.exponent
        c = f.law.overhead
        out.append([f.name + (f" · {f.run}" if many_runs else ""), f.size_name, _cost(f.cost), f.law.model,
                    f"{k:.3f} [{lo:.3f}, {hi:.3f}]", "—" if c is None else f"{c:.3g}",
                    f"{len(f.sizes)} ({f.n_flagged} of {f.n_rows} rows flagged)" if f.n_flagged else f"{len(f.sizes)}",
                    "—" if f.loo is None else f"{f.loo:.1%}" + (" ⚠" if f.loo > POOR else "")])
    return out


def crossover_rows(xs: list[scaling.Crossover]) -> tuple[list[list[str]], list[list[str]]]:
    """(crossovers found inside the range run, the pairs that never cross there or are not told apart)."""
    found, rest = [], []
    for x in xs:
        row = [_cost(x.cost), f"{x.a} vs {x.b}", x.text]  # the series' names carry their run where there are several
        (found if x.found else rest).append(row)
    return found, rest
