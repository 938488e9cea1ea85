"""`mmbench compare`: exit 1 on a regression, 0 otherwise, 2 for bad input; JSON and markdown outputs."""
import hashlib
import json

from mmbench import history as H
from tests.fakerun import make_run, trials, truncate_results
from tests.inproc import cli, one_line_error

IDS = [s["trial_id"] for s in trials()]


def test_exit_codes_and_outputs(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path, "a", seed=1)
    b = make_run(tmp_path, "b", seed=2)
    slow = make_run(tmp_path, "slow", seed=3, slow={IDS[7]: 1.25})
    code, out, err = cli(capsys, monkeypatch, "compare", a, b)
    assert code == 0, err
    assert "0 regression(s)" in out
    md = tmp_path / "summary.md"
    code, out, err = cli(capsys, monkeypatch, "compare", a, slow, "--json", "--markdown", md)
    assert code == 1, err
    doc = json.loads(out)
    assert doc["regressions"] == 4 and {e["trial_id"] for e in doc["entries"] if e["state"] == "regressed"} == {IDS[7]}
    assert md.read_text().startswith("## mmbench compare · fake: ❌ 4 regressions")
    code, out, _ = cli(capsys, monkeypatch, "compare", a, slow, "--threshold", "30%")  # 25% is within 30%
    assert code == 0 and "0 regression(s)" in out
    shifted = make_run(tmp_path, "shifted", seed=4, run_factor=1.15)  # the whole process slower: noise, and why
    code, out, _ = cli(capsys, monkeypatch, "compare", a, shifted)
    n = 4 * len(IDS)
    assert code == 0 and f"0 regression(s) · {n} noise ({n} within the two-run allowance)" in out


def test_history_baseline(tmp_path, capsys, monkeypatch):
    db = tmp_path / "h.sqlite"
    for i in range(5):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00"))
    cur = make_run(tmp_path, "cur", seed=7, slow={IDS[2]: 1.4}, started="2026-01-09T00:00")
    code, out, err = cli(capsys, monkeypatch, "compare", "history:fake", cur, "--db", db, "--json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["baseline"] == "history:fake" and {e["trial_id"] for e in doc["entries"]
                                                  if e["state"] == "regressed"} == {IDS[2]}


def test_bad_input_is_one_line_exit_2_and_database_unchanged(tmp_path, capsys, monkeypatch):
    db = tmp_path / "h.sqlite"
    a = make_run(tmp_path, "a")
    H.record_run(db, a)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    other = make_run(tmp_path, "o", suite="other")
    cut = make_run(tmp_path, "cut")
    truncate_results(cut)
    cases = [((a, other), "different suites"), ((a, tmp_path), "not a run directory"),
             ((a, tmp_path / "missing"), "not a run directory"), ((a, cut), "truncated"),
             (("history:nope", a), "no baseline"), ((a, a, "--threshold", "x"), "--threshold"),
             (("history:fake", a, "--db", tmp_path / "none.sqlite"), "no history database"),
             ((a, a, "--markdown", tmp_path / "no" / "x.md"), "output folder")]
    for args, msg in cases:
        extra = () if "--db" in map(str, args) else ("--db", db)
        code, out, err = cli(capsys, monkeypatch, "compare", *args, *extra)
        assert code == 2 and one_line_error(err) and msg in err, (args, err)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (tmp_path / "none.sqlite").exists()


def test_nothing_comparable_is_exit_2_with_one_line_why(tmp_path, capsys, monkeypatch):
    full = make_run(tmp_path, "full", seed=1)
    quick = make_run(tmp_path, "quick", seed=2, quick=True,
                     specs=[{**s, "trial_id": s["trial_id"][:-1] + "q"} for s in trials()])
    md = tmp_path / "c.md"
    code, out, err = cli(capsys, monkeypatch, "compare", quick, full, "--markdown", md)
    assert code == 2 and one_line_error(err)
    assert "the baseline was run with --quick and the current run without" in err
    assert "⛔ not comparable" in md.read_text()  # the CI job page says why, too
    code, out, err = cli(capsys, monkeypatch, "compare", full, make_run(tmp_path, "t2", seed=3, threads=2))
    assert code == 2 and one_line_error(err) and "different threads (1 in the baseline, 2 now)" in err
    code, _, err = cli(capsys, monkeypatch, "compare", full, full, "--allowance", "x")
    assert code == 2 and "--allowance" in err
