"""The CLI end to end, through the real entry point (exit codes, stdout/stderr, files written)."""
import csv
import json

from tests.conftest import TINY_SUITE, run_cli


def test_run_writes_run_directory_with_documented_columns(write_suite, tmp_path):
    suite = write_suite(TINY_SUITE)
    out = tmp_path / "res"
    r = run_cli("run", str(suite), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout is one JSON document and nothing else
    run_dir = out / "tiny" / doc["run_dir"].rsplit("/", 1)[1]
    assert doc["state"] == "complete" and run_dir.is_dir()
    for name in ("run.json", "suite.yaml", "resolved.json", "env.json", "tasks.json", "results.csv",
                 "results.jsonl", "samples.jsonl", "report.md"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert len(rows) == len(doc["rows"]) == 8
    cols = set(rows[0])
    for col in ("trial_id", "method", "dims", "rank", "status", "params", "fusion_params", "flops", "fusion_flops",
                "acc_mean", "acc_std", "f1_mean", "fusion_latency_ms_b1", "fusion_latency_iqr_ms_b8",
                "latency_ms_b8", "peak_mem_mib_b8", "bayes_accuracy", "device"):
        assert col in cols, col
    assert all(r["status"] == "ok" for r in rows)
    assert len({r["trial_id"] for r in rows}) == 8
    samples = [json.loads(line) for line in open(run_dir / "samples.jsonl")]
    assert len(samples[0]["seeds"]) == 2 and len(samples[0]["fusion_latency_ms_b1"]) >= 3
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] and env["cpu_count_logical"] >= 1
    resolved = json.loads((run_dir / "resolved.json").read_text())
    assert [t["id"] for t in resolved["trials"]] == [r["trial_id"] for r in rows]
    report = (run_dir / "report.md").read_text()
    assert "Test accuracy" in report and "| lmf(rank=2) |" in report and "incomplete" not in report


def test_run_human_output_and_validate(write_suite, tmp_path):
    suite = write_suite(TINY_SUITE)
    r = run_cli("validate", str(suite))
    assert r.returncode == 0 and "8 trials" in r.stdout
    r = run_cli("run", str(suite), "--out", str(tmp_path / "o"), "--quick")
    assert r.returncode == 0, r.stderr
    assert "mmbench results" in r.stdout and "lmf(rank=1)" in r.stdout


def test_bad_input_is_one_line_exit_2_and_nothing_written(write_suite, tmp_path):
    bad = write_suite(TINY_SUITE.replace("- method: late", "- method: latte"), "bad.yaml")
    out = tmp_path / "res"
    for args in (("run", str(bad), "--out", str(out)), ("validate", str(bad)),
                 ("run", str(tmp_path / "missing.yaml"), "--out", str(out))):
        r = run_cli(*args)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "did you mean 'late'" in run_cli("validate", str(bad)).stderr
    assert not out.exists()


def test_list_methods_and_datasets():
    r = run_cli("list", "methods")
    assert r.returncode == 0 and all(m in r.stdout for m in ("tfn", "lmf", "early", "late"))
    assert "[x; 1]" in r.stdout  # descriptions are printed literally, not as rich markup
    r = run_cli("list", "datasets")
    assert r.returncode == 0 and "synthetic" in r.stdout
