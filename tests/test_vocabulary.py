"""One metric vocabulary: a metric column is one Term, and compare, the report and history pick it up from there;
and the layers below report (store, vocabulary, evidence, compare, history) never import it."""
import json
import sqlite3
import subprocess
import sys

import pytest

from mmbench import compare as C
from mmbench import history as H
from mmbench import vocabulary as V
from mmbench.report.build import build
from tests.conftest import ROOT
from tests.fakerun import ENV, make_run, trials

IDS = [s["trial_id"] for s in trials()]
DECODE = V.Term("decode", V.TIMING, "Decode latency, whole model")
WER = V.Term("wer", V.SCORE, "word error rate", V.LOWER)


def _add(run, write):
    """Rewrite a run's rows and raw samples with ``write(row, raw)`` applied: a measure that writes a new column."""
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    raws = {s["trial_id"]: s for s in map(json.loads, (run / "samples.jsonl").read_text().splitlines())}
    for r in rows:
        if r["status"] == "ok":
            write(r, raws[r["trial_id"]])
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in raws.values()))
    return run


def _decode(factor=1.0, noisy=frozenset()):
    """decode_ms_b1 as a timing measure writes it: the median of nine round medians, its IQR, its flags, and the
    rounds (and samples) in the raw record. ``factor``: every trial this much slower; ``noisy``: flagged ids."""
    def write(row, raw):
        rounds = [row["fusion_params"] * 1e-3 * factor * (1 + 0.002 * k) for k in range(9)]
        row.update(decode_ms_b1=rounds[4], decode_iqr_ms_b1=rounds[6] - rounds[2], decode_n_b1=9,
                   decode_noisy_b1=row["trial_id"] in noisy, decode_contended_b1=False, decode_cpu_util_b1=0.98)
        raw.update(decode_ms_b1=rounds, decode_rounds_ms_b1=rounds)
    return write


def _wer(shift=0.0):
    """wer_mean beside wer_std (a score averaged over seeds), a different one per trial."""
    def write(row, raw):
        row.update(wer_mean=0.2 + 0.05 * IDS.index(row["trial_id"]) + shift, wer_std=0.005)
    return write


def _decode_table(rep):
    return next((t for t in rep.tables if t.metric.column == "decode_ms_b1"), None)


def test_a_new_timing_term_is_judged_by_compare_shown_by_the_report_and_baselined_by_history(tmp_path, monkeypatch):
    base = _add(make_run(tmp_path, "base", seed=1, rounds=9), _decode())
    cur = _add(make_run(tmp_path, "cur", seed=2, rounds=9), _decode(factor=1.5, noisy={IDS[0]}))
    db = tmp_path / "h.sqlite"
    hist = [_add(make_run(tmp_path, f"h{i}", seed=10 + i, started=f"2026-01-0{i + 1}T00:00"),
                 _decode(factor=3.0 if i == 1 else 1.0, noisy={IDS[1]} if i == 1 else set())) for i in range(3)]
    fp = H.fingerprint(ENV)

    def judged():
        cmp = C.compare(C.side_from_run(base), C.side_from_run(cur))
        return {e.trial_id: e for e in cmp.entries if e.metric == "decode_ms_b1"}

    # not in the vocabulary: a column like any other, which nothing judges, shows or leaves out of a baseline
    assert judged() == {} and _decode_table(build([cur])) is None
    for run in hist:
        H.record_run(db, run)
    assert len(H.baseline(db, "fake", fp).per_run[IDS[1]]["decode_ms_b1"]) == 3  # the flagged run counted too

    monkeypatch.setattr(V, "METRICS", (*V.METRICS, DECODE))  # the one change
    verdicts = judged()
    assert set(verdicts) == set(IDS)
    # 1.5× slower over nine rounds a side: a regression with rounds as the unit; a flagged timing is noise
    assert {e.state for t, e in verdicts.items() if t != IDS[0]} == {C.REGRESSED}
    assert "rounds as the unit" in verdicts[IDS[1]].detail and verdicts[IDS[1]].change == pytest.approx(0.5)
    assert verdicts[IDS[0]].state == C.NOISE and "flagged in the current run: noisy" in verdicts[IDS[0]].detail
    assert C.cells(verdicts[IDS[1]])[6] == "+50.0%"  # a cost's change is relative

    rep = build([cur])
    t = _decode_table(rep)
    assert t is not None and t.metric.title == "Decode latency, whole model, batch 1 (median ms ± IQR)"
    cells = [c for c in t.cells.values() if c.value is not None]
    assert len(cells) == len(IDS) and all("±" in c.text for c in cells) and sum("⚠" in c.text for c in cells) == 1
    assert "1 noisy" in rep.flags  # the report's timing-evidence line counts the flagged one

    con = sqlite3.connect(db)  # recorded with its raw samples (history keeps every number of a row)
    value, samples = con.execute("SELECT value, samples_json FROM measurements WHERE trial_id = ? AND metric = "
                                 "'decode_ms_b1' ORDER BY run_id LIMIT 1", (IDS[2],)).fetchone()
    con.close()
    assert len(json.loads(samples)) == 9 and min(json.loads(samples)) <= value <= max(json.loads(samples))
    b = H.baseline(db, "fake", fp)
    assert len(b.per_run[IDS[1]]["decode_ms_b1"]) == 2  # the flagged run is left out of the baseline's spread
    assert len(b.per_run[IDS[2]]["decode_ms_b1"]) == 3
    assert b.rows[IDS[1]]["decode_noisy_b1"] is False  # flagged in one run of three: the baseline is not


