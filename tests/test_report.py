"""Reports from run directories: tables with the best value marked, figures, merged runs, incomplete runs."""
import json
import re
import subprocess
import sys

import pytest

from mmbench.errors import UserError
from mmbench.report import markdown, write_report
from mmbench.report.build import build
from mmbench.report.plots import pareto_front
from mmbench.store import load_run
from mmbench.vocabulary import HIGHER, LOWER
from tests.conftest import ROOT
from tests.fakerun import make_run, trials, truncate_results


def _table(rep, column):
    return next(t for t in rep.tables if t.metric.column == column)


def _ids():
    return {(s["label"], s["dims"]): s["trial_id"] for s in trials()}


def test_the_best_value_is_marked_only_where_it_is_better_beyond_the_spread(tmp_path):
    ids = _ids()
    late = [tid for (label, _), tid in ids.items() if label == "late"]
    # late and lmf(rank=1) have the same parameters in the fake: a tie marks nothing; one more for late, and
    # lmf(rank=1) is the one best (counts are exact: no spread)
    rep = build([make_run(tmp_path, "tie")])
    assert not any(c.best for c in _table(rep, "fusion_params").cells.values())
    rep = build([make_run(tmp_path, "a", params_delta={t: 5 for t in late})])
    params = _table(rep, "fusion_params")
    assert params.metric.better == LOWER and params.columns == ["4x4x4", "8x8x8", "16x16x16"]
    assert params.rows == ["tfn", "lmf(rank=1)", "lmf(rank=4)", "late"]
    for col in params.columns:
        assert [k for k in params.rows if params.cells[(k, col)].best] == ["lmf(rank=1)"]
    # accuracy: tfn 0.88 and lmf(rank=4) 0.88 agree within their seed spread: no ★ …
    acc = _table(rep, "acc_mean")
    assert acc.metric.better == HIGHER and not any(c.best for c in acc.cells.values())
    assert "±" in acc.cells[("tfn", "4x4x4")].text
    # … until tfn is better beyond it
    tfn = [tid for (label, _), tid in ids.items() if label == "tfn"]
    acc = _table(build([make_run(tmp_path, "b", acc_delta={t: 0.05 for t in tfn})]), "acc_mean")
    assert {k for (k, _), c in acc.cells.items() if c.best} == {"tfn"}


def test_one_seed_shows_no_spread_and_zero_only_tables_and_columns_are_left_out(tmp_path):
    run = make_run(tmp_path, "a", seeds=1)
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    for r in rows:  # encoder FLOPs measured 0 at dims 4 only (a column of zeros), memory never (empties)
        r["encoder_flops"] = 0 if r["dims"] == "4x4x4" else 200
        for k in [k for k in r if k.startswith("peak_mem_mib_b")]:
            r[k] = None
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = build([run])
    acc = _table(rep, "acc_mean")
    assert acc.cells[("tfn", "4x4x4")].text.endswith("± —") and "0.000" not in acc.cells[("tfn", "4x4x4")].text
    columns = {t.metric.column for t in rep.tables}
    assert "head_flops" not in columns and not any(c.startswith("peak_mem_mib") for c in columns)
    assert _table(rep, "encoder_flops").columns == ["8x8x8", "16x16x16"]
    for t in rep.tables:
        for col in t.columns:
            assert any(c.value for (_, d), c in t.cells.items() if d == col), (t.metric.column, col)
    md = markdown.render(rep)
    assert not re.search(r"± 0\.000(?!\d)", md) and "Parameters, fusion layer" in md


def test_the_report_decides_before_any_table(tmp_path):
    run = make_run(tmp_path, "a", contended={_ids()[("tfn", "16x16x16")]})
    rep = build([run])
    d = rep.decisions["synthetic-synergy"]
    front = {p.name for p in d.front}
    # late (accuracy 0.5) is dominated by lmf(rank=1) at the same dims (as cheap, more accurate); tfn at 16 costs
    # far more than lmf(rank=4) at 16 for the same accuracy
    assert "late · 4x4x4" not in front and "tfn · 16x16x16" not in front
    dominated = {p.name: [q.name for q, _ in by] for p, by in d.dominated}
    assert "lmf(rank=4) · 16x16x16" in dominated["tfn · 16x16x16"] or \
        any(n.startswith("lmf(rank=4)") for n in dominated["tfn · 16x16x16"])
    assert d.costs == ["params", "flops", "latency_ms_b1", "latency_ms_b16", "peak_alloc_mib_b1", "peak_alloc_mib_b16"]
    # a contended timing is no evidence of a cost: left out of that configuration's costs
    tfn16 = next(p for p, _ in d.dominated if p.name == "tfn · 16x16x16")
    assert "latency_ms_b1" not in tfn16.costs and "params" in tfn16.costs
    late = next(p for p, _ in d.dominated if p.name == "late · 8x8x8")
    from mmbench.report.decide import describe

    assert "(≈ chance)" in describe(late, d.costs, "acc") and "(≈ chance)" not in describe(tfn16, d.costs, "acc")
    # nothing on the front is dominated, everything dominated is beaten by something
    assert front.isdisjoint(dominated) and len(front) + len(dominated) == len(trials())
    md = markdown.render(rep)
    top = md[:md.index("| method |")]  # everything before the first comparison table
    assert "## What this run decides" in top and "Pareto front (acc against params, FLOPs, latency b1" in top
    assert "Bayes-optimal accuracy on the test split 0.900 ± 0.007 (binomial SE, n = 2000); expected (Monte " \
           "Carlo) 0.901 ± 0.0007" in top
    assert "dominated by" in top and "acc 0.8" in top
    assert "Timing evidence: 1 of 12 timed rows have a flagged timing" in top and "CPU utilisation down to 0.45" in top
    html = (write_report(run), (run / "report.html").read_text())[1]
    assert html.index('id="decision"') < html.index('<table class="recommend"') < html.index("<table class=\"summary\"")
    # the threads column shows the rows' real threads, not the process default (env.json says 1 here)
    from mmbench.report.summary import run_summary

    cols, rows = run_summary(build([make_run(tmp_path, "t3", threads=3)]).runs)
    assert rows[0][cols.index("threads")] == "3"


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9), (5, 0.9), (0.5, 0.4)]
    assert pareto_front(pts) == [(0.5, 0.4), (1, 0.5), (2, 0.7), (4, 0.9)]


