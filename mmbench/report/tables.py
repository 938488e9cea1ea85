"""Comparison tables: for each task and metric, method (× run) by modality dims, with the best value in each column
marked — only where it is better than the runner-up beyond their spread. A column (or table) holding only zeros or
empties is left out. Plain data; markdown.py and html.py only format it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mmbench import evidence
from mmbench import vocabulary as V
from mmbench.store import Run


@dataclass(frozen=True)
class Metric:
    column: str
    title: str
    kind: V.Kind
    better: str                        # vocabulary.LOWER | HIGHER
    spread: str | None = None          # the column holding its ± (std or IQR)


@dataclass
class Cell:
    value: float | None
    text: str
    best: bool = False
    status: str = "ok"


@dataclass
class Table:
    task: str
    metric: Metric
    columns: list[str]                 # dims, as "8x8x8"
    rows: list[str]                    # method label (· run label when several runs)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)


def fmt_num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.2f}G"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def dims_label(dims: str) -> str:
    """'8x8x8' → '8'; non-uniform dims keep their full name ('32x32x64'), never a mean."""
    parts = str(dims).split("x")
    return parts[0] if len(set(parts)) == 1 else str(dims)


def dims_order(rows: list[dict]) -> list[str]:
    """The dims of the rows, smallest first (by the product of the per-modality dims: the size of a tensor fusion)."""
    def size(d: str) -> tuple[float, str]:
        parts = [int(p) for p in str(d).split("x") if p.strip().isdigit()]
        return (math.prod(parts) if parts else math.inf, str(d))

    return sorted({str(r.get("dims", "?")) for r in rows}, key=size)


def batch_sizes(rows: list[dict]) -> list[int]:
    return V.batch_sizes({k for r in rows for k in r})


SCORE_ORDER = {"acc": 0, "f1": 1}  # then every other score by name; robustness after the costs


def metrics(rows: list[dict]) -> list[Metric]:
    """The metrics present in the rows (every tabled term of the vocabulary, every score), in reading order: scores,
    counts, timings and memory peaks per batch size, robustness."""
    present = {k for r in rows for k in r}
    cols = {k: c for k in present if (c := V.column(k, present)) is not None and c.term.tabled}

    def metric(c: V.Column, title: str) -> Metric:
        return Metric(c.column, title, c.kind, c.better, c.spread)

    scores = sorted((c for c in cols.values() if c.term.kind == V.SCORE),
                    key=lambda c: (SCORE_ORDER.get(c.term.name, 2), c.term.name))
    out = [metric(c, f"Test {c.term.title} (mean ± std over seeds)") for c in scores
           if not c.term.name.startswith(V.ROBUSTNESS)]
    out += [metric(cols[t.column()], t.title) for t in V.terms(V.COUNT) if t.column() in cols]
    batches = batch_sizes(rows)
    for kind, unit in ((V.TIMING, f"median {V.KINDS[V.TIMING].unit} ± IQR"),
                       (V.INSTRUCTIONS, f"{V.KINDS[V.INSTRUCTIONS].unit}, valgrind"), (V.MEMORY, V.KINDS[V.MEMORY].unit)):
        out += [metric(cols[t.column(b)], f"{t.title}, batch {b} ({unit})") for b in batches for t in V.terms(kind)
                if t.column(b) in cols]
    # robustness scores (the robustness measure's rob_<modality>_{auc,rel,missing}), titled by what they average
    rob_metric = next((r["rob_metric"] for r in rows if isinstance(r.get("rob_metric"), str)), "score")
    for c in sorted((c for c in scores if c.term.name.startswith(V.ROBUSTNESS)), key=lambda c: c.term.name):
        name = c.term.name
        what = {"auc": f"mean {rob_metric} over noise levels",
                "rel": f"mean {rob_metric} over noise levels ÷ clean {rob_metric}",
                "missing": f"{rob_metric} with the modality zeroed"}.get(name.rsplit("_", 1)[-1], name)
        modality = name[len(V.ROBUSTNESS):].rsplit("_", 1)[0]
        out.append(metric(c, f"Robustness, modality {modality}: {what} (mean ± std over seeds)"))
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _spread_text(v: Any, fmt: str) -> str:
    return format(v, fmt) if _is_num(v) else "—"  # one seed has no spread: "—", never "0.000"


def _cell_text(r: dict, m: Metric) -> str:
    """The value in its kind's format (compact for counts), with its spread, and ⚠ on a flagged timing."""
    v = r[m.column]
    text = fmt_num(v) if m.kind.cell is None else format(v, m.kind.cell)
    if m.spread and m.kind.spread_cell:
        text += f" ± {_spread_text(r.get(m.spread), m.kind.spread_cell)}"
    if evidence.flags(r, m.column):  # noisy, contended, throttled …
        text += " ⚠"
    return text


