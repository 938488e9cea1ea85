"""Comparison tables: for each task and metric, method (× run) by modality dims, with the best value in each column
marked — only where it is better than the runner-up beyond their spread. A column (or table) holding only zeros or
empties is left out. Plain data; markdown.py and html.py only format it."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from mmbench import evidence
from mmbench.store import Run

LOWER, HIGHER = "lower", "higher"


@dataclass(frozen=True)
class Metric:
    column: str
    title: str
    better: str                        # LOWER | HIGHER
    spread: str | None = None          # the column holding its ± (std or IQR)
    flag: str | None = None            # a boolean column that marks the value as noisy


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
    return sorted({int(m.group(1)) for r in rows for k in r if (m := _BATCHED.fullmatch(k))})


# Every per-batch-size column the measures write: forward latency (whole model, fusion layer, CUDA-graph replay),
# a training step, and peak memory (forward and training step; allocator and reserved pool on CUDA).
_BATCHED = re.compile(r"(?:(?:fusion_)?(?:graph_)?latency_ms|train_step_ms|(?:train_)?peak_(?:mem|alloc|reserved)_mib)"
                      r"_b(\d+)")


def metrics(rows: list[dict]) -> list[Metric]:
    """The metrics present in the rows, in reading order."""
    present = {k for r in rows for k in r}
    out: list[Metric] = []
    seed_metrics = [k[:-5] for k in present if k.endswith("_mean") and f"{k[:-5]}_std" in present]
    order = {"acc": 0, "f1": 1}
    for name in sorted((n for n in seed_metrics if not n.startswith("rob_")), key=lambda n: (order.get(n, 2), n)):
        out.append(Metric(f"{name}_mean", f"Test {SEED_TITLES.get(name, name)} (mean ± std over seeds)",
                          seed_metric_better(name), f"{name}_std"))
    for col, title in (("params", "Parameters, whole model"), ("fusion_params", "Parameters, fusion layer"),
                       ("flops", "FLOPs per sample, whole model (2 × multiply-adds)"),
                       ("fusion_flops", "FLOPs per sample, fusion layer"),
                       ("encoder_flops", "FLOPs per sample, encoders"),
                       ("train_flops", "FLOPs per sample, training step (forward + backward)"),
                       ("fusion_train_flops", "FLOPs per sample, training step, fusion layer")):
        if col in present:
            out.append(Metric(col, title, LOWER))
    batches = batch_sizes(rows)
    for b in batches:
        for name, what in (("fusion_latency", "Forward latency, fusion layer"), ("latency", "Forward latency, whole model"),
                           ("fusion_graph_latency", "CUDA-graph replay latency, fusion layer"),
                           ("graph_latency", "CUDA-graph replay latency, whole model"),
                           ("train_step", "Training step latency, whole model")):
            if f"{name}_ms_b{b}" in present:
                out.append(Metric(f"{name}_ms_b{b}", f"{what}, batch {b} (median ms ± IQR)", LOWER,
                                  f"{name}_iqr_ms_b{b}", f"{name}_noisy_b{b}"))
    for b in batches:
        for name, what in (("peak_mem_mib", "Peak forward memory above the baseline"),
                           ("peak_alloc_mib", "Peak allocated memory, forward (weights and inputs included)"),
                           ("peak_reserved_mib", "Peak reserved memory, forward"),
                           ("train_peak_mem_mib", "Peak training-step memory above the baseline")):
            if f"{name}_b{b}" in present:
                out.append(Metric(f"{name}_b{b}", f"{what}, batch {b} (MiB)", LOWER))
    # Robustness (the robustness measure's rob_<modality>_{auc,rel,missing}, per seed → mean ± std): higher is better.
    rob_metric = next((r["rob_metric"] for r in rows if isinstance(r.get("rob_metric"), str)), "score")
    for name in sorted(n for n in seed_metrics if n.startswith("rob_")):
        what = {"auc": f"mean {rob_metric} over noise levels",
                "rel": f"mean {rob_metric} over noise levels ÷ clean {rob_metric}",
                "missing": f"{rob_metric} with the modality zeroed"}.get(name.rsplit("_", 1)[-1], name)
        modality = name[4:].rsplit("_", 1)[0]
        out.append(Metric(f"{name}_mean", f"Robustness, modality {modality}: {what} (mean ± std over seeds)", HIGHER,
                          f"{name}_std"))
    for col in sorted(k for k in present if k.startswith(("robust", "rob_")) and not k.endswith(("_mean", "_std"))
                      and _numeric_somewhere(rows, k)):
        out.append(Metric(col, f"Robustness: {col}", HIGHER))
    return out


SEED_TITLES = {"acc": "accuracy", "f1": "macro-F1", "mae": "mean absolute error", "mse": "mean squared error",
               "corr": "Pearson correlation", "acc2": "binary accuracy (acc2)", "acc7": "7-class accuracy (acc7)"}


def seed_metric_better(name: str) -> str:
    """Errors (mae, mse …) are better lower; scores (accuracy, F1, correlation, recall) higher."""
    return LOWER if name.split("_")[0] in ("mae", "mse", "loss", "rmse") else HIGHER


def _numeric_somewhere(rows: list[dict], col: str) -> bool:
    return any(_is_num(r.get(col)) for r in rows)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _spread_text(v: Any, fmt: str) -> str:
    return format(v, fmt) if _is_num(v) else "—"  # one seed has no spread: "—", never "0.000"


def _cell_text(r: dict, m: Metric) -> str:
    v = r[m.column]
    if m.column.endswith("_mean") and m.spread:
        text = f"{v:.3f} ± {_spread_text(r.get(m.spread), '.3f')}"
    elif m.spread and "_ms_b" in m.column:
        text = f"{v:.4g} ± {_spread_text(r.get(m.spread), '.2g')}"
    elif "_mib_b" in m.column:
        text = f"{v:.2f}"
    elif m.column.startswith("robust"):
        text = f"{v:.3f}"
    else:
        text = fmt_num(v)
    if (m.flag and r.get(m.flag)) or evidence.flags(r, m.column):  # noisy, contended, throttled …
        text += " ⚠"
    return text


def _spread(r: dict, m: Metric) -> float:
    """How far a cell's value may move by chance: the std over seeds or the test split's standard error (the
    larger), a latency's IQR; exact counts have none."""
    out = [r.get(m.spread)] if m.spread else []
    if m.column.endswith("_mean"):
        out.append(r.get(f"{m.column[:-5]}_se"))
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
    timing = "_ms_b" in m.column or "_mib_b" in m.column
    for col in t.columns:  # ★ the best of a column, when it is better than the runner-up beyond both spreads;
        # timings and memory within one environment only (an H100 row is not "better" than an A100 row)
        groups: dict = {}
        for (k, d), c in t.cells.items():
            if d == col and c.value is not None:
                groups.setdefault(env.get(k) if timing else None, []).append(c)
        for group in groups.values():
            vals = sorted(group, key=lambda c: c.value if m.better == LOWER else -c.value)
            if len(vals) < 2:
                continue
            best, second = vals[0], vals[1]
            vals[0].best = abs(best.value - second.value) > max(spreads[id(best)], spreads[id(second)])
    return t


def failed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") != "ok"]
