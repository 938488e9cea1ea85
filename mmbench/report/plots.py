"""The figures people look for, drawn with matplotlib (Agg, no display) from tagged result rows.

Each builder returns a Figure, or None when the rows hold nothing to draw (no accuracy, no ranks …), so a report
shows only the plots its run can support. Each figure is drawn once, to PNG, which both the HTML page (embedded as
base64) and the markdown report (a file beside it) use.
"""
from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (not pyplot: half a second of import for nothing we use)

from mmbench import evidence  # noqa: E402
from mmbench import vocabulary as V  # noqa: E402
from mmbench.report.tables import batch_sizes, dims_label, dims_order  # noqa: E402

matplotlib.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                     "figure.dpi": 100})
_MARKERS = "o^sDvP*Xh<>"
PNG_DPI = 120
FIGSIZE = (6.4, 4.0)
MARGINS = dict(left=0.12, right=0.97, bottom=0.12, top=0.91)


@dataclass
class Plot:
    key: str         # file stem: figures/<task>-<key>.png
    title: str
    task: str
    fig: Figure
    _png: bytes | None = None

    def png(self) -> bytes:
        """Drawn once (drawing is most of a report's time), then shared by the HTML page and the PNG file."""
        if self._png is None:
            buf = io.BytesIO()
            self.fig.savefig(buf, format="png", dpi=PNG_DPI)
            self._png = buf.getvalue()
        return self._png


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _ok(rows: list[dict], *cols: str) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and all(_num(r.get(c)) is not None for c in cols)]


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["_key"], []).append(r)
    return out


def _style(i: int, run_index: int) -> dict:
    cmap = matplotlib.colormaps["tab10" if i < 10 else "tab20"]
    return {"color": cmap(i % cmap.N), "marker": _MARKERS[run_index % len(_MARKERS)]}


MAX_LEGEND = 12  # more series than this: colour and legend by method, not by configuration


class _Palette:
    """Colour (and legend entry) per series — or per method when there are too many series to tell apart; the
    marker tells runs apart."""

    def __init__(self, rows: list[dict]):
        self.runs = _run_index(rows)
        self.by_method = len({r["_key"] for r in rows}) > MAX_LEGEND
        self.index = {g: i for i, g in enumerate(dict.fromkeys(self.group(r) for r in rows))}
        self.seen: set[str] = set()

    def group(self, r: dict) -> str:
        if not self.by_method:
            return r["_key"]
        return str(r.get("method")) + (f" · {r['_run']}" if len(self.runs) > 1 else "")

    def __call__(self, r: dict, label: str | None = None) -> dict:
        g = self.group(r)
        shown = label if label is not None and not self.by_method else g
        first = shown not in self.seen
        self.seen.add(shown)
        return {"label": shown if first else "_nolegend_", **_style(self.index[g], self.runs[r["_run"]])}

    @property
    def entries(self) -> int:
        return len(self.seen)


def _new(title: str, xlabel: str, ylabel: str, *, logx=False, logy=False) -> tuple[Figure, Any]:
    # Fixed margins, not a layout engine: constrained layout measured every tick label's extent before each draw,
    # half of a report's drawing time. One axes per figure, so the margins are known; _legend widens the right one.
    fig = Figure(figsize=FIGSIZE)
    fig.subplots_adjust(**MARGINS)
    ax = fig.add_subplot()
    ax.set_title(title, y=1.0, pad=6)  # placed, not searched for: the search measures the x axis before each draw
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
    else:  # many series: outside the axes, in columns, rather than over the data; the axes give it room
        ncol = 1 + n // 25
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol, frameon=False)
        labels = [t for t in ax.get_legend_handles_labels()[1] if not t.startswith("_")]
        width_pt = ncol * (max(map(len, labels), default=8) * 6 * 0.55 + 28)  # 6 pt text, ~0.55 em a character
        ax.figure.subplots_adjust(right=max(0.45, MARGINS["right"] - width_pt / 72 / FIGSIZE[0]))


def _flagged(ax, points: list[tuple[float, float, dict, str]]) -> int:
    """Ring the points whose timing is flagged (noisy, contended, host_slow …: no evidence of a cost), as the tables
    mark them ⚠. ``points``: (x, y, row, timing column). Returns the legend entries added (0 or 1)."""
    hit = [(x, y) for x, y, r, col in points if evidence.flags(r, col)]
    if not hit:
        return 0
    ax.scatter(*zip(*hit), s=110, facecolors="none", edgecolors="#d62728", linewidths=1.3, zorder=4,
               label="flagged timing (see the table's ⚠)")
    return 1


