"""Reports from run directories: tables with the best value marked, figures, merged runs, incomplete runs."""
import re
import subprocess
import sys

import pytest

from mmbench.errors import UserError
from mmbench.report import markdown, write_report
from mmbench.report.build import build
from mmbench.report.load import load_run
from mmbench.report.plots import pareto_front
from mmbench.report.tables import HIGHER, LOWER
from tests.conftest import ROOT
from tests.fakerun import make_run, trials, truncate_results


def _table(rep, column):
    return next(t for t in rep.tables if t.metric.column == column)


def test_tables_mark_the_best_value_per_column(tmp_path):
    run = make_run(tmp_path, "a")
    rep = build([run])
    params = _table(rep, "fusion_params")
    assert params.metric.better == LOWER and params.columns == ["4x4x4", "8x8x8", "16x16x16"]
    assert params.rows == ["tfn", "lmf(rank=1)", "lmf(rank=4)", "late"]
    for col in params.columns:
        cells = {k: params.cells[(k, col)] for k in params.rows}
        low = min(c.value for c in cells.values())
        assert [k for k, c in cells.items() if c.best] == [k for k, c in cells.items() if c.value == low]  # ties too
        assert "tfn" not in [k for k, c in cells.items() if c.best]
    acc = _table(rep, "acc_mean")
    assert acc.metric.better == HIGHER
    for col in acc.columns:
        cells = {k: acc.cells[(k, col)] for k in acc.rows}
        assert [k for k, c in cells.items() if c.best] == [max(cells, key=lambda k: cells[k].value)]
        assert "±" in cells["tfn"].text


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
