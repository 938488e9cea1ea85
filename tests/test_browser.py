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


def test_html_report_renders_with_tables_and_figures_and_no_console_errors(tmp_path):
    run = make_run(tmp_path, "a", robustness=True, fail={"401e01eaa23c"})
    write_report(run)
    page = run / "report.html"
    dom, console = chromium(page, tmp_path, "--dump-dom")
    assert console == []
    assert dom.count('<table class="cmp"') >= 10 and '<table class="summary">' in dom
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', dom)
    assert {"Accuracy vs parameters", "Accuracy vs latency", "Latency vs modality dim", "FLOPs vs modality dim",
            "Parameters vs rank", "Memory vs batch size"} <= set(imgs)
    assert "Failed trials" in dom and 'class="best"' in dom
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
