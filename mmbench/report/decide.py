"""What a report decides, before any table: per task, the configurations on the accuracy-vs-cost Pareto front, and
every dominated one named with what dominates it.

Costs are parameters, FLOPs, whole-model latency at each batch size and memory at each batch size (a cost that is 0
in every row says nothing and is left out; a flagged timing — contended, noisy … — is no evidence of a cost and is
left out of its configuration's costs). B dominates A when
B is at least as accurate (not worse beyond the spread: the larger std over seeds or binomial standard error of the
two), costs no more in every cost both have, and is strictly better somewhere (a lower cost, or more accurate beyond
the spread). So a method whose extra accuracy is within the noise and that costs more is dominated, and two methods
can never dominate each other.

The recommendation, per cost: the one-standard-error rule. The most accurate configuration sets the bar (its score
less one standard error: the larger of its std over seeds and the test split's standard error); of the
configurations that clear it, the one cheapest in that cost is recommended, named with what it costs against the most
accurate. A configuration at chance (within two standard errors of the task's chance accuracy) or flagged
did-not-learn is never recommended: cheapest, it would be picked for learning nothing. Latency and memory depend on
the machine: where the rows were measured in several places (runs merged into one report, a cluster's nodes), they
are recommended within each place, against the most accurate configuration measured there — a GPU's latency is never
set against a CPU's. Parameters and FLOPs are the same everywhere and compared across all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mmbench import evidence
from mmbench import vocabulary as V
from mmbench.scaling import run_of
from mmbench.report.tables import batch_sizes, fmt_num

MAX_DOMINATORS = 2  # named per dominated configuration (the most accurate first)


@dataclass
class Point:
    key: str                      # the row's method label (· run, when several runs)
    dims: str
    score: float
    std: float | None
    se: float | None
    costs: dict[str, float]
    chance: float | None = None
    did_not_learn: bool = False
    where: str = ""               # where its latency and memory were measured (scaling.run_of: run, device)

    @property
    def at_chance(self) -> bool:
        return self.chance is not None and abs(self.score - self.chance) <= 2 * max(self.spread, 1e-9)

    @property
    def learned(self) -> bool:
        """Neither at chance nor flagged did-not-learn: a configuration that may be recommended."""
        return not (self.did_not_learn or self.at_chance)

    @property
    def name(self) -> str:
        return f"{self.key} · {self.dims}"

    @property
    def spread(self) -> float:
        return max(self.std or 0.0, self.se or 0.0)


@dataclass
class Decision:
    task: str
    metric: str                   # the score: acc, else the first metric over seeds
    better: str                   # vocabulary.HIGHER | LOWER
    costs: list[str]              # cost columns used, in reading order
    front: list[Point] = field(default_factory=list)
    dominated: list[tuple[Point, list[tuple[Point, list[str]]]]] = field(default_factory=list)
    best: Point | None = None     # the most accurate configuration that learned
    bar: float | None = None      # the one-standard-error rule's bar: best's score less (or, lower better, plus) its SE
    recommended: list["Recommendation"] = field(default_factory=list)  # per cost, in the order of ``costs``
    unlearned: list[Point] = field(default_factory=list)  # at chance or did-not-learn: never recommended


@dataclass
class Recommendation:
    cost: str
    pick: Point                   # the cheapest configuration in this cost within one SE of the best
    best: Point                   # the most accurate one, for its cost (measured where the pick was: ``where``)
    where: str = ""               # a machine-dependent cost recommended within one place of several; "" otherwise


# The costs a configuration is judged by (vocabulary terms): the whole model's counts, its forward latency at each
# batch size, and at each batch size one memory peak (the first of MEMORY_COSTS the rows hold).
COUNT_COSTS, TIME_COST, MEMORY_COSTS = ("params", "flops"), "latency", ("peak_alloc", "peak_mem")


def cost_columns(rows: list[dict]) -> list[str]:
    """Parameters, FLOPs, latency and memory at each batch size: those the rows hold."""
    present = {k for r in rows for k, v in r.items() if _num(v)}  # measured, and not 0 in every row
    out = [c for c in COUNT_COSTS if c in present]
    batches = batch_sizes(rows)
    out += [c for b in batches if (c := V.column_of(TIME_COST, b)) in present]
    for b in batches:
        mem = next((c for name in MEMORY_COSTS if (c := V.column_of(name, b)) in present), None)
        out += [mem] if mem else []
    return out


def cost_label(col: str) -> str:
    c = V.column(col)
    if c.batch is None:
        return {"flops": "FLOPs"}.get(col, col)
    return f"{'latency' if c.term.kind == V.TIMING else 'memory'} b{c.batch}"


def _score_metric(rows: list[dict]) -> str | None:
    present = {k for r in rows for k in r}
    names = [k[:-5] for k in present if k.endswith("_mean") and f"{k[:-5]}_std" in present
             and not k.startswith("rob_")]
    for pick in ("acc", "f1", "acc2", "corr", "mae"):
        if pick in names:
            return pick
    return sorted(names)[0] if names else None


def decide(task: str, rows: list[dict]) -> Decision | None:
    """The front and the dominated, for the ok rows of one task that have a score; None when there is nothing to
    decide (no score measured, or fewer than two configurations)."""
    metric = _score_metric(rows)
    if metric is None:
        return None
    costs = cost_columns(rows)
    pts = []
    for r in rows:
        s = _num(r.get(f"{metric}_mean"))
        if r.get("status") != "ok" or s is None:
            continue
        pts.append(Point(str(r.get("_key")), str(r.get("dims")), s, _num(r.get(f"{metric}_std")),
                         _num(r.get(f"{metric}_se")),
                         {c: float(r[c]) for c in costs if _num(r.get(c)) is not None and not evidence.flags(r, c)},
                         _num(r.get("chance_accuracy")) if metric.startswith("acc") else None,
                         r.get("did_not_learn") is True, run_of(r)))
    if len(pts) < 2 or not costs:
        return None
    d = Decision(task, metric, V.score_better(metric), costs)
    # every pair at once (a run of 500 configurations is 250 000 pairs); the same rule as _dominates, which then
    # says why for the few dominators named
    cost = np.array([[p.costs.get(c, np.nan) for c in costs] for p in pts])
    score, spread = np.array([p.score for p in pts]), np.array([p.spread for p in pts])
    sign = 1.0 if d.better == V.HIGHER else -1.0
    known = ~np.isnan(cost)
    for i, p in enumerate(pts):
        both = known & known[i]
        with np.errstate(invalid="ignore"):
            no_dearer = np.where(both, cost <= cost[i], True).all(1)
            cheaper = np.where(both, cost < cost[i], False).any(1)
        tol, gain = np.maximum(spread, spread[i]), sign * (score - score[i])
        dom = both.any(1) & no_dearer & (gain >= -tol) & (cheaper | (gain > tol))
        dom[i] = False
        by = sorted(np.flatnonzero(dom), key=lambda j: -sign * score[j])[:MAX_DOMINATORS]
        if by:
            d.dominated.append((p, [(pts[j], _dominates(pts[j], p, d.better, costs)) for j in by]))
        else:
            d.front.append(p)
    d.front.sort(key=lambda p: tuple(p.costs.get(c, math.inf) for c in costs))
    _recommend(d, pts)
    return d


def _recommend(d: Decision, pts: list[Point]) -> None:
    """The one-standard-error rule, per cost (see the module's docstring)."""
    d.unlearned = [p for p in pts if not p.learned]
    learned = [p for p in pts if p.learned]
    if not learned:
        return
    sign = 1.0 if d.better == V.HIGHER else -1.0
    d.best = max(learned, key=lambda p: (sign * p.score, -p.spread))
    d.bar = d.best.score - sign * d.best.spread
    within = [p for p in learned if sign * (p.score - d.bar) >= 0]
    places = list(dict.fromkeys(p.where for p in pts))
    for c in d.costs:
        local = len(places) > 1 and V.column(c).term.kind in (V.TIMING, V.MEMORY)  # machine-dependent: per place
        for where in places if local else [None]:
            have = [p for p in within if c in p.costs and where in (None, p.where)]
            if not have:
                continue
            pick = min(have, key=lambda p: (p.costs[c], -sign * p.score))
            best = d.best if where is None else \
                max((p for p in learned if p.where == where), key=lambda p: (sign * p.score, -p.spread))
            d.recommended.append(Recommendation(c, pick, best, where or ""))


def _dominates(q: Point, p: Point, better: str, costs: list[str]) -> list[str] | None:
    """Why q dominates p (what q is better at), or None."""
    shared = [c for c in q.costs if c in p.costs]
    if not shared:
        return None
    tol = max(q.spread, p.spread)
    gain = q.score - p.score if better == V.HIGHER else p.score - q.score
    if gain < -tol or any(q.costs[c] > p.costs[c] for c in shared):
        return None
    lower = [c for c in shared if q.costs[c] < p.costs[c]]
    every = len(lower) == len(shared) and all(c in q.costs and c in p.costs for c in costs)
    why = [] if not lower else ["cheaper in every cost"] if every else \
        [f"cheaper in {', '.join(cost_label(c) for c in lower)}"]
    if gain > tol:
        why.insert(0, "more accurate beyond the spread" if better == V.HIGHER else "better beyond the spread")
    elif not why:
        return None
    return why


def describe(p: Point, costs: list[str], metric: str) -> str:
    spread = "—" if p.std is None else f"{p.std:.3f}"
    se = f", SE {p.se:.3f}" if p.se is not None else ""
    chance = " (≈ chance)" if p.at_chance else " (did not learn)" if p.did_not_learn else ""
    parts = [f"{metric} {p.score:.3f} ± {spread}{se}{chance}"]
    for c in costs:
        if c in p.costs:
            v = p.costs[c]
            unit = V.column(c).kind.unit
            parts.append(f"{cost_label(c)} {f'{v:.3g} {unit}' if unit else fmt_num(v)}")
    return " · ".join(parts)


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def lines(d: Decision) -> tuple[str, list[str], list[str], list[str]]:
    """(what the front is over, a line per front configuration that learned, a line per one at chance or that did
    not learn — on the front only by being cheap, shown folded —, a line per dominated one), for both renderers."""
    over = f"{d.metric} against {', '.join(cost_label(c) for c in d.costs)}"
    front = [f"{p.name}: {describe(p, d.costs, d.metric)}" for p in d.front if p.learned]
    unlearned = [f"{p.name}: {describe(p, d.costs, d.metric)}" for p in d.front if not p.learned]
    dominated = [f"{p.name} ({d.metric} {p.score:.3f}): dominated by "
                 + "; ".join(f"{q.name} ({q.score:.3f}, {' and '.join(why)})" for q, why in by)
                 for p, by in d.dominated]
    return over, front, unlearned, dominated


def _cost_text(c: str, v: float | None) -> str:
    if v is None:
        return "not measured (or flagged)"
    unit = V.column(c).kind.unit
    return f"{v:.3g} {unit}" if unit else f"{v:,.0f}"


def recommendation_lines(d: Decision) -> tuple[str, list[str]]:
    """(the rule and the bar, a line per recommended configuration with the costs it is cheapest in and what each
    costs against the most accurate), for both renderers; ('', []) when no configuration learned."""
    if d.best is None:
        return (f"No recommendation: every configuration is at chance or did not learn ({len(d.unlearned)})."
                if d.unlearned else ""), []
    b = d.best
    word = "at least" if d.better == V.HIGHER else "at most"
    head = (f"One-standard-error rule: per cost, the cheapest configuration whose {d.metric} is within one standard "
            f"error of the most accurate one ({b.name}: {d.metric} {b.score:.3f}, SE {b.spread:.3f}, the larger of its "
            f"std over seeds and the test split's standard error), i.e. {d.metric} {word} {d.bar:.3f}.")
    if d.unlearned:
        head += (f" {len(d.unlearned)} configuration(s) at chance or flagged did-not-learn are never recommended "
                 f"({', '.join(p.name for p in d.unlearned[:6])}{' …' if len(d.unlearned) > 6 else ''}).")
    missing = [c for c in d.costs if c not in {r.cost for r in d.recommended}]
    if missing:
        head += (f" No recommendation by {', '.join(cost_label(c) for c in missing)}: no configuration within SE has "
                 f"it measured unflagged.")
    groups: dict[str, list[Recommendation]] = {}
    for r in d.recommended:
        groups.setdefault(r.pick.name, []).append(r)
    out = []
    for name, recs in groups.items():
        p = recs[0].pick
        where = "the most accurate itself" if p is b else f"within SE of the best {b.score:.3f}"
        out.append(f"{name} — {d.metric} {p.score:.3f} ± {p.spread:.3f}, {where}: the cheapest by "
                   f"{', '.join(_cost_where(r) for r in recs)}")
    return head, out


def _cost_where(r: Recommendation) -> str:
    return cost_label(r.cost) + (f" ({r.where})" if r.where else "")


RECOMMEND_HEADER = ["cost", "recommended", "its cost", "the most accurate's", "cheaper by"]


def recommendation_table(d: Decision) -> list[list[str]]:
    """A row per cost: the configuration recommended, what it costs, what the most accurate one costs, the ratio."""
    out = []
    for r in d.recommended:
        mine, theirs = r.pick.costs[r.cost], r.best.costs.get(r.cost)
        x = theirs / mine if theirs and mine > 0 and r.pick is not r.best else None
        ratio = "—" if x is None else f"{x:,.0f}×" if x >= 100 else f"{x:.3g}×"
        out.append([_cost_where(r), r.pick.name, _cost_text(r.cost, mine),
                    _cost_text(r.cost, theirs) + (" (itself)" if r.pick is r.best else ""), ratio])
    return out
