"""The figures people look for, drawn with matplotlib (Agg, no display) from tagged result rows.

Each builder returns a Figure, or None when the rows hold nothing to draw (no accuracy, no ranks …), so a report
shows only the plots its run can support. Embedding: SVG text for HTML (glyphs as paths: self-contained), PNG files
for markdown.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mmbench.report.tables import batch_sizes  # noqa: E402

plt.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "mmbench", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                     "figure.dpi": 100, "savefig.bbox": "tight"})
_MARKERS = "o^sDvP*Xh<>"


@dataclass
class Plot:
    key: str         # file stem: figures/<task>-<key>.png
    title: str
    task: str
    fig: Figure


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def mean_dim(dims: str) -> float:
    parts = [int(p) for p in str(dims).split("x") if p.strip().isdigit()]
    return sum(parts) / len(parts) if parts else float("nan")


def _ok(rows: list[dict], *cols: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and all(_num(r.get(c)) is not None for c in cols)]


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["_key"], []).append(r)
    return out


def _style(i: int, run_index: int) -> dict:
    cmap = plt.get_cmap("tab10" if i < 10 else "tab20")
    return {"color": cmap(i % cmap.N), "marker": _MARKERS[run_index % len(_MARKERS)]}


def _new(title: str, xlabel: str, ylabel: str, *, logx=False, logy=False) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return fig, ax


def _legend(ax, n: int) -> None:
    if n == 0:
        return
    if n <= 8:
        ax.legend(fontsize=7, loc="best")
    else:  # many series: outside the axes, in columns, rather than over the data
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + n // 25, frameon=False)


def _ticks(ax, ticks: list[float]) -> None:
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another with lower-or-equal cost and higher-or-equal accuracy (cost ascending)."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _run_index(rows: list[dict]) -> dict[str, int]:
    return {k: i for i, k in enumerate(dict.fromkeys(r["_run"] for r in rows))}


def accuracy_vs(rows: list[dict], cost: str, xlabel: str, title: str) -> Figure | None:
    pts = _ok(rows, "acc_mean", cost)
    if len(pts) < 2:
        return None
    fig, ax = _new(title, xlabel, "test accuracy", logx=True)
    runs = _run_index(rows)
    series = _series(pts)
    for i, (key, rs) in enumerate(series.items()):
        ax.scatter([r[cost] for r in rs], [r["acc_mean"] for r in rs], s=22, label=key, zorder=3,
                   **_style(i, runs[rs[0]["_run"]]))
    front = pareto_front([(float(r[cost]), float(r["acc_mean"])) for r in pts])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1.2, alpha=0.7,
            label="Pareto front", zorder=2)
    bayes = [r.get("bayes_accuracy") for r in pts if _num(r.get("bayes_accuracy")) is not None]
    if bayes:
        ax.axhline(bayes[0], color="grey", ls="--", lw=0.8, label="Bayes-optimal")
    _legend(ax, len(series) + 1 + bool(bayes))
    return fig


def vs_dim(rows: list[dict], col: str, ylabel: str, title: str) -> Figure | None:
    pts = _ok(rows, col)
    if len({r.get("dims") for r in pts}) < 2:
        return None
    fig, ax = _new(title, "modality dim (mean over modalities)", ylabel, logx=True, logy=True)
    runs = _run_index(rows)
    series = _series(pts)
    for i, (key, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: mean_dim(r.get("dims")))
        ax.plot([mean_dim(r.get("dims")) for r in rs], [r[col] for r in rs], label=key, lw=1, ms=4,
                **_style(i, runs[rs[0]["_run"]]))
    ticks = sorted({mean_dim(r.get("dims")) for r in pts})
    if len(ticks) <= 12:  # label the dims measured, not powers of ten
        _ticks(ax, ticks)
    _legend(ax, len(series))
    return fig


def params_vs_rank(rows: list[dict]) -> Figure | None:
    pts = [r for r in _ok(rows, "fusion_params") if _num(r.get("rank")) is not None]
    groups: dict[str, list[dict]] = {}
    for r in pts:
        groups.setdefault(f"{r.get('method')} · dims {r.get('dims')}"
                          + (f" · {r['_run']}" if len(_run_index(rows)) > 1 else ""), []).append(r)
    groups = {k: v for k, v in groups.items() if len({r["rank"] for r in v}) >= 2}
    if not groups:
        return None
    fig, ax = _new("Fusion-layer parameters vs rank", "rank", "parameters (fusion layer)", logy=True)
    for i, (key, rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r["rank"])
        ax.plot([r["rank"] for r in rs], [r["fusion_params"] for r in rs], label=key, lw=1, ms=4, **_style(i, 0))
    _legend(ax, len(groups))
    return fig


def memory_vs_batch(rows: list[dict]) -> Figure | None:
    batches = [b for b in batch_sizes(rows) if any(_num(r.get(f"peak_mem_mib_b{b}")) for r in rows)]
    if len(batches) < 2:  # fewer than two batch sizes with memory above zero: no curve to draw
        return None
    ok = [r for r in rows if r.get("status") == "ok"]
    largest: dict[str, dict] = {}  # each method at its largest dims: one line per method, not per configuration
    for r in ok:
        k = r["_key"]
        if k not in largest or mean_dim(r.get("dims")) > mean_dim(largest[k].get("dims")):
            largest[k] = r
    fig, ax = _new("Peak forward memory vs batch size (each method at its largest dims)", "batch size",
                   "peak memory (MiB)", logx=True)
    runs = _run_index(rows)
    n = 0
    for i, (key, r) in enumerate(largest.items()):
        xy = [(b, r[f"peak_mem_mib_b{b}"]) for b in batches if _num(r.get(f"peak_mem_mib_b{b}")) is not None]
        if xy:
            ax.plot(*zip(*xy), label=f"{key} (dims {r.get('dims')})", lw=1, ms=4, **_style(i, runs[r["_run"]]))
            n += 1
    if not n:
        return None
    _ticks(ax, batches)
    _legend(ax, n)
    return fig


def robustness_curves(rows: list[dict], samples: dict[str, dict]) -> list[tuple[str, Figure]]:
    """One figure per perturbation found in the raw samples' ``robustness`` series (see README), lines per method."""
    curves: dict[str, list[tuple[str, str, list[float], list[float]]]] = {}
    for r in rows:
        raw = samples.get((r["_run"], r.get("trial_id")), {}).get("robustness")
        if r.get("status") != "ok" or not isinstance(raw, dict):
            continue
        for name, series in raw.items():
            xy = _xy(series)
            if xy:
                curves.setdefault(str(name), []).append((r["_key"], r["_run"], *xy))
    figs = []
    for name, lines in curves.items():
        fig, ax = _new(f"Robustness: {name}", "perturbation level", "test accuracy")
        runs = {k: i for i, k in enumerate(dict.fromkeys(run for _, run, _, _ in lines))}
        keys = list(dict.fromkeys(k for k, *_ in lines))
        for key, run, xs, ys in lines:
            ax.plot(xs, ys, lw=1, ms=3, label=key, **_style(keys.index(key), runs[run]))
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))  # several dims per method: one legend entry each
        if len(uniq) <= 8:
            ax.legend(uniq.values(), uniq.keys(), fontsize=7)
        else:
            ax.legend(uniq.values(), uniq.keys(), fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1),
                      frameon=False)
        figs.append((name, fig))
    return figs


