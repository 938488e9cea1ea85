"""Regression verdicts, trial by trial: significance with runs or rounds as the unit and a factor for timings,
flagged timings as noise, any change for counts, the seed spread for accuracy, explicit failed / not comparable
states, and a refusal (exit 2) when (nearly) nothing was comparable."""
import json

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
    # five round medians a side, all slower: the smallest p the exact test can give with rounds as the unit
    assert e.change == pytest.approx(0.25, abs=0.05) and e.p_value == pytest.approx(1 / 252)
    assert "rounds as the unit" in e.detail
    assert cmp.exit_code == 1
    # the same slowdown the other way round is an improvement, not a regression
    back = C.compare(C.side_from_run(tmp_path / "fake" / "b"), C.side_from_run(tmp_path / "fake" / "a"))
    assert {t for t, _ in _states(back, C.IMPROVED)} == {IDS[4]} and back.exit_code == 0


def test_a_budget_too_small_to_judge_says_so(tmp_path):
    # three rounds a side cannot make p < 0.01 (the smallest possible p is 1/20): a 25% shift is noise, said so
    cmp = _cmp(tmp_path, base_kw={"rounds": 3}, cur_kw={"rounds": 3, "slow": {IDS[4]: 1.25}})
    noise = [e for e in cmp.entries if e.state == C.NOISE]
    assert {e.trial_id for e in noise} == {IDS[4]} and cmp.exit_code == 0
    assert all(C.TOO_SMALL in e.detail and "0.05" in e.detail for e in noise)
    # runs without per-round medians (raw samples only) are not judged on pooled samples either
    a, b = tmp_path / "fake" / "a", tmp_path / "fake" / "b"
    for run in (a, b):
        f = run / "samples.jsonl"
        f.write_text("".join(line.replace("_rounds_ms_", "_old_ms_") + "\n" for line in f.read_text().splitlines()))
    cmp = C.compare(C.side_from_run(a), C.side_from_run(b))
    assert not cmp.regressions and all("no per-round medians" in e.detail for e in cmp.entries if e.state == C.NOISE)


def test_a_shift_below_threshold_plus_allowance_is_not_a_regression_between_two_runs(tmp_path):
    cmp = _cmp(tmp_path, cur_kw={"slow": {IDS[4]: 1.06}}, threshold=0.10)
    assert not cmp.regressions
    cmp = _cmp(tmp_path / "x", cur_kw={"slow": {IDS[4]: 1.06}}, threshold=0.03)  # beyond 3%, within 3% + 10%
    assert not cmp.regressions and "run-to-run allowance" in next(e.detail for e in cmp.entries if e.state == C.NOISE)
    cmp = _cmp(tmp_path / "y", cur_kw={"slow": {IDS[4]: 1.06}}, threshold=0.03, allowance=0.0)
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[4]}


def test_a_process_level_shift_of_the_same_code_is_not_a_regression(tmp_path):
    # every timing of the second run 15% slower, with tight rounds: what two runs of one code do on a shared host
    cmp = _cmp(tmp_path, cur_kw={"run_factor": 1.15})
    assert not cmp.regressions and cmp.exit_code == 0
    assert cmp.count(C.NOISE) == 4 * len(IDS)  # every timing: beyond the threshold, within the allowance


def test_flagged_timings_are_noise_never_regressions(tmp_path):
    # contended trials are twice as slow in the fake; flagged on one side, they are noise, named so
    cmp = _cmp(tmp_path, cur_kw={"contended": {IDS[2]}, "noisy": {IDS[3]}, "slow": {IDS[3]: 1.5}})
    assert not cmp.regressions
    e = next(e for e in cmp.entries if e.trial_id == IDS[2] and e.metric == "fusion_latency_ms_b1")
    assert e.state == C.NOISE and "current run: contended (CPU utilisation 0.45)" in e.detail
    e = next(e for e in cmp.entries if e.trial_id == IDS[3] and e.metric == "latency_ms_b16")
    assert e.state == C.NOISE and "noisy" in e.detail
    cmp = _cmp(tmp_path / "h", cur_kw={"host_slow": {IDS[1]}, "slow": {IDS[1]: 1.5}})
    e = next(e for e in cmp.entries if e.trial_id == IDS[1] and e.metric == "latency_ms_b1")
    assert not cmp.regressions and e.state == C.NOISE
    assert "current run: host_slow (4 rounds left out beside a slow host reading" in e.detail
    back = _cmp(tmp_path / "x", base_kw={"contended": {IDS[2]}})  # a contended baseline makes no improvement
    assert not _states(back, C.IMPROVED) and "baseline: contended" in next(
        e.detail for e in back.entries if e.trial_id == IDS[2] and e.state == C.NOISE)