def acc_err(r: dict) -> float:
    """An accuracy's error bar: the larger of its std over seeds and the test split's standard error (0: neither)."""
    return max(_num(r.get("acc_std")) or 0.0, _num(r.get("acc_se")) or 0.0)


def iqr(r: dict, col: str) -> float:
    """A timing's IQR (0 for anything else, or where none was written)."""
    c = V.timing(col)
    return (_num(r.get(c.spread)) or 0.0) if c is not None else 0.0


def _bars(ax, xs, ys, err, colors, *, horizontal=False, log=False) -> None:
    """Error bars as one line collection (a 500-point figure stays fast): ± err around each point, or, a timing's
    IQR, its length centred on the median (on a log axis kept above 0)."""
    # on a log axis a bar longer than its value below it is mirrored (y²/(y+e): as far down as up, in log)
    lo = [y * y / (y + e) if log and y - e <= 0 else y - e for y, e in zip(ys, err)]
    hi = [y + e for y, e in zip(ys, err)]
    keep = [i for i, e in enumerate(err) if e > 0]
    if not keep:
        return
    pick = lambda v: [v[i] for i in keep]  # noqa: E731
    draw = ax.hlines if horizontal else ax.vlines
    draw(pick(xs), pick(lo), pick(hi), colors=pick(colors), lw=0.9, alpha=0.7, zorder=2)


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
    """A point per configuration: colour per method, marker per modality dims (and the dims written beside each
    point when there are few), the Pareto front, the ceiling with its standard error."""
    pts = _ok(rows, "acc_mean", cost)
    if len(pts) < 2:
        return None
    fig, ax = _new(title, xlabel, "test accuracy", logx=True)
    pal = _Palette(pts)
    order = dims_order(pts)
    colour = {}
    for key, rs in _series(pts).items():  # the legend's colour key; points are drawn once per dims (fast)
        style = pal(rs[0])
        colour[key] = style["color"]
        ax.scatter([], [], s=24, color=style["color"], marker="o", label=style["label"])
    for j, dims in enumerate(order):
        group = [r for r in pts if str(r.get("dims")) == dims]
        ax.scatter([r[cost] for r in group], [r["acc_mean"] for r in group], s=24, zorder=3,
                   c=[colour[r["_key"]] for r in group], marker=_MARKERS[j % len(_MARKERS)])
    # uncertainty drawn: accuracy ± max(seed std, test SE); a timing cost its IQR
    xs, ys, cs = [r[cost] for r in pts], [r["acc_mean"] for r in pts], [colour[r["_key"]] for r in pts]
    _bars(ax, xs, ys, [acc_err(r) for r in pts], cs)
    _bars(ax, ys, xs, [iqr(r, cost) / 2 for r in pts], cs, horizontal=True, log=True)
    if len(pts) <= 40:
        for r in pts:
            ax.annotate(dims_label(r.get("dims")), (r[cost], r["acc_mean"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points", color="#555")
    key = 1 < len(order) <= MAX_LEGEND
    for i, d in enumerate(order if key else []):  # the marker key: which dims each marker is
        ax.scatter([], [], marker=_MARKERS[i % len(_MARKERS)], color="grey", s=24, label=f"dims {dims_label(d)}")
    front = pareto_front([(float(r[cost]), float(r["acc_mean"])) for r in pts])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1.2, alpha=0.7,
            label="Pareto front", zorder=2)
    flagged = _flagged(ax, [(r[cost], r["acc_mean"], r, cost) for r in pts])
    bayes = next((r for r in pts if _num(r.get("bayes_accuracy")) is not None), None)
    if bayes is not None:
        b, se = bayes["bayes_accuracy"], _num(bayes.get("bayes_accuracy_se")) or 0.0
        ax.axhline(b, color="grey", ls="--", lw=0.8, label="Bayes-optimal (test split)")
        if se:
            ax.axhspan(b - se, b + se, color="grey", alpha=0.15, lw=0)
    _legend(ax, pal.entries + 1 + (bayes is not None) + (len(order) if key else 0) + flagged)
    return fig


def vs_dim(rows: list[dict], col: str, ylabel: str, title: str) -> Figure | None:
    """A line per method over its modality dims, smallest first, on a log y axis; each tick names its dims
    ('32x32x64' where they differ per modality), so a non-uniform configuration is never placed at its mean."""
    pts = _ok(rows, col)
    order = dims_order(pts)
    if len(order) < 2:
        return None
    fig, ax = _new(title, "modality dims (per modality, by size)", ylabel, logy=True)
    pal = _Palette(pts)
    pos = {d: i for i, d in enumerate(order)}
    for key, rs in _series(pts).items():
        rs = sorted(rs, key=lambda r: pos[str(r.get("dims"))])
        style = pal(rs[0])
        xs, ys = [pos[str(r.get("dims"))] for r in rs], [r[col] for r in rs]
        ax.plot(xs, ys, lw=1, ms=4, **style)
        _bars(ax, xs, ys, [iqr(r, col) / 2 for r in rs], [style["color"]] * len(rs), log=True)
    flagged = _flagged(ax, [(pos[str(r.get("dims"))], r[col], r, col) for r in pts])
    ax.set_xticks(range(len(order)), [dims_label(d) for d in order], rotation=30 if len(order) > 6 else 0)
    _legend(ax, pal.entries + flagged)
    return fig


def _uniform_d(r: dict) -> int | None:
    parts = str(r.get("dims")).split("x")
    return int(parts[0]) if len(set(parts)) == 1 and parts[0].isdigit() else None


def counts_vs_dim(rows: list[dict], col: str, ylabel: str, title: str,
                  samples: dict[tuple[str, str], dict]) -> Figure | None:
    """An exact count against the uniform modality dim d: each configuration's closed form (its method class's,
    evaluated at run time: closed_form.py) as a line through any d, solid over the dims run and dashed out to half
    the smallest and twice the largest, with the measured counts as points on it; configurations without a closed
    form are joined point to point. Rows with unequal dims have no one d: they are in the tables. None where no
    row carries a closed form or fewer than two uniform dims were run (vs_dim draws the figure then)."""
    pts = [r for r in _ok(rows, col) if _uniform_d(r) is not None]
    lines: dict[str, dict[int, float]] = {}
    for r in pts:
        c = samples.get((r["_run"], r.get("trial_id")), {}).get("closed_form")
        if isinstance(c, dict) and isinstance(c.get(col), list):
            lines.setdefault(r["_key"], {}).update(zip(c["d"], c[col]))
    ds = sorted({_uniform_d(r) for r in pts})
    if not lines or len(ds) < 2:
        return None
    lo, hi = ds[0], ds[-1]
    unequal = len(_ok(rows, col)) - len(pts)
    fig, ax = _new(f"{title} (exact: closed form)", "modality dim d (each modality)"
                   + (f"; {unequal} row(s) with unequal dims: in the tables" if unequal else ""), ylabel, logy=True)
    ax.set_xscale("log", base=2)
    pal = _Palette(pts)
    for key, rs in _series(pts).items():
        rs = sorted(rs, key=_uniform_d)
        style = pal(rs[0])
        xs, ys = [_uniform_d(r) for r in rs], [r[col] for r in rs]
        line = lines.get(key)
        if line is None:  # no closed form: point to point, as measured
            ax.plot(xs, ys, lw=1, ms=4, **style)
            continue
        # two artists a series (500-row reports stay quick): the line over the dims run, its markers on the
        # measured counts; and the dashed extensions on both sides, one line broken by a NaN
        grid = sorted((d, v) for d, v in line.items() if lo / 2 <= d <= 2 * hi)
        inside = [(d, v) for d, v in grid if lo <= d <= hi]
        marks = [i for i, (d, _) in enumerate(inside) if d in set(xs)]
        ax.plot(*zip(*inside), lw=1, ms=4, markevery=marks, gid=f"closed-form {key}", **style)
        outside = [p for p in grid if p[0] <= lo] + [(math.nan, math.nan)] + [p for p in grid if p[0] >= hi]
        ax.plot(*zip(*outside), lw=1, ls="--", color=style["color"], gid=f"closed-form {key}")
    ax.set_xticks(ds, [str(d) for d in ds])
    ax.plot([], [], color="grey", lw=1, label="closed form (dashed: beyond the dims run)")
    _legend(ax, pal.entries + 1)
    return fig


def accuracy_vs_rank(rows: list[dict]) -> Figure | None:
    """Test accuracy (mean ± std over seeds) against rank, a line per method and dims, with the ceiling."""
    pts = [r for r in _ok(rows, "acc_mean") if _num(r.get("rank")) is not None]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in pts:
        groups.setdefault((str(r.get("method")) + (f" · {r['_run']}" if len(_run_index(rows)) > 1 else ""),
                           str(r.get("dims"))), []).append(r)
    groups = {k: v for k, v in groups.items() if len({r["rank"] for r in v}) >= 2}
    if not groups:
        return None
    fig, ax = _new("Test accuracy vs rank (± the larger of seed std and test SE)", "rank", "test accuracy",
                   logx=True)
    order = dims_order([r for v in groups.values() for r in v])
    methods = list(dict.fromkeys(m for m, _ in groups))
    few = len(groups) <= MAX_LEGEND  # else: colour and legend by method, the marker tells the dims
    for i, ((method, dims), rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r["rank"])
        first = next(k for k in groups if k[0] == method) == (method, dims)
        ax.errorbar([r["rank"] for r in rs], [r["acc_mean"] for r in rs],
                    yerr=[acc_err(r) for r in rs], lw=1, ms=4, capsize=2,
                    color=_style(i if few else methods.index(method), 0)["color"],
                    marker=_MARKERS[order.index(dims) % len(_MARKERS)],
                    label=f"{method} · dims {dims_label(dims)}" if few else method if first else "_nolegend_")
    if not few and len(order) <= MAX_LEGEND:
        for j, d in enumerate(order):
            ax.plot([], [], ls="none", marker=_MARKERS[j % len(_MARKERS)], color="grey", label=f"dims {dims_label(d)}")
    ranks = sorted({r["rank"] for v in groups.values() for r in v})
    _ticks(ax, ranks)
    bayes = next((r["bayes_accuracy"] for r in pts if _num(r.get("bayes_accuracy")) is not None), None)
    if bayes is not None:
        ax.axhline(bayes, color="grey", ls="--", lw=0.8, label="Bayes-optimal (test split)")
    _legend(ax, (len(groups) if few else len(methods) + (len(order) if len(order) <= MAX_LEGEND else 0))
            + (bayes is not None))
    return fig


def latency_vs_batch(rows: list[dict]) -> Figure | None:
    """Whole-model forward latency against batch size, each method at its largest dims."""
    col = {b: V.column_of("latency", b) for b in batch_sizes(rows)}
    batches = [b for b in col if any(_num(r.get(col[b])) for r in rows)]
    if len(batches) < 2:
        return None
    largest: dict[str, dict] = {}
    order = dims_order(rows)
    for r in (r for r in rows if r.get("status") == "ok"):
        k = r["_key"]
        if k not in largest or order.index(str(r.get("dims"))) > order.index(str(largest[k].get("dims"))):
            largest[k] = r
    fig, ax = _new("Forward latency vs batch size (each method at its largest dims)", "batch size",
                   "latency, whole model (ms)", logx=True, logy=True)
    pal = _Palette(list(largest.values()))
    drawn = []
    for key, r in largest.items():
        xy = [(b, r[col[b]]) for b in batches if _num(r.get(col[b])) is not None]
        if len(xy) >= 2:
            style = pal(r, f"{key} (dims {dims_label(r.get('dims'))})")
            ax.plot(*zip(*xy), lw=1, ms=4, **style)
            _bars(ax, [b for b, _ in xy], [y for _, y in xy], [iqr(r, col[b]) / 2 for b, _ in xy],
                  [style["color"]] * len(xy), log=True)
            drawn += [(b, y, r, col[b]) for b, y in xy]
    if not drawn:
        return None
    flagged = _flagged(ax, drawn)
    _ticks(ax, batches)
    _legend(ax, pal.entries + flagged)
    return fig


def params_vs_rank(rows: list[dict]) -> Figure | None:
    pts = [r for r in _ok(rows, "fusion_params") if _num(r.get("rank")) is not None]
    groups: dict[str, list[dict]] = {}
    many = len(_run_index(rows)) > 1
    for r in pts:
        method = f"{r.get('method')} · {r['_run']}" if many else str(r.get("method"))
        groups.setdefault(f"{method} · dims {r.get('dims')}", []).append(r)
    groups = {k: v for k, v in groups.items() if len({r["rank"] for r in v}) >= 2}
    if not groups:
        return None
    fig, ax = _new("Fusion-layer parameters vs rank (a line per modality dims)", "rank", "parameters (fusion layer)",
                   logy=True)
    methods = list(dict.fromkeys(k.split(" · ")[0] for k in groups))
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["rank"])
        method = key.split(" · ")[0]
        ax.plot([r["rank"] for r in rs], [r["fusion_params"] for r in rs], lw=1, ms=4,
                label=method if key == next(k for k in groups if k.startswith(method + " · ")) else "_nolegend_",
                **_style(methods.index(method), 0))
        ax.annotate(dims_label(rs[-1]["dims"]), (rs[-1]["rank"], rs[-1]["fusion_params"]), fontsize=6, xytext=(3, 0),
                    textcoords="offset points", va="center")
    _legend(ax, len(methods))
    return fig


def memory_vs_batch(rows: list[dict]) -> Figure | None:
    col = {b: V.column_of("peak_mem", b) for b in batch_sizes(rows)}
    batches = [b for b in col if any(_num(r.get(col[b])) for r in rows)]
    if len(batches) < 2:  # fewer than two batch sizes with memory above zero: no curve to draw
        return None
    ok = [r for r in rows if r.get("status") == "ok"]
    largest: dict[str, dict] = {}  # each method at its largest dims: one line per method, not per configuration
    order = dims_order(ok)
    for r in ok:
        k = r["_key"]
        if k not in largest or order.index(str(r.get("dims"))) > order.index(str(largest[k].get("dims"))):
            largest[k] = r
    fig, ax = _new("Peak forward memory vs batch size (each method at its largest dims)", "batch size",
                   "peak memory (MiB)", logx=True)
    pal = _Palette(list(largest.values()))
    n = 0
    for key, r in largest.items():
        xy = [(b, r[col[b]]) for b in batches if _num(r.get(col[b])) is not None]
        if xy:
            ax.plot(*zip(*xy), lw=1, ms=4, **pal(r, f"{key} (dims {r.get('dims')})"))
            n += 1
    if not n:
        return None
    _ticks(ax, batches)
    _legend(ax, pal.entries)
    return fig


def robustness_curves(rows: list[dict], samples: dict[str, dict]) -> list[tuple[str, Figure]]:
    """One figure per perturbation found in the raw samples' ``robustness`` series (see README), lines per method."""
    curves: dict[str, list[tuple[str, str, list[float], list[float]]]] = {}
    for r in rows:
        raw = samples.get((r["_run"], r.get("trial_id")), {}).get("robustness")
        if r.get("status") != "ok":
            continue
        for name, xy in _robustness_series(raw):
            curves.setdefault(name, []).append((r, *xy))
    figs = []
    score = next((r["rob_metric"] for r in rows if isinstance(r.get("rob_metric"), str)), "accuracy")
    for name, lines in curves.items():
        fig, ax = _new(f"Robustness: {name}", "noise level (× the feature's training std)", f"test {score}")
        pal = _Palette([r for r, _, _ in lines])
        for r, xs, ys in lines:  # several dims per method: one legend entry each
            ax.plot(xs, ys, lw=1, ms=3, **pal(r))
        _legend(ax, pal.entries)
        figs.append((name, fig))
    return figs


def _robustness_series(raw: Any) -> list[tuple[str, tuple[list[float], list[float]]]]:
    """(curve name, (levels, scores)) from a trial's raw robustness record.

    The robustness measure writes a list, one entry per seed: {"seed", "modalities", "clean": {"score"},
    "<modality index>": {"levels", "noise", "missing"}}; the curve drawn is the mean over seeds. A dict
    {curve name: series} (see _xy) is read too.
    """
    out: list[tuple[str, tuple[list[float], list[float]]]] = []
    if isinstance(raw, dict):
        for name, series in raw.items():
            xy = _xy(series)
            if xy:
                out.append((str(name), xy))
    elif isinstance(raw, list) and raw and all(isinstance(s, dict) for s in raw):
        first = raw[0]
        names = first.get("modalities") or []
        for key in (k for k in first if str(k).isdigit()):
            per_seed = [_xy({"levels": s[key].get("levels"), "acc": s[key].get("noise")}) for s in raw
                        if isinstance(s.get(key), dict)]
            if not per_seed or any(p is None or p[0] != per_seed[0][0] for p in per_seed):
                continue
            levels = per_seed[0][0]
            mean = [sum(p[1][i] for p in per_seed) / len(per_seed) for i in range(len(levels))]
            name = names[int(key)] if int(key) < len(names) else key
            out.append((f"noise on {name}", (levels, mean)))
    return out


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


def scaling_fit(rows: list[dict], fits: list, cost: str) -> Figure | None:
    """A cost against each method's own size variable (log-log): every row's point (its IQR, ringed when flagged),
    and each method's fitted law as a line over the sizes it was fitted on."""
    from mmbench import scaling, sizes

    mine = [f for f in fits if f.cost == cost]
    if not mine:
        return None
    many = len({f.run for f in mine}) > 1
    fig, ax = _new(f"Scaling: {cost} against each method's size variable", "size variable (each method's own)",
                   f"{V.column(cost).term.title.split(',')[0].lower()} ({V.column(cost).kind.unit})", logx=True,
                   logy=True)
    drawn, n = [], 0
    for i, f in enumerate(mine):
        colour = _style(i, 0)["color"]
        pts = [(s, r) for r in rows if r.get("status") == "ok" and str(r.get("task")) == f.task
               and scaling.run_of(r) == f.run and scaling.group_of(r) == f.group
               and (s := sizes.size_of(r)) is not None and (_num(r.get(cost)) or 0) > 0]
        xs, ys = [s for s, _ in pts], [float(r[cost]) for _, r in pts]
        ax.scatter(xs, ys, s=14, color=colour, zorder=3)
        _bars(ax, xs, ys, [iqr(r, cost) / 2 for _, r in pts], [colour] * len(pts), log=True)
        drawn += [(s, float(r[cost]), r, cost) for s, r in pts]
        grid = [min(f.sizes) * (max(f.sizes) / min(f.sizes)) ** (j / 60) for j in range(61)]
        line = [f.predict(g)[0] for g in grid]
        k, lo, hi = f.exponent
        ax.plot(grid, line, color=colour, lw=1.2,
                label=f"{f.name}{f' · {f.run}' if many else ''} ({f.size_name}): k = {k:.2f} [{lo:.2f}, {hi:.2f}]")
        n += 1
    flagged = _flagged(ax, drawn)
    _legend(ax, n + flagged)
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

    for key, col, what, ylabel in (("params-vs-dim", "fusion_params", "Parameters", "parameters (fusion layer)"),
                                   ("flops-vs-dim", "fusion_flops", "FLOPs", "FLOPs per sample")):
        title = f"Fusion-layer {what.lower() if what == 'Parameters' else what} vs modality dim"
        add(key, f"{what} vs modality dim",  # exact lines where the rows carry closed forms, else point to point
            lambda col=col, ylabel=ylabel, title=title: counts_vs_dim(rows, col, ylabel, title, samples)
            or vs_dim(rows, col, ylabel, title))
    add("acc-vs-params", "Accuracy vs parameters",
        lambda: accuracy_vs(rows, "params", "parameters, whole model", "Accuracy vs parameters"))
    add("acc-vs-rank", "Accuracy vs rank", lambda: accuracy_vs_rank(rows))
    if batches:
        b = batches[0]
        add("acc-vs-latency", "Accuracy vs latency",
            lambda: accuracy_vs(rows, V.column_of("latency", b), f"latency, whole model, batch {b} (ms)",
                                f"Accuracy vs latency (batch {b})"))
        b = batches[-1]
        add("latency-vs-dim", "Latency vs modality dim",
            lambda: vs_dim(rows, V.column_of("fusion_latency", b), "latency (ms)",
                           f"Fusion-layer latency vs modality dim (batch {b})"))
    add("latency-vs-batch", "Latency vs batch size", lambda: latency_vs_batch(rows))
    add("params-vs-rank", "Parameters vs rank", lambda: params_vs_rank(rows))
    add("memory-vs-batch", "Memory vs batch size", lambda: memory_vs_batch(rows))
    for name, fig in robustness_curves(rows, samples):
        out.append(Plot(f"robustness-{_slug(name)}", f"Robustness: {name}", task, fig))
    add("tuning-best-so-far", "Tuning: best validation score so far", lambda: tuning_curves(rows, samples))
    add("tuning-lr", "Tuning: validation score vs learning rate", lambda: lr_sensitivity(rows, samples))
    return out


def tuning_curves(rows: list[dict], samples: dict[tuple[str, str], dict]) -> Figure | None:
    """Tuned suites: each configuration's best validation score after each tuning trial (which method needs how
    much tuning to reach its accuracy); trial 1 is the untuned values."""
    lines = []
    for r in _ok(rows):
        best = samples.get((r["_run"], r.get("trial_id")), {}).get("tuning_best_so_far")
        if isinstance(best, list) and best:
            lines.append((r, [i + 1 for i, v in enumerate(best) if v is not None], [v for v in best if v is not None]))
    if not lines:
        return None
    fig, ax = _new("Tuning: best validation score so far", "tuning trials (1 = untuned values)", "validation score")
    pal = _Palette([r for r, _, _ in lines])
    for r, xs, ys in lines:
        ax.step(xs, ys, where="post", lw=1.2, **{k: v for k, v in pal(r).items() if k != "marker"})
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _legend(ax, pal.entries)
    return fig


def lr_sensitivity(rows: list[dict], samples: dict[tuple[str, str], dict]) -> Figure | None:
    """Tuned suites that search lr: each complete tuning trial's validation score at its learning rate, a line per
    configuration (how sensitive each method is to it; the other searched values vary along the line too)."""
    lines = []
    for r in _ok(rows):
        tuning = samples.get((r["_run"], r.get("trial_id")), {}).get("tuning")
        pts = sorted((t["params"]["lr"], t["val"]) for t in tuning or []
                     if t.get("state") == "complete" and _num(t.get("params", {}).get("lr")) and _num(t.get("val")))
        if len(pts) > 1:
            lines.append((r, [x for x, _ in pts], [y for _, y in pts]))
    if not lines:
        return None
    fig, ax = _new("Tuning: validation score vs learning rate", "learning rate", "validation score", logx=True)
    pal = _Palette([r for r, _, _ in lines])
    for r, xs, ys in lines:
        ax.plot(xs, ys, lw=0.8, ms=4, **pal(r))
    _legend(ax, pal.entries)
    return fig


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)[:60]