def test_a_new_score_term_sets_the_direction_compare_and_the_report_use(tmp_path, monkeypatch):
    base = _add(make_run(tmp_path, "base", seed=1), _wer())
    cur = _add(make_run(tmp_path, "cur", seed=2), _wer(shift=-0.1))  # a tenth lower everywhere

    def verdicts():
        cmp = C.compare(C.side_from_run(base), C.side_from_run(cur))
        return {e.state for e in cmp.entries if e.metric == "wer_mean"}

    def wer_table():
        return next(t for t in build([cur]).tables if t.metric.column == "wer_mean")

    # without a term a score is better higher (it is no error by name): lower is worse
    assert verdicts() == {C.REGRESSED} and wer_table().metric.better == V.HIGHER
    monkeypatch.setattr(V, "METRICS", (*V.METRICS, WER))
    assert verdicts() == {C.IMPROVED}
    t = wer_table()
    assert t.metric.title == "Test word error rate (mean ± std over seeds)" and t.metric.better == V.LOWER
    for dims in t.columns:  # ★ on the lowest of each column
        column = [c for (_, d), c in t.cells.items() if d == dims and c.value is not None]
        assert [c.value for c in column if c.best] == [min(c.value for c in column)]


def test_the_layers_below_the_report_never_import_it(tmp_path):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", seed=1)
    code = ("import sys; from mmbench import compare as C, history as H; "
            f"H.record_run({str(tmp_path / 'h.sqlite')!r}, {str(a)!r}); "
            f"C.to_markdown(C.compare(C.side_from_run({str(a)!r}), C.side_from_run({str(b)!r}))); "
            "bad = sorted(m for m in sys.modules if m.startswith('mmbench.report') or m == 'torch'); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_host_slow_figure_says_how_many_rounds_were_left_out_or_that_none_could_be():
    from mmbench import evidence

    row = {"latency_ms_b1": 1.0, "latency_host_slow_b1": True, "latency_slow_rounds_b1": 4}
    assert "4 rounds left out beside a slow host reading" in evidence.describe(row, "latency_ms_b1")
    row["latency_slow_rounds_b1"] = 0  # a slow reading beside every round: the figure is all of them
    text = evidence.describe(row, "latency_ms_b1")
    assert "a slow host reading beside every round" in text and "0 rounds" not in text