def test_failed_trial_is_shown_with_its_status(tmp_path):
    specs = trials()
    run = make_run(tmp_path, "a", fail={specs[0]["trial_id"]})
    rep = build([run])
    cell = _table(rep, "params").cells[("tfn", "4x4x4")]
    assert cell.status == "error" and cell.text == "error" and not cell.best
    md = markdown.render(rep)  # no figure folder: tables only
    assert "### Failed trials" in md and "RuntimeError: injected" in md


def test_write_report_writes_markdown_png_figures_and_self_contained_html(tmp_path):
    run = make_run(tmp_path, "a", robustness=True)
    write_report(run)
    md = (run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(links) >= 6 and all((run / link).is_file() for link in links)
    assert any("robustness" in link for link in links)
    assert "| method | 4x4x4 | 8x8x8 | 16x16x16 |" in md and "★" in md
    html = (run / "report.html").read_text()
    # self-contained: no external resource of any kind, every figure embedded
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    imgs = re.findall(r'<img [^>]*src="data:image/png;base64,', html)
    assert len(imgs) == len(links)
    assert html.count('<table class="cmp"') == md.count("| method |")
    assert "Robustness, modality m0: mean acc over noise levels" in html


def _ringed(fig) -> int:
    """Points a figure rings as flagged timings (the ring layer is the one labelled so)."""
    return sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections
               if c.get_label().startswith("flagged timing"))


def test_flagged_timings_are_ringed_in_the_figures(tmp_path):
    flagged = set(trials()[i]["trial_id"] for i in (0, 2))  # tfn 4x4x4 and 16x16x16
    rep = build([make_run(tmp_path, "a", host_slow=flagged)])
    plots = {p.key: p for p in rep.plots}
    # a point per trial in these two: each flagged trial is ringed once
    assert _ringed(plots["latency-vs-dim"].fig) == 2 and _ringed(plots["acc-vs-latency"].fig) == 2
    # each method at its largest dims, at both batch sizes: tfn 16x16x16's two points
    assert _ringed(plots["latency-vs-batch"].fig) == 2
    clean = {p.key: p for p in build([make_run(tmp_path, "b")]).plots}
    assert all(_ringed(p.fig) == 0 for p in clean.values())


def test_robustness_skipped_gracefully_when_absent(tmp_path):
    run = make_run(tmp_path, "a", robustness=False)
    rep = build([run])
    assert not any(p.key.startswith("robustness") for p in rep.plots)
    assert not any(t.metric.column.startswith("rob") for t in rep.tables)
    assert any(t.metric.column.startswith("rob_m0") for t in build([make_run(tmp_path, "b", robustness=True)]).tables)


def test_without_accuracy_the_accuracy_plots_and_tables_are_left_out(tmp_path):
    run = make_run(tmp_path, "a", accuracy=False)
    rep = build([run])
    keys = {p.key for p in rep.plots}
    assert "acc-vs-params" not in keys and "latency-vs-dim" in keys and "params-vs-rank" in keys
    assert not any(t.metric.column == "acc_mean" for t in rep.tables)


