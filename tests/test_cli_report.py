"""`mmbench report`, and the report every `mmbench run` writes."""
import json

from tests.conftest import run_cli
from tests.fakerun import make_run
from tests.inproc import cli, one_line_error

FAST_SUITE = """\
name: fast
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 64, n_val: 32, n_test: 32}
measure:
  device: cpu
  accuracy: false
  latency: {batch_sizes: [1, 4], max_time_s: 0.005, min_samples: 3, warmup: 1, min_block_ms: 0.05}
sweep:
  dims: [4, 8]
  rank: [1, 2]
methods:
  - method: lmf
  - method: early
"""


def test_run_writes_html_report_and_records_history(write_suite, tmp_path):
    suite = write_suite(FAST_SUITE)
    out = tmp_path / "res"
    r = run_cli("run", str(suite), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    run_dir = out / "fast" / json.loads(r.stdout)["run_dir"].rsplit("/", 1)[1]
    html = (run_dir / "report.html").read_text()
    assert "<h2>Task: synthetic-synergy</h2>" in html and 'data-metric="fusion_latency_ms_b4"' in html
    assert (run_dir / "report.md").is_file() and list((run_dir / "figures").glob("*.png"))
    r = run_cli("history", "--db", str(out / "history.sqlite"), "--json")
    runs = json.loads(r.stdout)
    assert r.returncode == 0 and [x["run_key"] for x in runs] == [f"fast/{run_dir.name}"] and runs[0]["trials"] == 6


def test_report_command_formats_and_outputs(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", env={"mmbench_git_sha": "fedcba9876543210"}, seed=1)
    code, out, err = cli(capsys, monkeypatch, "report", a, b, "--format", "md", "--out", tmp_path / "both.md")
    assert code == 0, err
    md = (tmp_path / "both.md").read_text()
    assert out.strip() == str(tmp_path / "both.md") and "| tfn · fedcba9 |" in md
    assert all((tmp_path / link).is_file() for link in __import__("re").findall(r"\((both_figures/[^)]+)\)", md))
    code, out, err = cli(capsys, monkeypatch, "report", a)
    assert code == 0 and (a / "report.html").is_file() and out.strip() == str(a / "report.html")


def test_report_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path, "a")
    (tmp_path / "afile").write_text("")  # a new folder is created for --out (issue 16), but not inside a file
    for args in (("report", tmp_path), ("report", tmp_path / "nope"), ("report", a, "--format", "pdf"),
                 ("report", a, "--out", tmp_path / "afile" / "dir" / "r.html"), ("report", a, "--out", tmp_path)):
        code, out, err = cli(capsys, monkeypatch, *args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, _, err = cli(capsys, monkeypatch, "report", tmp_path)
    assert one_line_error(err) and "not a run directory" in err
