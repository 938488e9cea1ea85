"""report.md: the summary and the same comparison tables as the HTML report, with the figures as PNG files beside it."""
from __future__ import annotations

from pathlib import Path

from mmbench.report import plots as P
from mmbench.report import decide, laws, time_split, versus
from mmbench.report.build import Report
from mmbench.report.html import LEGEND
from mmbench.report.summary import run_summary, state_note, task_note
from mmbench.report.tables import Table
from mmbench.report import tuning


def _table(t: Table) -> list[str]:
    def cell(k: str, d: str) -> str:
        c = t.cells.get((k, d))
        if c is None:
            return ""
        return f"**{c.text}** ★" if c.best else c.text

    lines = ["| method | " + " | ".join(t.columns) + " |", "|---|" + "---|" * len(t.columns)]
    lines += [f"| {k} | " + " | ".join(cell(k, d) for d in t.columns) + " |" for k in t.rows]
    return lines


def _decisions(rep: Report) -> list[str]:
    out = [f"## What {'these runs decide' if len(rep.runs) > 1 else 'this run decides'}", ""]
    if rep.flags:
        out += [f"**{rep.flags}**", ""]
    for task in rep.tasks:
        out += [f"### Task: {task}", ""]
        note = task_note(rep.task_info.get(task, {}))
        if note:
            out += [note, ""]
        if tuning.rows([r for r in rep.rows if r.get("task") == task]):
            out += [tuning.DECIDES, ""]
        d = rep.decisions.get(task)
        if d is None:
            out += ["Nothing to decide: no accuracy measured, or fewer than two configurations.", ""]
            continue
        head, recs = decide.recommendation_lines(d)
        if head:
            out += [f"**Recommended** — {head}", ""] + [f"- **{x}**" for x in recs] + [""]
            table = decide.recommendation_table(d)
            out += [*_rows_table(decide.RECOMMEND_HEADER, table), ""] if table else []
        over, front, unlearned, dominated = decide.lines(d)
        out += [f"Pareto front ({over}): {len(front) + len(unlearned)} configuration(s)", ""]
        out += [f"- {x}" for x in front] + [""]
        if unlearned:
            out += [f"On the front only by being cheap, at chance or did not learn: {len(unlearned)}", ""]
            out += [f"- {x}" for x in unlearned] + [""]
        if dominated:
            out += [f"Dominated: {len(dominated)} configuration(s), each with what dominates it", ""]
            out += [f"- {x}" for x in dominated] + [""]
    return out


def _versus(rep: Report) -> list[str]:
    out = []
    for v in rep.versus:
        out += [f"## Run {v.other} against run {v.base}", ""]
        if v.comparison is None:
            out += [f"Not compared: {v.error}", ""]
            continue
        if v.comparison.refusal:
            out += [f"**`mmbench compare` would refuse this pair (exit 2):** {v.comparison.refusal}", ""]
        for task, groups in v.by_task().items():
            out += [f"### Task: {task}", "", "| trial | " + " | ".join(h.format(base=v.base, other=v.other)
                                                                   for h in versus.HEADER) + " |",
                    "|---" * (len(versus.HEADER) + 1) + "|"]
            for trial, entries in groups.items():
                for i, e in enumerate(entries):
                    cells = [c.replace("|", "/") for c in versus.row(e)]
                    out.append(f"| {trial if i == 0 else ''} | " + " | ".join(cells) + " |")
            out.append("")
    return out


def _rows_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + \
        ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]


def _scaling(rep: Report, task: str, fig_dir: Path | None, fig_rel: str) -> list[str]:
    fits = [f for f in rep.fits if f.task == task]
    if not fits:
        return []
    many = len(rep.runs) > 1
    out = ["### Scaling laws (fitted on the rows)", "", laws.NOTE, "", *_rows_table(laws.FIT_HEADER,
                                                                                  laws.fit_rows(fits, many)), ""]
    if fig_dir is not None:
        for p in (p for p in rep.scaling_plots if p.task == task):
            name = f"{P._slug(task)}-{p.key}.png"
            P.save_png(p, fig_dir / name)
            out += [f"![{p.title}]({fig_rel}/{name})", ""]
    found, rest = laws.crossover_rows([x for x in rep.crossovers if x.task == task])
    if found or rest:
        out += [f"### Crossovers: where one method becomes cheaper than another ({len(found)} inside the range run)",
                ""]
        out += [*_rows_table(laws.CROSS_HEADER, found), ""] if found else []
        if rest:
            out += [f"{len(rest)} pair(s) and cost(s) never cross in the range run, or the fits cannot tell their "
                    "crossing apart:", "", *_rows_table(laws.CROSS_HEADER, rest), ""]
    return out


def render(rep: Report, fig_dir: Path | None = None, fig_rel: str = "figures") -> str:
    """The markdown text; when ``fig_dir`` is given the figures are written there as PNG and linked as fig_rel/…"""
    out = [f"# {rep.title}", ""]
    for note in state_note(rep.runs):
        out += [f"**{note}**", ""]
    out += _decisions(rep)  # before any table: what the run decides
    out += _versus(rep)
    cols, rows = run_summary(rep.runs)
    out += ["## Suite and environment", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    out += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    out += ["", LEGEND, ""]
    if fig_dir is not None and (rep.plots or rep.history or rep.scaling_plots):
        fig_dir.mkdir(parents=True, exist_ok=True)
    for task in rep.tasks:
        out += [f"## Task: {task}", ""]
        if fig_dir is not None:
            for p in (p for p in rep.plots if p.task == task):
                name = f"{P._slug(task)}-{p.key}.png"
                P.save_png(p, fig_dir / name)
                out += [f"![{p.title}]({fig_rel}/{name})", ""]
        split = time_split.rows([r for r in rep.rows if r.get("task") == task])
        if split:
            out += ["### Where the time goes", "", time_split.NOTE, "", *_rows_table(time_split.HEADER, split), ""]
        out += _scaling(rep, task, fig_dir, fig_rel)
        for t in (t for t in rep.tables if t.task == task):
            out += [f"### {t.metric.title}", "", *_table(t), ""]
        tuned = tuning.rows([r for r in rep.rows if r.get("task") == task])
        if tuned:
            out += ["### Tuning", "", tuning.NOTE, "", "| " + " | ".join(tuning.HEADER) + " |",
                    "|---" * len(tuning.HEADER) + "|"] + ["| " + " | ".join(c.replace("|", "/") for c in line) + " |"
                                                         for line in tuned] + [""]
        bad = rep.failed(task)
        if bad:
            out += ["### Failed trials", ""]
            out += [f"- {r['_key']} dims {r.get('dims')}: **{r.get('status')}** {r.get('error', '')}" for r in bad]
            out += [""]
    if rep.history:
        out += ["## History", ""]
        for p in rep.history:
            if fig_dir is not None:
                name = f"{p.key}.png"
                P.save_png(p, fig_dir / name)
                out += [f"![{p.title}]({fig_rel}/{name})", ""]
    return "\n".join(out)
