"""Regression verdicts, trial by trial: significance and a factor for timings, any change for counts, the seed
spread for accuracy, explicit failed / not comparable states."""
import pytest

from mmbench import compare as C
from mmbench import history as H
from mmbench.errors import UserError
from tests.fakerun import make_run, trials, truncate_results

SPECS = trials()
IDS = [s["trial_id"] for s in SPECS]


def _cmp(tmp_path, base_kw=None, cur_kw=None, **kw):
    a = make_run(tmp_path, "a", seed=1, **(base_kw or {}))
    b = make_run(tmp_path, "b", seed=2, **(cur_kw or {}))
    return C.compare(C.side_from_run(a), C.side_from_run(b), **kw)


def _states(cmp, state):
    return {(e.trial_id, e.metric) for e in cmp.entries if e.state == state}


def test_same_distribution_is_not_a_regression(tmp_path):
    cmp = _cmp(tmp_path)
    assert cmp.exit_code == 0 and not cmp.regressions
    assert cmp.count(C.UNCHANGED) == len(cmp.entries)


def test_a_25_percent_slowdown_of_one_trial_is_its_regression_and_no_other(tmp_path):
    cmp = _cmp(tmp_path, cur_kw={"slow": {IDS[4]: 1.25}})
    reg = _states(cmp, C.REGRESSED)
    assert {t for t, _ in reg} == {IDS[4]}
    assert {m for _, m in reg} == {"fusion_latency_ms_b1", "latency_ms_b1", "fusion_latency_ms_b16", "latency_ms_b16"}
    e = next(e for e in cmp.entries if e.state == C.REGRESSED)
    assert e.change == pytest.approx(0.25, abs=0.05) and e.p_value < 1e-6
    assert cmp.exit_code == 1
    # the same slowdown the other way round is an improvement, not a regression
    back = C.compare(C.side_from_run(tmp_path / "fake" / "b"), C.side_from_run(tmp_path / "fake" / "a"))
    assert {t for t, _ in _states(back, C.IMPROVED)} == {IDS[4]} and back.exit_code == 0


def test_a_shift_without_significance_is_noise(tmp_path):
    # three samples a side cannot make p < 0.01: a 25% shift is noise, not a regression
    cmp = _cmp(tmp_path, base_kw={"n_samples": 3}, cur_kw={"n_samples": 3, "slow": {IDS[4]: 1.25}})
    assert {t for t, _ in _states(cmp, C.NOISE)} == {IDS[4]} and cmp.exit_code == 0


def test_a_significant_shift_below_the_threshold_is_unchanged(tmp_path):
    cmp = _cmp(tmp_path, cur_kw={"slow": {IDS[4]: 1.06}}, threshold=0.10)
    assert not cmp.regressions
    cmp = _cmp(tmp_path / "x", cur_kw={"slow": {IDS[4]: 1.06}}, threshold=0.03)
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[4]}


def test_any_change_of_parameters_or_flops_is_reported(tmp_path):
    cmp = _cmp(tmp_path, cur_kw={"params_delta": {IDS[1]: 1}})
    assert _states(cmp, C.REGRESSED) == {(IDS[1], m) for m in ("params", "fusion_params", "flops", "fusion_flops")}
    cmp = _cmp(tmp_path / "x", cur_kw={"params_delta": {IDS[1]: -1}})
    assert {m for _, m in _states(cmp, C.IMPROVED)} == {"params", "fusion_params", "flops", "fusion_flops"}


def test_accuracy_drop_beyond_the_seed_spread_is_a_regression(tmp_path):
    cmp = _cmp(tmp_path, cur_kw={"acc_delta": {IDS[2]: -0.1, IDS[3]: -0.001}})
    assert _states(cmp, C.REGRESSED) == {(IDS[2], "acc_mean"), (IDS[2], "f1_mean")}
    assert (IDS[3], "acc_mean") in _states(cmp, C.NOISE)  # smaller than the spread over seeds