def test_several_runs_merge_into_one_comparison(tmp_path):
    a = make_run(tmp_path, "a", env={"device": "cpu"})
    b = make_run(tmp_path, "b", env={"device": "cuda", "gpu_name": "H100"}, seed=1)
    rep = build([a, b])
    assert [r.label for r in rep.runs] == ["cpu", "cuda"]
    t = _table(rep, "fusion_latency_ms_b1")
    assert "tfn · cpu" in t.rows and "tfn · cuda" in t.rows and len(t.rows) == 8
    md = markdown.render(rep)
    assert "2 runs compared" in md and "H100" in md and "| tfn · cuda |" in md
    # grouped by trial with compare's verdicts: timings of two environments are not comparable, counts are
    assert "## Run cuda against run cpu" in md and "would refuse this pair (exit 2)" in md
    assert "| tfn · 4x4x4 | params | 350 | 350 | +0 | 1× | unchanged |" in md
    assert "| fusion_latency_ms_b1 |" in md and "not comparable | different environments (device 'cpu' vs 'cuda'" in md
    # same device, different commits: told apart by the git sha
    c = make_run(tmp_path, "c", env={"mmbench_git_sha": "fedcba9876543210"}, seed=2)
    assert [r.label for r in build([a, c]).runs] == ["0123456", "fedcba9"]


def test_incomplete_and_truncated_runs_are_marked(tmp_path):
    run = make_run(tmp_path, "a", state="interrupted")
    truncate_results(run)
    rep = build([run])
    assert len(rep.runs[0].rows) == len(trials()) - 1  # the cut line is not a record
    md = markdown.render(rep)
    assert "is interrupted and its results file ends in a cut-off line" in md and "incomplete" in md
    with pytest.raises(UserError, match="truncated"):
        load_run(run, strict=True)


def test_not_a_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        build([tmp_path])
    with pytest.raises(UserError, match="not a run directory"):
        build([tmp_path / "missing"])
    run = make_run(tmp_path, "a")
    (run / "results.jsonl").write_text('{"trial_id": "x"}\nnot json\n{"trial_id": "y"}\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        build([run])


def test_report_code_does_not_import_torch(tmp_path):
    run = make_run(tmp_path, "a")
    code = ("import sys; from mmbench.report import build, html, markdown; from mmbench import compare, history; "
            f"markdown.render(build.build([{str(run)!r}])); "
            f"history.record_run({str(tmp_path / 'h.sqlite')!r}, {str(run)!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_history_trend_plot_when_the_history_holds_runs_of_the_same_environment(tmp_path):
    from mmbench import history

    db = tmp_path / "h.sqlite"
    runs = [make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00") for i in range(3)]
    history.record_run(db, runs[0])
    assert build([runs[0]], db=db).history == []  # one run: no trend yet
    history.record_run(db, make_run(tmp_path, "elsewhere", env={"cpu_model": "Other"}, started="2026-01-05T00:00"))
    assert build([runs[0]], db=db).history == []  # another environment's run is not part of this trend
    for r in runs[1:]:
        history.record_run(db, r)
    rep = build([runs[2]], db=db)
    assert [p.key for p in rep.history] == ["history-fake"]
    assert [h["run"] for h in rep.history_table] == ["fake/r0", "fake/r1", "fake/r2"]
    assert "## History" in markdown.render(rep)


def test_a_cost_measured_zero_everywhere_is_no_cost():
    from mmbench.report.decide import cost_columns, decide

    rows = [{"_key": k, "dims": "8x8x8", "status": "ok", "params": p, "latency_ms_b1": 0.1, "peak_mem_mib_b1": 0.0,
             "acc_mean": a, "acc_std": 0.01} for k, p, a in (("a", 10, 0.9), ("b", 20, 0.9), ("c", 5, 0.5))]
    assert cost_columns(rows) == ["params", "latency_ms_b1"]
    d = decide("t", rows)
    assert [p.key for p in d.front] == ["c", "a"]  # b: as accurate as a and dearer
    (b, by), = d.dominated
    assert b.key == "b" and [q.key for q, _ in by] == ["a"] and by[0][1] == ["cheaper in params"]


def _plots(n):
    from mmbench.report import plots as P

    out = []
    for i in range(n):
        fig, ax = P._new(f"figure {i}", "x", "y")
        ax.plot(range(10), [(x - i) ** 2 for x in range(10)])
        out.append(P.Plot(f"k{i}", f"figure {i}", "task", fig))
    return out


def test_figures_drawn_in_forked_children_are_the_bytes_drawn_here(monkeypatch):
    import sys

    from mmbench.report import plots as P

    monkeypatch.delitem(sys.modules, "ray", raising=False)  # an earlier test's Ray import turns the children off

    here, shared = _plots(5), _plots(5)
    expected = [p.png() for p in here]
    P.draw(shared)
    assert [p._png for p in shared] == expected
    assert len(set(expected)) == 5  # five different figures, each at its own place


def test_a_figure_that_fails_in_a_child_is_drawn_here(monkeypatch):
    """A child that raises (here: every child, for the odd figures) costs nothing but time: this process draws."""
    import os

    from mmbench.report import plots as P

    parent = os.getpid()
    real = P.Plot.png

    def png(self):
        if os.getpid() != parent:
            raise RuntimeError("child failed")
        return real(self)

    monkeypatch.setattr(P.Plot, "png", png)
    monkeypatch.delitem(__import__("sys").modules, "ray", raising=False)
    shared = _plots(4)
    P.draw(shared)
    assert all(p._png and p._png.startswith(b"\x89PNG") for p in shared)
