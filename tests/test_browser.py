"""The HTML report in a real browser (headless Chromium): it renders, shows its tables and figures, logs nothing.

Skipped when no Chromium is installed (.ci/run installs Debian's `chromium`).
"""
import os
import re
import shutil
import subprocess

import pytest

from mmbench.report import write_report
from tests.fakerun import make_run

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium installed (apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium(page, tmp_path, *args):
    """(stdout, console messages) of one headless Chromium run over a local file, in a fresh profile."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    r = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    # Every message the page sends to the console (errors, failed loads, uncaught exceptions) is logged as CONSOLE.
    # The report has no script, so any message at all is a defect.
    return r.stdout, [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def test_console_detector_catches_an_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><p>x</p><img src="missing.png"><script>undefinedFunction()</script>')
    _, console = chromium(page, tmp_path, "--dump-dom")
    assert any("undefinedFunction" in line for line in console)


def _cells(table_html: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", table_html, flags=re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)]
            for r in rows]


def test_html_report_renders_with_tables_and_figures_and_no_console_errors(tmp_path):
    run = make_run(tmp_path, "a", robustness=True, fail={"401e01eaa23c"}, contended={"ed463c66b99e"})
    write_report(run)
    page = run / "report.html"
    dom, console = chromium(page, tmp_path, "--dump-dom")
    assert console == []
    assert dom.count('<table class="cmp"') >= 10 and '<table class="summary">' in dom
    # the summary that decides comes first, before any table: the front, the dominated, the ceiling, the flags
    top = dom[:dom.index("<table class=\"summary\"")]
    assert 'id="decision"' in top and "Pareto front (acc against params, FLOPs" in top and "dominated by" in top
    assert "Bayes-optimal accuracy on the test split 0.900 ± 0.007" in top
    assert "Timing evidence: 1 of 11 timed rows have a flagged timing" in top and "1 contended" in top
    # the recommendation opens the task, before the front: the one-standard-error rule, per cost, never at chance
    rec = top[top.index('<div class="recommend">'):top.index("Pareto front")]
    assert "One-standard-error rule" in rec and "the cheapest by params" in rec
    assert "never recommended (late · 4x4x4, late · 8x8x8, late · 16x16x16)" in rec
    picks = [row for row in _cells(re.search(r'<table class="recommend">(.*?)</table>', rec, flags=re.S).group(1))
             if row]
    assert [row[0] for row in picks][:2] == ["params", "FLOPs"] and not any(row[1].startswith("late") for row in picks)
    # uncertainty drawn: said under the figures (the bars themselves are in the PNGs: tests/test_uncertainty_drawn.py)
    assert "accuracy bars are ± the larger of the seed std and the test split" in dom
    # the scaling table: an exponent with its interval and a leave-one-out error per method and cost
    scaling = [row for row in _cells(re.search(r"<table class=\"scaling\">(.*?)</table>", dom, flags=re.S).group(1)) if row]
    assert {row[0] for row in scaling} == {"lmf", "late"}  # tfn: one of its three sizes failed, two are no law
    lmf = next(row for row in scaling if row[0] == "lmf" and row[2] == "latency b16 (ms)")
    assert lmf[1] == "r·Σ(d_m+1)" and re.fullmatch(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", lmf[4]) and lmf[7].endswith("%")
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', dom)
    assert {"Parameters vs modality dim", "FLOPs vs modality dim", "Accuracy vs parameters", "Accuracy vs rank",
            "Accuracy vs latency", "Latency vs modality dim", "Latency vs batch size", "Parameters vs rank",
            "Memory vs batch size", "Scaling: latency_ms_b16"} <= set(imgs)
    assert "Failed trials" in dom
    # no column holding only zeros or empties, in any table (head_flops is 0 in every row: no table at all)
    tables = re.findall(r'<table class="cmp" data-metric="([^"]+)">(.*?)</table>', dom, flags=re.S)
    assert "head_flops" not in {m for m, _ in tables}
    for metric, body in tables:
        cells = _cells(body)
        for j in range(1, len(cells[0])):
            column = [row[j] for row in cells]
            assert any(c not in ("", "—", "0") and not c.startswith("0 ") for c in column), (metric, j)
    assert "★" not in "".join(c for m, b in tables for row in _cells(b) for c in row)  # ★ is CSS, never text
    shot = tmp_path / "report.png"
    _, console = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2200", "--hide-scrollbars")
    assert console == []
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] == 2200 and img.shape[1] == 1280
    # a rendered page, not a blank one: many distinct colours (figures, highlighted cells)
    assert len({tuple((px * 255).astype(int)) for px in img[::7, ::7, :3].reshape(-1, 3)}) > 50
    keep = os.environ.get("MMBENCH_SCREENSHOT")  # to look at it: MMBENCH_SCREENSHOT=/tmp/report.png pytest …
    if keep:
        shutil.copy(shot, keep)


def test_html_report_shows_where_the_time_goes(tmp_path):
    import json

    run = make_run(tmp_path, "a")
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    for r in rows:  # the encoders timed as a trial with measure.latency.stages writes them: a quarter of the forward
        for b in (1, 16):
            if isinstance(r.get(f"latency_ms_b{b}"), float):
                r[f"encoder_latency_ms_b{b}"] = 0.25 * r[f"latency_ms_b{b}"]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(run)
    dom, console = chromium(run / "report.html", tmp_path, "--dump-dom")
    assert console == [] and "<h3>Where the time goes</h3>" in dom and "the model has no head" in dom
    split = [row for row in _cells(re.search(r'<table class="time-split">(.*?)</table>', dom, flags=re.S).group(1))
             if row]
    assert {row[0] for row in split} == {r["label"] for r in rows if r["status"] == "ok"}
    for row in split:  # at the largest batch size: encoders 25%, the fusion and the overhead named beside them
        assert row[2] == "16" and row[4].endswith("(25%)") and re.search(r"\(-?\d+%\)$", row[6])


def test_comparison_report_groups_by_trial_with_compare_verdicts(tmp_path):
    from mmbench.report import make_report

    a = make_run(tmp_path, "a", seed=1)
    b = make_run(tmp_path, "b", seed=2, slow={"77faa89e4802": 1.3}, env={"mmbench_git_sha": "fedcba9876543210"})
    page = make_report([a, b], "html", tmp_path / "comparison.html")
    dom, console = chromium(page, tmp_path, "--dump-dom")
    assert console == [] and "Run fedcba9 against run 0123456" in dom
    body = re.search(r'<table class="versus">(.*?)</table>', dom, flags=re.S).group(1)
    assert "tfn · 16x16x16" in body and "lmf(rank=4) · 4x4x4" in body
    rows = _cells(body)
    regressed = [r for r in rows if len(r) == 7 and r[5] == "regressed"]
    assert regressed and all(r[4].endswith("×") and float(r[4][:-1]) > 1.2 for r in regressed)
