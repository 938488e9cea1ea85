"""Scaling laws fitted on the rows: how each method's latency, training-step time and peak memory grow with its own
size variable (sizes.py), where two methods' costs cross, and what a size not run would cost.

A fit is least squares in log space, on one method (one configuration of its other hyperparameters) of one task on
one device (a run), at one cost column: the median cost at each distinct size, against the size. Two models:
a power law, log y = α + k·log s; and, with five sizes or more, a fixed overhead plus a power law,
y = c + a·s^k (what a small model's forward is: the framework's per-call cost, then the work) — the one kept is the
one with the lower leave-one-out error, the honest measure of how well the law predicts a size it did not see
(each size left out in turn, refitted, predicted; the mean |predicted / measured − 1|). The exponent k comes with its
95% confidence interval (from the fit's covariance, Student's t); a prediction with its 95% prediction interval.
Flagged timings (contended, noisy …) are left out where four sizes or more remain unflagged; else all are used and the
fit says how many were flagged. Parameters and FLOPs are exact counts: they are not fitted.
Plain rows in, numpy and scipy only: no torch.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmbench import evidence, sizes
from mmbench import vocabulary as V

FITTED = ("latency", "train_step")          # timing terms, at each batch size
MEMORY = ("peak_mem", "peak_alloc")         # the first of these the rows hold, at each batch size
MIN_SIZES = 3                               # distinct sizes a fit needs (one degree of freedom left)
OVERHEAD_SIZES = 5                          # ... and the overhead model
MIN_UNFLAGGED = 4                           # distinct sizes with unflagged timings to fit on those alone
LEVEL = 0.95
GOOD_ENOUGH = 0.03                          # a power law predicting left-out sizes this well needs no overhead term


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


# --- the two models, on x = log(size): value and Jacobian of log y in the parameters ---------------------------------
def _power(theta, x):
    a, k = theta
    return a + k * x, np.stack([np.ones_like(x), x], axis=1)


def _overhead(theta, x):
    g, a, k = theta
    lc, lw = np.broadcast_to(g, x.shape), a + k * x            # log c, log(a·s^k)
    top = np.maximum(lc, lw)
    f = top + np.log(np.exp(lc - top) + np.exp(lw - top))       # log(c + a·s^k), without overflow
    pc, pw = np.exp(lc - f), np.exp(lw - f)
    return f, np.stack([pc, pw, pw * x], axis=1)


MODELS = {"power": _power, "overhead + power": _overhead}


@functools.lru_cache(maxsize=None)
def _t(dof: int) -> float:
    """Student's t at the interval's level: a 95% interval is ± t·SE (scipy.special: scipy.stats takes a second to
    import)."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.5 + LEVEL / 2))


@dataclass
class Law:
    """One fitted model (log y = f(θ, log s)) with what its intervals need."""
    model: str
    theta: np.ndarray
    cov: np.ndarray
    s2: float
    dof: int

    def log_predict(self, size, *, new: bool = True):
        """(log ŷ, its standard error): a new measurement's (``new``, the prediction interval), else the line's."""
        x = np.log(np.atleast_1d(np.asarray(size, dtype=float)))
        f, jac = MODELS[self.model](self.theta, x)
        var = np.einsum("ij,jk,ik->i", jac, self.cov, jac) + (self.s2 if new else 0.0)
        return f, np.sqrt(np.maximum(var, 0.0))

    @property
    def t(self) -> float:
        return _t(self.dof)

    @property
    def exponent(self) -> tuple[float, float, float]:
        k, se = float(self.theta[-1]), math.sqrt(max(float(self.cov[-1, -1]), 0.0))
        return k, k - self.t * se, k + self.t * se

    @property
    def overhead(self) -> float | None:
        return float(math.exp(self.theta[0])) if self.model == "overhead + power" else None


