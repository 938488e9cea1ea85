"""Everything a report shows, gathered once from run directories (and the history database when there is one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmbench import scaling
from mmbench import vocabulary as V
from mmbench.report import plots as P
from mmbench.report.decide import Decision, decide
from mmbench.store import Run, load_runs
from mmbench.report.summary import flag_summary
from mmbench.report.tables import Table, batch_sizes, build_tables, failed, tagged_rows, tasks
from mmbench.report.versus import Versus, versus

HISTORY_TRIALS = 20  # at most this many lines in the trend plot: it stays readable


@dataclass
class Report:
    runs: list[Run]
    rows: list[dict]                           # every run's rows, tagged with _run and _key
    tables: list[Table]
    plots: list[P.Plot]
    task_info: dict[str, dict]                 # task label → what tasks.json states
    history: list[P.Plot] = field(default_factory=list)
    history_table: list[dict] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)   # task → its Pareto front and dominated
    versus: list[Versus] = field(default_factory=list)             # several runs: each later one against the first
    flags: str = ""                                                # how many rows carry a flagged timing, and why
    fits: list[scaling.Fit] = field(default_factory=list)          # scaling laws per task, run, method and cost
    crossovers: list[scaling.Crossover] = field(default_factory=list)
    scaling_plots: list[P.Plot] = field(default_factory=list)      # a cost against each method's size, fitted

    @property
    def tasks(self) -> list[str]:
        return tasks(self.rows)

    def failed(self, task: str) -> list[dict]:
        return [r for r in failed(self.rows) if r.get("task") == task]

    @property
    def title(self) -> str:
        suites = list(dict.fromkeys(r.suite for r in self.runs))
        if len(self.runs) == 1:
            return f"{suites[0]} — run {self.runs[0].path.name}"
        return f"{' vs '.join(suites)} — {len(self.runs)} runs compared"


def build(run_dirs: list[str | Path], db: str | Path | None = None) -> Report:
    runs = load_runs(run_dirs)
    rows = tagged_rows(runs)
    samples = {(run.label, tid): s for run in runs for tid, s in run.samples.items()}
    plots = []
    for task in tasks(rows):
        plots += P.task_plots([r for r in rows if r.get("task") == task], samples)
    info: dict[str, dict] = {}
    for run in runs:
        for t in run.tasks if isinstance(run.tasks, list) else []:
            if isinstance(t, dict) and "label" in t:
                info.setdefault(t["label"], t)
    rep = Report(runs, rows, build_tables(rows), plots, info, flags=flag_summary(rows), versus=versus(runs))
    for task in tasks(rows):
        d = decide(task, [r for r in rows if r.get("task") == task])
        if d is not None:
            rep.decisions[task] = d
    _add_scaling(rep)
    if db is not None and Path(db).exists():
        _add_history(rep, Path(db))
    return rep


def _add_scaling(rep: Report) -> None:
    """The scaling laws, the crossovers, and a figure per plotted cost: latency, the training step and memory at the
    largest batch size (the table holds every batch size; a figure costs most of a second to draw)."""
    rep.fits = scaling.fit_rows(rep.rows)
    rep.crossovers = scaling.crossovers(rep.rows, rep.fits)
    for task in rep.tasks:
        fits = [f for f in rep.fits if f.task == task]
        costs = list(dict.fromkeys(f.cost for f in fits))
        shown = []
        for name in ("latency", "train_step", *scaling.MEMORY):
            shown += [c for c in costs if V.column(c).term.name == name][-1:]
        rows = [r for r in rep.rows if r.get("task") == task]
        for c in shown:
            fig = P.scaling_fit(rows, fits, c)
            if fig is not None:
                rep.scaling_plots.append(P.Plot(f"scaling-{c}", f"Scaling: {c}", task, fig))


def _add_history(rep: Report, db: Path) -> None:
    """The trend of the main latency metric over the suite's recorded runs (when there are two or more)."""
    from mmbench import history
    from mmbench.errors import UserError

    batches = batch_sizes(rep.rows)
    if not batches:
        return
    metric = V.column_of("fusion_latency", batches[0])
    for run in {r.suite: r for r in reversed(rep.runs)}.values():  # the first run of each suite
        suite = run.suite
        try:  # the runs on this run's environment only: timings elsewhere are another series
            series = history.trend(db, suite, metric, env_fingerprint=history.fingerprint(run.env))
        except UserError:  # no runs of the suite, or a database we cannot read: the report goes on without it
            continue
        series = dict(list(series.items())[:HISTORY_TRIALS])
        trend = {label: [(p.started or p.run_key, p.value) for p in pts if p.value is not None]
                 for (_, label), pts in series.items()}
        fig = P.history_trend(trend, metric, f"History of {suite}: {metric}")
        if fig is not None:
            rep.history.append(P.Plot(f"history-{suite}", f"History of {suite}: {metric}", suite, fig))
            runs = sorted({(p.started or "", p.run_key, p.git_sha) for pts in series.values() for p in pts})
            rep.history_table += [{"suite": suite, "run": k, "started": s, "git_sha": g} for s, k, g in runs]
