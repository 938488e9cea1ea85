"""report.html: one self-contained file (styles inline, figures as embedded PNG images, no script, no network).

PNG rather than SVG: the same drawing serves the markdown report's figure files, and drawing is most of a report's
cost (a 500-trial run's figures, drawn twice, would double it)."""
from __future__ import annotations

import base64
import datetime as _dt
from html import escape

from mmbench import __version__
from mmbench.report import plots as P
from mmbench.report import decide, laws, time_split, versus
from mmbench.report.build import Report
from mmbench.report.summary import run_summary, state_note, task_note
from mmbench.report.tables import Table
from mmbench.report import tuning

LEGEND = ("★ the best value of a column, only where it beats the runner-up beyond both spreads (std over seeds or the "
          "test split's standard error, the larger; a latency's IQR); ⚠ a flagged timing (noisy: the median was not "
          "pinned down within the target; contended: the timed region was descheduled; host_slow: the host ran slow "
          "beside most of its rounds); ± — one seed, so no spread. In the figures, accuracy bars are ± the larger of the "
          "seed std and the test split's standard error, timing bars the IQR (its length, centred on the median), and a "
          "ringed point is a flagged timing. Columns and "
          "tables holding only zeros or empties are left out.")
MANY = 20  # more dominated configurations than this: folded away

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #d7dbe0;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px}
.banner{background:#fff3cd;border:1px solid #e0c36b;padding:8px 12px;border-radius:4px;margin:8px 0;font-weight:600}
table{border-collapse:collapse;background:#fff;margin:4px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d7dbe0;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f4;font-weight:600}td.key,th.key{text-align:left}
td.best{background:#dff3e4;font-weight:700}td.best::after{content:" ★";color:#1d7a3a}
td.failed{color:#b3261e;font-style:italic}
.wrap{overflow-x:auto}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #d7dbe0;border-radius:4px;padding:8px}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12px;color:#555;margin-top:4px}
.note{color:#444}footer{color:#777;font-size:12px;margin-top:32px}
.decision{background:#fff;border:1px solid #d7dbe0;border-radius:4px;padding:4px 16px 8px;margin:8px 0}
.decision li{margin:2px 0}.flags{font-weight:600}
.recommend{background:#eef7f0;border-left:4px solid #1d7a3a;padding:2px 12px;margin:6px 0}
ul.recommend li{font-weight:600}
td.regressed,td.failed-v{color:#b3261e;font-weight:700}td.improved{color:#1d7a3a;font-weight:700}
td.noise{color:#8a6d00}tr.group td{background:#eef1f4;font-weight:600;text-align:left}
"""


def _img(p: P.Plot) -> str:
    data = base64.b64encode(p.png()).decode()
    return (f'<figure><img alt="{escape(p.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(p.title)}</figcaption></figure>")


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(d)}</th>" for d in t.columns)
    body = []
    for k in t.rows:
        tds = []
        for d in t.columns:
            c = t.cells.get((k, d))
            if c is None:
                tds.append("<td></td>")
            else:
                cls = "best" if c.best else ("failed" if c.status != "ok" else "")
                tds.append(f'<td class="{cls}">{escape(c.text)}</td>' if cls else f"<td>{escape(c.text)}</td>")
        body.append(f'<tr><td class="key">{escape(k)}</td>{"".join(tds)}</tr>')
    return (f'<div class="wrap"><table class="cmp" data-metric="{escape(t.metric.column)}">'
            f'<thead><tr><th class="key">method \\ dims</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _decisions(rep: Report) -> str:
    what = "these runs decide" if len(rep.runs) > 1 else "this run decides"
    out = [f'<section class="decision" id="decision"><h2>What {what}</h2>']
    if rep.flags:
        out.append(f'<p class="flags">{escape(rep.flags)}</p>')
    for task in rep.tasks:
        out.append(f"<h3>Task: {escape(task)}</h3>")
        note = task_note(rep.task_info.get(task, {}))
        if note:
            out.append(f'<p class="note">{escape(note)}</p>')
        if tuning.rows([r for r in rep.rows if r.get("task") == task]):
            out.append(f'<p class="note">{escape(tuning.DECIDES)}</p>')
        d = rep.decisions.get(task)
        if d is None:
            out.append('<p class="note">Nothing to decide: no accuracy measured, or fewer than two configurations.</p>')
            continue
        head, recs = decide.recommendation_lines(d)
        if head:
            table = decide.recommendation_table(d)
            out.append(f'<div class="recommend"><p><b>Recommended</b> — {escape(head)}</p>'
                       + ('<ul class="recommend">' + "".join(f"<li>{escape(x)}</li>" for x in recs) + "</ul>"
                          if recs else "")
                       + (_rows_table("recommend", decide.RECOMMEND_HEADER, table) if table else "") + "</div>")
        over, front, unlearned, dominated = decide.lines(d)
        out.append(f"<p>Pareto front ({escape(over)}): {len(front) + len(unlearned)} configuration(s)</p>"
                   '<ul class="front">' + "".join(f"<li>{escape(x)}</li>" for x in front) + "</ul>")
        if unlearned:
            out.append(f"<details><summary>On the front only by being cheap, at chance or did not learn: "
                       f'{len(unlearned)}</summary><ul class="front-unlearned">'
                       + "".join(f"<li>{escape(x)}</li>" for x in unlearned) + "</ul></details>")
        if dominated:
            items = '<ul class="dominated">' + "".join(f"<li>{escape(x)}</li>" for x in dominated) + "</ul>"
            head = f"Dominated: {len(dominated)} configuration(s), each with what dominates it"
            out.append(f"<details><summary>{head}</summary>{items}</details>" if len(dominated) > MANY
                       else f"<p>{head}</p>{items}")
    out.append("</section>")
    return "".join(out)


def _rows_table(cls: str, header: list[str], rows: list[list[str]]) -> str:
    return (f'<div class="wrap"><table class="{cls}"><thead><tr>'
            + "".join(f'<th class="key">{escape(h)}</th>' for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f'<td class="key">{escape(c)}</td>' for c in r) + "</tr>" for r in rows)
            + "</tbody></table></div>")


def _scaling(rep: Report, task: str) -> str:
    fits = [f for f in rep.fits if f.task == task]
    if not fits:
        return ""
    many = len(rep.runs) > 1
    out = ['<h3>Scaling laws (fitted on the rows)</h3>', f'<p class="note">{escape(laws.NOTE)}</p>',
           _rows_table("scaling", laws.FIT_HEADER, laws.fit_rows(fits, many))]
    figs = [p for p in rep.scaling_plots if p.task == task]
    if figs:
        out.append('<div class="figs">' + "".join(_img(p) for p in figs) + "</div>")
    found, rest = laws.crossover_rows([x for x in rep.crossovers if x.task == task])
    if found or rest:
        out.append(f"<h3>Crossovers: where one method becomes cheaper than another ({len(found)} inside the range "
                   "run)</h3>")
        if found:
            out.append(_rows_table("crossovers", laws.CROSS_HEADER, found))
        if rest:
            out.append(f"<details><summary>{len(rest)} pair(s) and cost(s) that never cross in the range run, or "
                       f"whose crossing the fits cannot tell apart</summary>"
                       + _rows_table("no-crossovers", laws.CROSS_HEADER, rest) + "</details>")
    return "".join(out)


def _versus(rep: Report) -> str:
    out = []
    for v in rep.versus:
        out.append(f'<section class="versus"><h2>Run {escape(v.other)} against run {escape(v.base)}</h2>')
        if v.comparison is None:
            out.append(f'<p class="note">Not compared: {escape(v.error)}</p></section>')
            continue
        cmp = v.comparison
        out.append(f'<p class="note">Trials matched by id; per metric the delta, the ratio and compare\'s verdict '
                   f"({escape(cmp.counts_text())}).</p>")
        if cmp.refusal:
            out.append(f'<p class="note"><b>`mmbench compare` would refuse this pair (exit 2):</b> '
                       f"{escape(cmp.refusal)}</p>")
        head = "".join(f'<th class="key">{escape(h.format(base=v.base, other=v.other))}</th>' for h in versus.HEADER)
        for task, groups in v.by_task().items():
            body = []
            for trial, entries in groups.items():
                body.append(f'<tr class="group"><td colspan="{len(versus.HEADER)}">{escape(trial)} '
                            f"<code>{escape(entries[0].trial_id)}</code></td></tr>")
                for e in entries:
                    cells = versus.row(e)
                    cls = {"regressed": "regressed", "failed": "failed-v", "improved": "improved",
                           "noise": "noise"}.get(e.state, "")
                    body.append("<tr>" + "".join(
                        f'<td class="{"key " if i in (0, 6) else ""}{cls if i == 5 else ""}">{escape(c)}</td>'
                        for i, c in enumerate(cells)) + "</tr>")
            out.append(f"<h3>Task: {escape(task)}</h3>"
                       f'<div class="wrap"><table class="versus"><thead><tr>{head}</tr></thead>'
                       f'<tbody>{"".join(body)}</tbody></table></div>')
        out.append("</section>")
    return "".join(out)


def render(rep: Report) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(rep.title)}</title>", f"<style>{CSS}</style></head><body><main>",
           f"<h1>{escape(rep.title)}</h1>"]
    out += [f'<div class="banner">{escape(n)}</div>' for n in state_note(rep.runs)]
    out.append(_decisions(rep))  # before any table: what the run decides
    out.append(_versus(rep))
    cols, rows = run_summary(rep.runs)
    out.append('<h2>Suite and environment</h2><div class="wrap"><table class="summary"><thead><tr>'
               + "".join(f'<th class="key">{escape(c)}</th>' for c in cols) + "</tr></thead><tbody>"
               + "".join("<tr>" + "".join(f'<td class="key">{escape(str(v))}</td>' for v in r) + "</tr>"
                         for r in rows) + "</tbody></table></div>")
    out.append(f'<p class="note">{escape(LEGEND)}</p>')
    for task in rep.tasks:
        out.append(f"<section><h2>Task: {escape(task)}</h2>")
        figs = [p for p in rep.plots if p.task == task]
        if figs:
            out.append('<div class="figs">' + "".join(_img(p) for p in figs) + "</div>")
        split = time_split.rows([r for r in rep.rows if r.get("task") == task])
        if split:
            out.append(f'<h3>Where the time goes</h3><p class="note">{escape(time_split.NOTE)}</p>'
                       + _rows_table("time-split", time_split.HEADER, split))
        out.append(_scaling(rep, task))
        for t in (t for t in rep.tables if t.task == task):
            out.append(f"<h3>{escape(t.metric.title)}</h3>{_table(t)}")
        tuned = tuning.rows([r for r in rep.rows if r.get("task") == task])
        if tuned:
            out.append(f'<h3>Tuning</h3><p class="note">{escape(tuning.NOTE)}</p><div class="wrap"><table><thead><tr>'
                       + "".join(f'<th class="key">{escape(h)}</th>' for h in tuning.HEADER) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f'<td class="key">{escape(c)}</td>' for c in line) + "</tr>"
                                 for line in tuned) + "</tbody></table></div>")
        bad = rep.failed(task)
        if bad:
            out.append("<h3>Failed trials</h3><ul>" + "".join(
                f"<li>{escape(r['_key'])} dims {escape(str(r.get('dims')))}: <b>{escape(str(r.get('status')))}</b> "
                f"{escape(str(r.get('error') or ''))}</li>" for r in bad) + "</ul>")
        out.append("</section>")
    if rep.history:
        out.append('<section><h2>History</h2><div class="figs">' + "".join(_img(p) for p in rep.history) + "</div>")
        out.append('<div class="wrap"><table class="history"><thead><tr><th class="key">suite</th>'
                   '<th class="key">run</th><th class="key">started</th><th class="key">git</th></tr></thead><tbody>'
                   + "".join(f'<tr><td class="key">{escape(h["suite"])}</td><td class="key">{escape(h["run"])}</td>'
                             f'<td class="key">{escape(h["started"])}</td>'
                             f'<td class="key">{escape(str(h["git_sha"] or "")[:12])}</td></tr>'
                             for h in rep.history_table) + "</tbody></table></div></section>")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out.append(f"<footer>mmbench {escape(__version__)} · generated {now}</footer></main></body></html>")
    return "\n".join(out)