def test_failed_and_not_comparable_states(tmp_path):
    specs_b = SPECS[:-1]  # the last trial is missing from the current run
    cmp = _cmp(tmp_path, base_kw={"fail": {IDS[1]}}, cur_kw={"fail": {IDS[0], IDS[1]}, "specs": specs_b})
    by = {e.trial_id: e for e in cmp.entries if e.metric == "—"}
    assert by[IDS[0]].state == C.FAILED and "injected" in by[IDS[0]].detail
    assert by[IDS[1]].state == C.NOT_COMPARABLE and "both" in by[IDS[1]].detail
    assert by[IDS[-1]].state == C.NOT_COMPARABLE and "only in the baseline" in by[IDS[-1]].detail
    assert cmp.exit_code == 1 and [e.trial_id for e in cmp.regressions] == [IDS[0]]
    cmp = _cmp(tmp_path / "x", base_kw={"fail": {IDS[0]}})
    assert {e.state for e in cmp.entries if e.trial_id == IDS[0]} == {C.NOT_COMPARABLE} and cmp.exit_code == 0


def test_history_baseline_matches_the_current_environment_and_leaves_the_current_run_out(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(3):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00"))
    cur = make_run(tmp_path, "cur", seed=9, slow={IDS[5]: 1.3}, started="2026-01-05T00:00")
    H.record_run(db, cur)  # `mmbench run` records itself before the comparison
    base, side = C.load_sides("history:fake:2", str(cur), db)
    assert "fake/cur" not in base.note and "2 run(s)" in base.note
    cmp = C.compare(base, side)
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[5]}
    with pytest.raises(UserError, match="no baseline"):
        C.load_sides("history:fake", str(make_run(tmp_path, "gpu", env={"device": "cuda"})), db)
    with pytest.raises(UserError, match="history:SUITE"):
        C.load_sides("history:", str(cur), db)
    with pytest.raises(UserError, match="one side must be a run directory"):
        C.load_sides("history:fake", "history:fake", db)


def test_bad_input(tmp_path):
    a = make_run(tmp_path, "a")
    other = make_run(tmp_path, "o", suite="other")
    with pytest.raises(UserError, match="different suites: 'fake'.*'other'"):
        C.compare(C.side_from_run(a), C.side_from_run(other))
    with pytest.raises(UserError, match="not a run directory"):
        C.side_from_run(tmp_path)
    truncate_results(a)
    with pytest.raises(UserError, match="results.jsonl is truncated"):
        C.side_from_run(a)
    for good, value in (("10%", 0.1), ("0.25", 0.25), (" 5 % ".replace(" ", ""), 0.05)):
        assert C.parse_threshold(good) == pytest.approx(value)
    for bad in ("ten", "-5%", "0", ""):
        with pytest.raises(UserError, match="--threshold"):
            C.parse_threshold(bad)


def test_markdown_summary_lists_regressions_first(tmp_path):
    cmp = _cmp(tmp_path, cur_kw={"slow": {IDS[4]: 1.25}, "fail": {IDS[0]}})
    md = C.to_markdown(cmp)
    assert md.startswith("## mmbench compare · fake: ❌ 5 regressions")
    assert md.index("### Regressions") < md.index("### Failed trials") < md.index("<details>")
    assert f"| `{IDS[4]}` | lmf(rank=4) | 4x4x4 | fusion_latency_ms_b1 |" in md
    d = cmp.to_dict()
    assert d["regressions"] == 5 and d["counts"]["failed"] == 1


def test_seed_metrics_know_their_direction():
    """An error (mae) rising is worse, a correlation rising is better; each judged against its seed spread."""
    def side(**row):
        return C.Side("s", "suite", "fp", None, {"t": {"trial_id": "t", "status": "ok", **row}}, {})

    base = side(mae_mean=1.0, mae_std=0.01, corr_mean=0.5, corr_std=0.01)
    cmp = C.compare(base, side(mae_mean=1.2, mae_std=0.01, corr_mean=0.6, corr_std=0.01))
    assert {(e.metric, e.state) for e in cmp.entries} == {("mae_mean", C.REGRESSED), ("corr_mean", C.IMPROVED)}
    cmp = C.compare(base, side(mae_mean=0.8, mae_std=0.01, corr_mean=0.505, corr_std=0.01))
    assert {(e.metric, e.state) for e in cmp.entries} == {("mae_mean", C.IMPROVED), ("corr_mean", C.NOISE)}


def test_raw_seed_scores_are_found_for_any_seed_metric():
    raw = {"seeds": [{"seed": 0, "test": {"acc": 0.8, "mae": 0.3}}, {"seed": 1, "test": {"acc": 0.9, "mae": 0.2}}]}
    assert H.raw_samples("acc_mean", raw) == [0.8, 0.9] and H.raw_samples("mae_mean", raw) == [0.3, 0.2]
    assert H.raw_samples("acc_mean", {"seeds": [{"test_accuracy": 0.7}]}) == [0.7]  # the earlier layout
