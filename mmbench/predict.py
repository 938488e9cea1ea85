"""What configurations not run would cost: each trial of a suite that a run does not hold, its latency,
training-step time and memory estimated from the run's scaling laws (scaling.py), each with its 95% prediction
interval and marked predicted (extrapolated beyond the sizes fitted). The fits come from the run's rows; a trial is
matched to its method's fit by task, method and its other hyperparameters, and to the run's rows by task, label and
dims (not by id: a run measured on another device is still the run to predict from)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench import scaling, sizes
from mmbench import vocabulary as V
from mmbench.errors import UserError


@dataclass
class Estimate:
    cost: str
    value: float
    low: float
    high: float
    extrapolated: bool       # beyond the sizes the law was fitted on
    measured: float | None = None   # what the run measured for this trial (predict --all), else None
    where: str = ""          # the place whose law it is, where the run's rows span several (a cluster's nodes)

    @property
    def key(self) -> str:
        return self.cost + (f" @ {self.where}" if self.where else "")


@dataclass
class Prediction:
    task: str
    label: str
    method: str
    dims: str
    size: float | None
    size_name: str
    estimates: list[Estimate] = field(default_factory=list)
    why_none: str = ""       # no estimate: why

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "label": self.label, "method": self.method, "dims": self.dims,
                "size_variable": self.size_name, "size": self.size, "predicted": True,
                "estimates": {e.key: {"value": e.value, "low": e.low, "high": e.high, "extrapolated": e.extrapolated,
                                       **({"measured": e.measured} if e.measured is not None else {}),
                                       **({"where": e.where} if e.where else {})}
                              for e in self.estimates}, **({"no_estimate": self.why_none} if self.why_none else {})}


def predict_rows(configs: list[dict[str, Any]], fits: list[scaling.Fit]) -> list[Prediction]:
    """Estimates for configurations given as rows (task, method, label, dims, hparams / rank), from ``fits``."""
    by_group: dict[tuple[str, str], list[scaling.Fit]] = {}
    for f in fits:
        by_group.setdefault((f.task, f.group), []).append(f)
    out = []
    for c in configs:
        method = str(c.get("method"))
        size = sizes.size_of(c) if method in sizes.SIZES else None
        p = Prediction(str(c.get("task")), str(c.get("label")), method, str(c.get("dims")), size, sizes.name_of(method))
        mine = by_group.get((p.task, scaling.group_of(c)), [])
        if method not in sizes.SIZES:
            p.why_none = f"'{method}' has no size variable in mmbench/sizes.py (its FLOPs are in no row)"
        elif size is None:
            p.why_none = "its size cannot be computed from its dims and rank"
        elif not mine:
            p.why_none = f"no scaling law for {scaling.group_of(c)} on {p.task} in the run (it needs {scaling.MIN_SIZES} sizes)"
        several = len({f.run for f in mine}) > 1  # one law per place: each estimate says whose it is
        for f in mine if size is not None else []:
            v, lo, hi = f.predict(size)
            m = c.get(f.cost) if not several or scaling.run_of(c) == f.run else None
            p.estimates.append(Estimate(f.cost, v, lo, hi, not min(f.sizes) <= size <= max(f.sizes),
                                        float(m) if isinstance(m, (int, float)) and not isinstance(m, bool) else None,
                                        f.run if several else ""))
        out.append(p)
    return out


def predict_suite(suite_path: str | Path, run_dir: str | Path, *, quick: bool = False,
                  every: bool = False) -> list[Prediction]:
    """The suite's trials that ``run_dir`` does not hold (``every``: all of them), predicted from the run's fits."""
    from mmbench.report.tables import tagged_rows
    from mmbench.run import prepare
    from mmbench.store import load_runs
    from mmbench.suite import load_suite

    runs = load_runs([run_dir])
    rows = tagged_rows(runs)
    fits = scaling.fit_rows(rows)
    if not fits:
        raise UserError(f"no scaling law can be fitted from this run: no method has costs at {scaling.MIN_SIZES} "
                        "sizes or more", file=str(run_dir))
    prepared = prepare(load_suite(suite_path, quick=quick))
    have = {(r.get("task"), r.get("label"), r.get("dims")): r for r in rows if r.get("status") == "ok"}
    configs = []
    for t in prepared.trials:
        c = {"task": t.task_label, "method": t.method, "label": t.label, "dims": "x".join(map(str, t.dims)),
             "hparams": t.hparams, "rank": t.rank, "_run": runs[0].label}
        held = have.get((c["task"], c["label"], c["dims"]))
        if held is None:
            configs.append(c)
        elif every:  # its measured costs ride along, to be set beside the estimates
            configs.append({**{k: v for k, v in held.items() if V.column(k) is not None}, **c})
    return predict_rows(configs, fits)