def test_a_timing_that_moved_with_the_host_s_own_speed_is_noise(tmp_path):
    # the whole current run 30% slower and its reference workload 30% slower too: the machine moved, not the code
    cmp = _cmp(tmp_path, cur_kw={"run_factor": 1.3, "host": 1.3})
    assert not cmp.regressions and cmp.exit_code == 0
    timed = [e for e in cmp.entries if "_ms_b" in e.metric]
    assert timed and all(e.state == C.NOISE and e.detail.startswith("the host ran its fixed reference workload +30%")
                         for e in timed)
    # a slowdown of one trial on a host at its usual speed (within the tolerance) is still found
    cmp = _cmp(tmp_path / "x", cur_kw={"slow": {IDS[4]: 1.3}, "host": 1 + C.HOST_TOLERANCE / 2})
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[4]}
    # a faster host explains no slowdown (and a slower one no speed-up)
    cmp = _cmp(tmp_path / "y", cur_kw={"slow": {IDS[4]: 1.3}, "host": 0.8})
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[4]}
    # rows without the reference (CUDA, older runs) are judged as before
    cmp = _cmp(tmp_path / "z", base_kw={"host": None}, cur_kw={"slow": {IDS[4]: 1.3}, "host": 1.3})
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[4]}


def test_the_summary_counts_noise_by_why(tmp_path):
    # each way a move is held back names its cause, and the counts of the causes add up to the noise count
    n = 4 * len(IDS)  # every timing of every trial
    cases = [({"run_factor": 1.15}, {}, C.ALLOWED),
             ({"run_factor": 1.3, "host": 1.3}, {}, C.HOST_MOVED),
             ({"slow": {IDS[4]: 1.25}, "rounds": 3}, {"rounds": 3}, C.SMALL),
             ({"contended": {IDS[2]}}, {}, C.FLAGGED)]
    for i, (cur_kw, base_kw, cause) in enumerate(cases):
        cmp = _cmp(tmp_path / str(i), base_kw=base_kw, cur_kw=cur_kw)
        causes = cmp.noise_causes()
        assert set(causes) == {cause} and sum(causes.values()) == cmp.count(C.NOISE) > 0, (cause, causes)
        assert f"{cmp.count(C.NOISE)} noise ({cmp.count(C.NOISE)} {cause})" in cmp.counts_text()
        assert cmp.to_dict()["noise_causes"] == causes
    assert cmp.count(C.NOISE) == 4 and _cmp(tmp_path / "a", cur_kw={"run_factor": 1.15}).count(C.NOISE) == n
    # two causes in one comparison: most first, both named, in the markdown too
    cmp = _cmp(tmp_path / "two", cur_kw={"run_factor": 1.15, "contended": {IDS[2]}})
    causes = cmp.noise_causes()
    assert list(causes) == [C.ALLOWED, C.FLAGGED] and causes[C.FLAGGED] == 4 and sum(causes.values()) == n
    assert f"noise, by why: {n - 4} {C.ALLOWED}, 4 {C.FLAGGED}" in C.to_markdown(cmp)
    # a score within the seed spread names its own (a history's causes: the history tests below)
    acc = _cmp(tmp_path / "acc", cur_kw={"acc_delta": {IDS[3]: -0.001}})
    assert next(e.cause for e in acc.entries if (e.trial_id, e.metric) == (IDS[3], "acc_mean")) == C.SEED_SPREAD


