"""report.html: one self-contained file (styles inline, figures as embedded PNG images, no script, no network).

PNG rather than SVG: the same drawing serves the markdown report's figure files, and drawing is most of a report's
cost (a 500-trial run's figures, drawn twice, would double it)."""
from __future__ import annotations

import base64
import datetime as _dt
from html import escape

from mmbench import __version__
from mmbench.report import plots as P
from mmbench.report.build import Report
from mmbench.report.summary import run_summary, state_note, task_note
from mmbench.report.tables import Table

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


def render(rep: Report) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(rep.title)}</title>", f"<style>{CSS}</style></head><body><main>",
           f"<h1>{escape(rep.title)}</h1>"]
    out += [f'<div class="banner">{escape(n)}</div>' for n in state_note(rep.runs)]
    cols, rows = run_summary(rep.runs)
    out.append('<h2>Suite and environment</h2><div class="wrap"><table class="summary"><thead><tr>'
               + "".join(f'<th class="key">{escape(c)}</th>' for c in cols) + "</tr></thead><tbody>"
               + "".join("<tr>" + "".join(f'<td class="key">{escape(str(v))}</td>' for v in r) + "</tr>"
                         for r in rows) + "</tbody></table></div>")
    out.append('<p class="note">★ the best value in each column (lowest cost, highest accuracy); '
               "⚠ a latency whose spread stayed above the target when its time budget ran out.</p>")
    for task in rep.tasks:
        out.append(f"<section><h2>Task: {escape(task)}</h2>")
        note = task_note(rep.task_info.get(task, {}))
        if note:
            out.append(f'<p class="note">{escape(note)}</p>')
        figs = [p for p in rep.plots if p.task == task]
        if figs:
            out.append('<div class="figs">' + "".join(_img(p) for p in figs) + "</div>")
        for t in (t for t in rep.tables if t.task == task):
            out.append(f"<h3>{escape(t.metric.title)}</h3>{_table(t)}")
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