def _fit(model: str, x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> Law | None:
    """Least squares of log y on x = log s; None when the model cannot be fitted to these points. ``start``: the
    overhead model's first guess (leave-one-out refits start from the whole fit: a few steps each)."""
    ly = np.log(y)
    n = len(x)
    if model == "power":
        jac = np.stack([np.ones_like(x), x], axis=1)
        theta, *_ = np.linalg.lstsq(jac, ly, rcond=None)
    else:
        from scipy.optimize import least_squares

        if start is None:
            c0 = 0.7 * float(y.min())
            rest = y - c0
            k0 = float(np.polyfit(x, np.log(rest), 1)[0]) if np.all(rest > 0) else 1.0
            start = np.array([math.log(c0), float(np.log(rest[-1])) - k0 * float(x[-1]), min(max(k0, 0.0), 3.0)])
        try:  # Levenberg-Marquardt (MINPACK): c and a stay positive by their log parametrisation
            res = least_squares(lambda th: MODELS[model](th, x)[0] - ly, start, jac=lambda th: MODELS[model](th, x)[1],
                                method="lm", max_nfev=200)
        except (ValueError, np.linalg.LinAlgError):
            return None
        theta = res.x
        if not (res.success and -1.0 <= theta[2] <= 4.0 and np.all(np.abs(theta[:2]) < 60)):
            return None  # a runaway exponent: the overhead is not told apart from the growth by these points
    f, jac = MODELS[model](theta, x)
    dof = n - len(theta)
    if dof < 1:
        return None
    s2 = float(np.sum((ly - f) ** 2) / dof)
    try:
        cov = s2 * np.linalg.pinv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(cov)):
        return None
    return Law(model, np.asarray(theta, dtype=float), cov, s2, dof)


def _loo(law: Law, x: np.ndarray, y: np.ndarray) -> float | None:
    """The mean |predicted / measured − 1| over each size left out of the fit in turn."""
    errs = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        law_i = _fit(law.model, x[keep], y[keep], start=law.theta)
        if law_i is None:
            return None
        errs.append(abs(math.exp(float(law_i.log_predict(math.exp(x[i]), new=False)[0][0])) / y[i] - 1))
    return float(np.mean(errs))


@dataclass
class Fit:
    task: str
    run: str                                  # the run (its device) the costs were measured in
    group: str                                # the method configuration fitted: 'tfn', 'lmf', 'early(mlp)' …
    method: str
    size_name: str                            # the size variable ('Π(d_m+1)' …)
    cost: str                                 # the cost column ('latency_ms_b256' …)
    law: Law
    loo: float | None                         # leave-one-out error (mean |relative error|)
    sizes: list[float]                        # the distinct sizes fitted, with their median cost
    values: list[float]
    n_rows: int
    n_flagged: int                            # flagged timings among the points fitted (0 when left out)
    name: str = ""                            # how the report names it: the rows' label when they share one

    def __post_init__(self):
        self.name = self.name or self.group

    @property
    def exponent(self) -> tuple[float, float, float]:
        return self.law.exponent

    def predict(self, size: float) -> tuple[float, float, float]:
        """(estimate, low, high) of the cost at ``size``, the 95% prediction interval."""
        f, se = self.law.log_predict(size)
        t = self.law.t
        return float(np.exp(f[0])), float(np.exp(f[0] - t * se[0])), float(np.exp(f[0] + t * se[0]))


def fit_points(x: np.ndarray, y: np.ndarray) -> tuple[Law, float | None] | None:
    """The better of the two models on these sizes (log) and costs, by leave-one-out error; None with too few."""
    if len(x) < MIN_SIZES:
        return None
    best = None
    for model in ("power", "overhead + power"):
        if model != "power" and (len(x) < OVERHEAD_SIZES or (best and best[1] is not None and best[1] < GOOD_ENOUGH)):
            continue
        law = _fit(model, x, y)
        if law is None:
            continue
        loo = _loo(law, x, y)
        if model != "power" and (loo is None or law.exponent[2] - law.exponent[1] > 2.0):
            continue  # an exponent this loose: the overhead is not told apart from the growth
        if best is None or (loo is not None and (best[1] is None or loo < best[1])):
            best = (law, loo)
    return best