def test_exact_memory_is_judged_by_the_threshold_alone(tmp_path):
    a = make_run(tmp_path, "a", seed=1)
    b = make_run(tmp_path, "b", seed=2)
    rows = [json.loads(line) for line in (b / "results.jsonl").read_text().splitlines()]
    rows[0]["peak_alloc_mib_b16"] *= 1.5
    (b / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmp = C.compare(C.side_from_run(a), C.side_from_run(b))
    assert _states(cmp, C.REGRESSED) == {(IDS[0], "peak_alloc_mib_b16")}
    assert "exact memory measure (cpu_live_tensors)" in cmp.regressions[0].detail
    rows[0]["mem_measure"] = "rss"
    (b / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmp = C.compare(C.side_from_run(a), C.side_from_run(b))
    assert not cmp.regressions and (IDS[0], "peak_alloc_mib_b16") in _states(cmp, C.NOISE)


def test_different_budgets_threads_or_environments_are_refused_with_the_reason(tmp_path):
    quick_specs = [{**s, "trial_id": s["trial_id"][:-1] + "q"} for s in SPECS]  # --quick trials have other ids
    cmp = _cmp(tmp_path, base_kw={"quick": True, "specs": quick_specs})
    assert cmp.exit_code == 2 and not cmp.regressions
    assert cmp.refusal == ("nothing was comparable: the baseline was run with --quick and the current run without "
                           "(different budgets: compare runs of the same budget)")
    cmp = _cmp(tmp_path / "t", cur_kw={"threads": 2})
    assert cmp.exit_code == 2 and "timings were comparable" in cmp.refusal
    assert "different threads (1 in the baseline, 2 now)" in cmp.refusal
    assert (IDS[0], "params") in _states(cmp, C.UNCHANGED)  # counts are still compared
    cmp = _cmp(tmp_path / "e", cur_kw={"env": {"cpu_model": "Other CPU"}})
    assert cmp.exit_code == 2 and "cpu_model 'Test CPU' vs 'Other CPU'" in cmp.refusal
    e = next(e for e in cmp.entries if e.metric == "latency_ms_b1")
    assert e.state == C.NOT_COMPARABLE and e.ratio is not None  # the ratio is still shown
    # a few not comparable entries (a trial added) do not refuse the comparison
    cmp = _cmp(tmp_path / "n", cur_kw={"specs": SPECS + trials(methods=("early",), dims=(4,))})
    assert cmp.refusal is None and cmp.count(C.NOT_COMPARABLE) == 1


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
    for i in range(5):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00",
                                  run_factor=(1.0, 1.04, 0.97, 1.02, 0.99)[i]))
    cur = make_run(tmp_path, "cur", seed=9, slow={IDS[5]: 1.3}, started="2026-01-07T00:00")
    H.record_run(db, cur)  # `mmbench run` records itself before the comparison
    base, side = C.load_sides("history:fake:5", str(cur), db)
    assert "fake/cur" not in base.note and "5 run(s)" in base.note
    cmp = C.compare(base, side)
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[5]}
    e = next(e for e in cmp.regressions)
    assert "runs as the unit: 5 history runs" in e.detail and e.p_value < 0.01
    short, side = C.load_sides("history:fake:4", str(cur), db)  # four runs: too few to know the spread
    assert not C.compare(short, side).regressions
    with pytest.raises(UserError, match="no baseline"):
        C.load_sides("history:fake", str(make_run(tmp_path, "gpu", env={"device": "cuda"})), db)
    with pytest.raises(UserError, match="history:SUITE"):
        C.load_sides("history:", str(cur), db)
    with pytest.raises(UserError, match="one side must be a run directory"):
        C.load_sides("history:fake", "history:fake", db)