def _xy(series: Any) -> tuple[list[float], list[float]] | None:
    """A robustness series: {"levels"|"x": [...], "acc"|"accuracy"|"y": [...]}, or [[x, y], ...]."""
    if isinstance(series, dict):
        xs = next((series[k] for k in ("levels", "x", "noise") if isinstance(series.get(k), list)), None)
        ys = next((series[k] for k in ("acc", "accuracy", "y", "acc_mean") if isinstance(series.get(k), list)), None)
    elif isinstance(series, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in series):
        xs, ys = [p[0] for p in series], [p[1] for p in series]
    else:
        return None
    if not xs or not ys or len(xs) != len(ys):
        return None
    if any(_num(v) is None for v in (*xs, *ys)):
        return None
    return list(map(float, xs)), list(map(float, ys))


def history_trend(trend: dict[str, list[tuple[str, float]]], metric: str, title: str) -> Figure | None:
    """Lines of one metric over runs (x: run time order), one per trial."""
    if not trend or max(len(v) for v in trend.values()) < 2:
        return None
    runs = sorted({t for pts in trend.values() for t, _ in pts})
    pos = {t: i for i, t in enumerate(runs)}
    fig, ax = _new(title, "run (oldest → newest)", metric, logy=True)
    for i, (key, pts) in enumerate(trend.items()):
        ax.plot([pos[t] for t, _ in pts], [v for _, v in pts], lw=1, ms=3, label=key, **_style(i, 0))
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([t[:16].replace("T", " ") for t in runs], rotation=30, ha="right", fontsize=6)
    _legend(ax, len(trend))
    return fig


def task_plots(rows: list[dict], samples: dict[tuple[str, str], dict]) -> list[Plot]:
    """Every plot the rows of one task support."""
    task = rows[0].get("task", "?") if rows else "?"
    batches = batch_sizes(rows)
    out: list[Plot] = []

    def add(key: str, title: str, make: Callable[[], Figure | None]) -> None:
        fig = make()
        if fig is not None:
            out.append(Plot(key, title, task, fig))

    add("acc-vs-params", "Accuracy vs parameters",
        lambda: accuracy_vs(rows, "params", "parameters, whole model", "Accuracy vs parameters"))
    if batches:
        b = batches[0]
        add("acc-vs-latency", "Accuracy vs latency",
            lambda: accuracy_vs(rows, f"latency_ms_b{b}", f"latency, whole model, batch {b} (ms)",
                                f"Accuracy vs latency (batch {b})"))
        b = batches[-1]
        add("latency-vs-dim", "Latency vs modality dim",
            lambda: vs_dim(rows, f"fusion_latency_ms_b{b}", "latency (ms)",
                           f"Fusion-layer latency vs modality dim (batch {b})"))
    add("flops-vs-dim", "FLOPs vs modality dim",
        lambda: vs_dim(rows, "fusion_flops", "FLOPs per sample", "Fusion-layer FLOPs vs modality dim"))
    add("params-vs-rank", "Parameters vs rank", lambda: params_vs_rank(rows))
    add("memory-vs-batch", "Memory vs batch size", lambda: memory_vs_batch(rows))
    for name, fig in robustness_curves(rows, samples):
        out.append(Plot(f"robustness-{_slug(name)}", f"Robustness: {name}", task, fig))
    return out


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)[:60]


def svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def save_png(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=110)