def run_of(row: dict) -> str:
    """Where a row's costs were measured: its run, and its device where one run's rows span several (a cluster)."""
    run = str(row.get("_run", ""))
    return run + (f" · {row.get('gpu_name') or row.get('device')}" if row.get("_env") else "")


def group_of(row: dict) -> str:
    """The method configuration a row belongs to: its method and every hyperparameter but the size's own (rank)."""
    hp = row.get("hparams") if isinstance(row.get("hparams"), dict) else {}
    extra = {k: v for k, v in sorted(hp.items()) if v is not None and k != "rank"}
    method = str(row.get("method"))
    return method + (f"({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def cost_columns(rows: list[dict]) -> list[str]:
    """The fitted costs the rows hold: latency and training step at each batch size, one memory peak at each."""
    present = {k for r in rows for k, v in r.items() if _num(v)}
    out = []
    for b in V.batch_sizes(present):
        out += [c for t in FITTED if (c := V.column_of(t, b)) in present]
        mem = next((c for t in MEMORY if (c := V.column_of(t, b)) in present), None)
        out += [mem] if mem else []
    return out


def fit_rows(rows: list[dict]) -> list[Fit]:
    """Every fit the rows support: per task, run, method configuration and cost. Rows: tagged (``_run``)."""
    groups: dict[tuple[str, str, str], list[tuple[dict, float]]] = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        s = sizes.size_of(r)
        if s is not None and s > 0:
            groups.setdefault((str(r.get("task")), run_of(r), group_of(r)), []).append((r, s))
    out = []
    costs = cost_columns(rows)
    for (task, run, group), members in groups.items():
        method = str(members[0][0].get("method"))
        for c in costs:
            pts = [(s, float(r[c]), bool(evidence.flags(r, c))) for r, s in members if (_num(r.get(c)) or 0) > 0]
            clean = [p for p in pts if not p[2]]
            use = clean if len({s for s, _, _ in clean}) >= MIN_UNFLAGGED else pts
            by_size: dict[float, list[float]] = {}
            for s, v, _ in use:
                by_size.setdefault(s, []).append(v)
            xs = sorted(by_size)
            ys = [float(np.median(by_size[s])) for s in xs]
            got = fit_points(np.log(np.array(xs)), np.array(ys))
            if got is None:
                continue
            law, loo = got
            labels = {str(r.get("label", method)) for r, _ in members}
            out.append(Fit(task, run, group, method, sizes.name_of(method), c, law, loo, xs, ys, len(use),
                           sum(1 for p in use if p[2]), labels.pop() if len(labels) == 1 else ""))
    return out


# --- crossovers: where one method's cost overtakes another's, along the modality dim ---------------------------------
@dataclass
class Crossover:
    task: str
    run: str
    a: str                                    # series (the rows' method labels: 'tfn', 'lmf(rank=4)' …)
    b: str
    cost: str
    lo_d: float                               # the range of uniform modality dims both were run at
    hi_d: float
    at: float | None = None                   # the dim where the fitted costs cross; None: never in the range run
    interval: tuple[float, float] | None = None   # where the two fits' 95% bands overlap around it
    cheaper_below: str = ""                   # the series cheaper below the crossover (or throughout)
    apart: tuple[float, float] | None = None  # the dims where the two fits' 95% bands part (None: nowhere)
    borne_out: bool = True                    # the measured points change order around it as the fits do

    @property
    def found(self) -> bool:
        """A crossover told apart on both sides: inside the range run, each series cheaper beyond the fits'
        uncertainty somewhere on its own side. One side alone is not a crossover: the fits may cross only because a
        law bends where its points are noise (a training step at batch 1 is the optimizer's overhead at every size)."""
        return (self.at is not None and self.borne_out and self.interval[0] > self.lo_d
                and self.interval[1] < self.hi_d)

    @property
    def text(self) -> str:
        rng = f"dims {self.lo_d:g}–{self.hi_d:g}"
        if self.at is None:
            if self.apart is None:
                return (f"not told apart in the range run ({rng}): the fits do not cross, and their 95% bands "
                        f"overlap throughout")
            lo, hi = self.apart
            where = "" if lo <= self.lo_d and hi >= self.hi_d else f" (told apart at d ≈ {lo:.3g}–{hi:.3g})"
            return f"never in the range run ({rng}): {self.cheaper_below} cheaper throughout{where}"
        other = self.b if self.cheaper_below == self.a else self.a
        lo, hi = self.interval
        below, above = lo > self.lo_d, hi < self.hi_d
        if not below and not above:
            return (f"not told apart in the range run ({rng}): the fits cross at d ≈ {self.at:.3g}, but their 95% "
                    f"bands overlap throughout")
        if not self.borne_out:
            return (f"not borne out by the measured points ({rng}): the fits cross at d ≈ {self.at:.3g} "
                    f"({self.cheaper_below} cheaper below), but the costs measured at the sizes run do not change "
                    f"order there")
        if not below:
            return (f"no crossover told apart ({rng}): {other} cheaper above d ≈ {hi:.3g}; below, the two are not "
                    f"told apart (the fits cross at d ≈ {self.at:.3g}, inside their 95% bands)")
        if not above:
            return (f"no crossover told apart ({rng}): {self.cheaper_below} cheaper below d ≈ {lo:.3g}; above, the "
                    f"two are not told apart (the fits cross at d ≈ {self.at:.3g}, inside their 95% bands)")
        return (f"at d ≈ {self.at:.3g} per modality (95% interval {lo:.3g}–{hi:.3g}): {self.cheaper_below} "
                f"cheaper below, {other} above")


@dataclass
class _Series:
    name: str
    fit_by_cost: dict[str, Fit]
    row: dict
    modalities: int
    ds: list[int] = field(default_factory=list)   # the uniform modality dims it was run at
    rows: list[dict] = field(default_factory=list)  # its rows at those dims


def _measured(s: "_Series", cost: str) -> dict[int, float]:
    """The series' cost at each uniform dim it ran, the median of its rows there, flagged ones included: what the rows
    say of which is cheaper, not a figure to fit (a timing flagged noisy still orders two costs 60% apart)."""
    by_d: dict[int, list[float]] = {}
    for r in s.rows:
        v = _num(r.get(cost))
        if v is not None:
            by_d.setdefault(sizes.parse_dims(r.get("dims"))[0], []).append(v)
    return {d: float(np.median(v)) for d, v in by_d.items()}


def _size_at(row: dict, d: float, m: int) -> float | None:
    """The size variable of a row's configuration at a uniform, continuous modality dim d (the closed form)."""
    method = str(row.get("method"))
    if method not in sizes.SIZES:
        return None
    return sizes.SIZES[method].of([d] * m, sizes.rank_of(row))


def _edge(outside, at: float, end: float, steps: int = 60) -> float:
    """Walking from ``at`` towards ``end`` (geometrically), the first d where ``outside`` turns positive, found to
    precision; ``end`` when it never does. ``outside`` takes an array of d (one call for the whole walk)."""
    walk = np.geomspace(at, end, steps)
    vals = outside(walk)
    hit = np.flatnonzero(vals[1:] > 0)
    if not len(hit):
        return float(end)
    j = int(hit[0]) + 1
    if vals[j - 1] >= 0:
        return float(walk[j - 1])
    from scipy.optimize import brentq

    return float(brentq(lambda d: float(outside(np.array([d]))[0]), walk[j - 1], walk[j]))


def crossovers(rows: list[dict], fits: list[Fit]) -> list[Crossover]:
    """For each pair of series of different methods in one task and run, and each cost both have fits for: where
    their fitted costs cross along the uniform modality dim, within the dims both were run at."""
    index = {(f.task, f.run, f.group, f.cost): f for f in fits}
    series: dict[tuple[str, str, str], _Series] = {}
    for r in rows:
        dims = sizes.parse_dims(r.get("dims"))
        if r.get("status") != "ok" or dims is None or str(r.get("method")) not in sizes.SIZES:
            continue
        name, rank = str(r.get("_key", r.get("label"))), sizes.rank_of(r)
        if rank is not None and "rank" not in name:  # one label over a rank sweep: a series per rank
            name += f" (rank {rank})"
        key = (str(r.get("task")), run_of(r), name)
        s = series.get(key)
        if s is None:
            g = group_of(r)
            s = series[key] = _Series(name, {c: f for (t, run, grp, c), f in index.items()
                                             if (t, run, grp) == (key[0], key[1], g)}, r, len(dims))
        if len(set(dims)) == 1:
            s.ds.append(dims[0])
            s.rows.append(r)
    out = []
    keys = sorted(series)
    for i, ka in enumerate(keys):
        for kb in keys[i + 1:]:
            a, b = series[ka], series[kb]
            if ka[:2] != kb[:2] or a.row.get("method") == b.row.get("method") or a.modalities != b.modalities:
                continue
            if not a.ds or not b.ds:
                continue
            lo, hi = max(min(a.ds), min(b.ds)), min(max(a.ds), max(b.ds))
            if lo >= hi:
                continue
            for cost in (c for c in a.fit_by_cost if c in b.fit_by_cost):
                fa, fb = a.fit_by_cost[cost], b.fit_by_cost[cost]

                def diff(d, with_se: bool = False):  # d: an array of uniform dims (the grid in one call)
                    d = np.atleast_1d(np.asarray(d, dtype=float))
                    la, sa = fa.law.log_predict([_size_at(a.row, v, a.modalities) for v in d], new=False)
                    lb, sb = fb.law.log_predict([_size_at(b.row, v, b.modalities) for v in d], new=False)
                    return (la - lb, np.hypot(sa, sb)) if with_se else la - lb

                grid = np.geomspace(lo, hi, 121)
                vals, se = diff(grid, True)
                t = max(fa.law.t, fb.law.t)

                def outside(d):  # > 0 where the two bands no longer overlap
                    v, se = diff(d, True)
                    return np.abs(v) - t * se

                x = Crossover(ka[0], ka[1], a.name, b.name, cost, float(lo), float(hi))
                parted = grid[np.abs(vals) - t * se > 0]
                x.apart = (float(parted[0]), float(parted[-1])) if len(parted) else None
                change = np.flatnonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) < 0)
                if not len(change):
                    x.cheaper_below = a.name if np.median(vals) < 0 else b.name
                    out.append(x)
                    continue
                j = int(change[0])
                from scipy.optimize import brentq  # here: a second's import on a loaded host, when something crosses

                x.at = float(brentq(lambda d: float(diff(d)[0]), grid[j], grid[j + 1]))
                x.cheaper_below = a.name if vals[j] < 0 else b.name
                # the rows at dims both ran: the one cheaper below must be measured so somewhere below, the other
                # somewhere above (a law bent through a noisy point, or extrapolated past a flagged one it left out,
                # can cross where no measurement does)
                sign = -1 if x.cheaper_below == a.name else 1  # the sign of a − b below the crossover
                pa, pb = _measured(a, cost), _measured(b, cost)
                both = sorted(set(pa) & set(pb))
                x.borne_out = (any(sign * (pa[d] - pb[d]) > 0 for d in both if d < x.at)
                               and any(sign * (pa[d] - pb[d]) < 0 for d in both if d > x.at))
                x.interval = (_edge(outside, x.at, lo), _edge(outside, x.at, hi))
                out.append(x)
    return out