def _spread(r: dict, m: Metric) -> float:
    """How far a cell's value may move by chance: the std over seeds or the test split's standard error (the
    larger), a latency's IQR; exact counts have none."""
    out = [r.get(m.spread)] if m.spread else []
    se = V.column(m.column).se
    if se:
        out.append(r.get(se))
    return max([float(v) for v in out if _is_num(v)] or [0.0])


def tagged_rows(runs: list[Run]) -> list[dict]:
    """Every run's rows, with ``_run`` (its label) and ``_key`` (method label, with the run when there are several,
    and with the environment when one run's rows were measured on several: a cluster's H100 and A100 nodes), and
    ``_env`` (then the row's environment fingerprint: best timings are marked within one environment)."""
    from mmbench.history import row_fingerprint

    many = len(runs) > 1
    out = []
    for run in runs:
        envs = {r.get("env_fingerprint") for r in run.rows}
        for r in run.rows:
            key = f"{r.get('label', r.get('method', '?'))} · {run.label}" if many else r.get("label", r.get("method", "?"))
            if len(envs) > 1:
                key += f" · {r.get('gpu_name') or r.get('device', '?')} {str(r.get('env_fingerprint') or '?')[:6]}"
            out.append({**r, "_run": run.label, "_key": key,
                        "_env": row_fingerprint(run.env, r) if len(envs) > 1 else None})
    return out


def tasks(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("task", "?") for r in rows))


def build_tables(rows: list[dict]) -> list[Table]:
    """All tables of tagged rows, grouped by task; a table with nothing but zeros and empties is left out."""
    tables = []
    for task in tasks(rows):
        trows = [r for r in rows if r.get("task", "?") == task]
        for m in metrics(trows):
            t = _table(task, m, trows)
            if t.columns:
                tables.append(t)
    return tables


def _table(task: str, m: Metric, rows: list[dict]) -> Table:
    t = Table(task, m, columns=dims_order(rows),
              rows=list(dict.fromkeys(r["_key"] for r in rows)))
    spreads: dict[int, float] = {}
    for r in rows:
        status = r.get("status", "?")
        if status == "ok" and _is_num(r.get(m.column)):
            cell = Cell(float(r[m.column]), _cell_text(r, m))
            spreads[id(cell)] = _spread(r, m)
        elif status != "ok":
            cell = Cell(None, status, status=status)
        else:
            cell = Cell(None, "—")
        t.cells[(r["_key"], r.get("dims", "?"))] = cell
    # a column of zeros and empties says nothing (failures are listed below the tables)
    t.columns = [d for d in t.columns if any(c.value for (_, dd), c in t.cells.items() if dd == d)]
    env = {r["_key"]: r.get("_env") for r in rows}
    timing = m.kind.machine
    for col in t.columns:  # ★ the best of a column, when it is better than the runner-up beyond both spreads;
        # timings and memory within one environment only (an H100 row is not "better" than an A100 row)
        groups: dict = {}
        for (k, d), c in t.cells.items():
            if d == col and c.value is not None:
                groups.setdefault(env.get(k) if timing else None, []).append(c)
        for group in groups.values():
            vals = sorted(group, key=lambda c: c.value if m.better == V.LOWER else -c.value)
            if len(vals) < 2:
                continue
            best, second = vals[0], vals[1]
            vals[0].best = abs(best.value - second.value) > max(spreads[id(best)], spreads[id(second)])
    return t


def failed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") != "ok"]