def test_history_is_matched_to_the_host_speed_of_the_run_judged(tmp_path):
    """A host that switches between two speeds (the reference 40% slower, the timings 60%): a history of both is
    ~25% apart run to run, where a 25% slowdown hides; matched on host_ref_ms, the runs at this run's speed find it."""
    db = tmp_path / "h.sqlite"
    for i in range(10):
        slow = i % 2 == 1
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-{i + 1:02d}T00:00",
                                  run_factor=1.6 if slow else 1.0, host=1.4 if slow else 1.0))
    fast = make_run(tmp_path, "fast", seed=20, slow={IDS[5]: 1.25}, started="2026-01-20T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(fast), db))
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[5]}
    assert all("runs as the unit: 5 history runs" in e.detail for e in cmp.regressions)
    unmatched = make_run(tmp_path, "nohost", seed=20, slow={IDS[5]: 1.25}, host=None, started="2026-01-20T00:00")
    assert not C.compare(*C.load_sides("history:fake", str(unmatched), db)).regressions  # the last 5, both speeds
    # unchanged code at the slow speed: judged against the slow runs, unchanged (not noise "the host moved")
    slowed = make_run(tmp_path, "slow", seed=21, run_factor=1.6, host=1.4, started="2026-01-21T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(slowed), db))
    timed = [e for e in cmp.entries if "latency_ms_b" in e.metric]
    assert not cmp.regressions and timed and all(e.state == C.UNCHANGED for e in timed)
    # a speed the history never ran at: noise, the host's move named
    other = make_run(tmp_path, "other", seed=22, slow={IDS[5]: 1.25}, host=1.2, started="2026-01-22T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(other), db))
    timed = [e for e in cmp.entries if e.trial_id == IDS[5] and "latency_ms_b" in e.metric]
    assert not cmp.regressions and all(e.state == C.NOISE and "host ran" in e.detail for e in timed)
    # four runs at this speed: too few to judge, said so
    few = tmp_path / "few.sqlite"
    for i in range(4):
        H.record_run(few, make_run(tmp_path / "few", f"r{i}", seed=i, started=f"2026-01-{i + 1:02d}T00:00"))
    cmp = C.compare(*C.load_sides("history:fake", str(fast), few))
    assert not cmp.regressions and any("4 unflagged run(s) of this trial at this run's host speed" in e.detail
                                       for e in cmp.entries if e.trial_id == IDS[5])


def test_a_timing_flagged_in_one_night_leaves_the_history_its_other_runs(tmp_path):
    """The last 5 runs in which the timing is unflagged (at this run's host speed), of up to SPEED_POOL × 5: one
    flagged night does not leave the trial with a history too small to judge."""
    db = tmp_path / "h.sqlite"
    for i in range(6):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-{i + 1:02d}T00:00",
                                  host_slow={IDS[5]} if i == 4 else frozenset()))
    cur = make_run(tmp_path, "cur", seed=20, slow={IDS[5]: 1.25}, started="2026-01-20T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(cur), db))
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[5]}