DRAW_LIMIT_S = 120.0  # a child that has not drawn its share by then (killed, hung): this process draws it
_DRAWING: list[Plot] = []  # what draw's forked children draw: theirs by inheritance, nothing pickled


def _draw_one(i: int) -> bytes:
    return _DRAWING[i].png()


def _drawing_child() -> None:
    from mmbench import interrupt, store

    interrupt.die_with_parent()
    store.drop_inherited()  # a child left drawing must not hold the run's lock against its --resume


def draw(plots: list[Plot]) -> None:
    """Every figure drawn to PNG before a report is written, its share in forked children on Linux (a figure takes
    0.1-0.2 s, and a report has a dozen): the children inherit the figures, and send back only the bytes. Drawn here,
    one after another, where the platform does not fork or a child fails."""
    todo = [p for p in plots if p._png is None]
    procs = min(len(todo), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    # not beside Ray: a driver's gRPC threads do not survive a fork
    if procs > 1 and sys.platform == "linux" and "ray" not in sys.modules:
        import multiprocessing as mp

        global _DRAWING
        _DRAWING = todo
        theirs = [i for i in range(len(todo)) if i % procs]  # this process draws every procs-th itself
        for stream in (sys.stdout, sys.stderr):  # a forked child would write what is buffered here a second time
            stream.flush()
        try:
            with mp.get_context("fork").Pool(procs - 1, initializer=_drawing_child) as pool:
                pending = pool.map_async(_draw_one, theirs)
                for i in sorted(set(range(len(todo))) - set(theirs)):
                    todo[i].png()
                for i, png in zip(theirs, pending.get(timeout=DRAW_LIMIT_S)):
                    todo[i]._png = png
        except Exception:  # noqa: BLE001  (a child that failed: its figures are drawn below, here)
            pass
        finally:
            _DRAWING = []
    for p in todo:
        p.png()


def save_png(plot: Plot, path: Path) -> None:
    from mmbench.store import atomic_write

    atomic_write(path, plot.png())  # reports written at once never leave a torn figure