def test_history_judges_against_its_run_to_run_spread(tmp_path):
    db = tmp_path / "h.sqlite"
    # a history whose runs differ by up to 30% (a shared host): a 25% slower run lies inside it
    for i, f in enumerate((1.0, 1.3, 0.9, 1.2, 1.05)):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00", run_factor=f))
    cur = make_run(tmp_path, "cur", seed=9, slow={IDS[5]: 1.25}, started="2026-01-09T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(cur), db))
    assert not cmp.regressions and cmp.exit_code == 0
    assert set(cmp.noise_causes()) <= {C.NOT_SIGNIFICANT, C.INSIDE} and cmp.noise_causes()
    # two runs in the history: too few to know the run-to-run spread
    db2 = tmp_path / "h2.sqlite"
    for i in range(2):
        H.record_run(db2, make_run(tmp_path / "two", f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00"))
    cmp = C.compare(*C.load_sides("history:fake", str(cur), db2))
    assert not cmp.regressions
    assert any(C.TOO_SMALL in e.detail and "2 unflagged run(s)" in e.detail for e in cmp.entries)
    assert all(e.cause == C.SMALL for e in cmp.entries if C.TOO_SMALL in e.detail and e.state == C.NOISE)


def test_a_run_whose_median_moved_with_only_part_of_its_rounds_is_noise_against_history(tmp_path):
    # 3 of the 5 rounds 30% slow (a slow stretch of the machine): the median moves +30%, the fastest rounds not at all
    db = tmp_path / "h.sqlite"
    for i in range(5):
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00"))
    part = make_run(tmp_path, "part", seed=9, partial={IDS[5]: 1.3}, started="2026-01-09T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(part), db))
    e = next(e for e in cmp.entries if e.trial_id == IDS[5] and e.metric == "latency_ms_b1")
    assert e.change > 0.2 and e.state == C.NOISE and "part of the run moved, not all of it" in e.detail
    assert e.cause == C.PARTIAL
    assert not cmp.regressions
    whole = make_run(tmp_path, "whole", seed=9, slow={IDS[5]: 1.3}, started="2026-01-09T00:00")
    cmp = C.compare(*C.load_sides("history:fake", str(whole), db))
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[5]}


def test_history_leaves_flagged_runs_out_of_its_spread(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(6):  # the newest history run was contended on IDS[5]: left out, five clean runs remain
        H.record_run(db, make_run(tmp_path, f"r{i}", seed=i, started=f"2026-01-0{i + 1}T00:00",
                                  contended={IDS[5]} if i == 5 else set()))
    base = C.side_from_history("history:fake:6", db, C.side_from_run(make_run(tmp_path, "x", seed=8)))
    assert len(base.runs[IDS[5]]["fusion_latency_ms_b1"]) == 5 and len(base.runs[IDS[4]]["fusion_latency_ms_b1"]) == 6
    assert base.rows[IDS[5]]["fusion_latency_contended_b1"] is False
    cur = make_run(tmp_path, "cur", seed=9, slow={IDS[5]: 1.5}, started="2026-01-09T00:00")
    cmp = C.compare(*C.load_sides("history:fake:6", str(cur), db))
    assert {t for t, _ in _states(cmp, C.REGRESSED)} == {IDS[5]}


def test_a_history_without_the_current_trials_is_not_a_pass(tmp_path):
    db = tmp_path / "h.sqlite"
    H.record_run(db, make_run(tmp_path, "full", seed=1))
    quick = make_run(tmp_path, "quick", quick=True, specs=[{**s, "trial_id": s["trial_id"][:-1] + "q"} for s in SPECS])
    with pytest.raises(UserError, match="no baseline: none of the 12 trials.*--quick or not"):
        C.load_sides("history:fake", str(quick), db)


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
        return C.Side("s", "suite", "fp", None, {"t": {"trial_id": "t", "status": "ok", **row}})

    base = side(mae_mean=1.0, mae_std=0.01, corr_mean=0.5, corr_std=0.01)
    cmp = C.compare(base, side(mae_mean=1.2, mae_std=0.01, corr_mean=0.6, corr_std=0.01))
    assert {(e.metric, e.state) for e in cmp.entries} == {("mae_mean", C.REGRESSED), ("corr_mean", C.IMPROVED)}
    cmp = C.compare(base, side(mae_mean=0.8, mae_std=0.01, corr_mean=0.505, corr_std=0.01))
    assert {(e.metric, e.state) for e in cmp.entries} == {("mae_mean", C.IMPROVED), ("corr_mean", C.NOISE)}


def test_raw_seed_scores_are_found_for_any_seed_metric():
    raw = {"seeds": [{"seed": 0, "test": {"acc": 0.8, "mae": 0.3}}, {"seed": 1, "test": {"acc": 0.9, "mae": 0.2}}]}
    assert H.raw_samples("acc_mean", raw) == [0.8, 0.9] and H.raw_samples("mae_mean", raw) == [0.3, 0.2]
    assert H.raw_samples("acc_mean", {"seeds": [{"test_accuracy": 0.7}]}) == [0.7]  # the earlier layout
