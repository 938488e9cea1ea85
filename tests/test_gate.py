"""The nightly gate on instruction counts: judged by a threshold on their own environment, a wall-time move they do
not confirm is information, a regression stays red until accepted, a runner's new CPU model keeps the counts'
history, new trials start theirs, and counts that vanish are refused."""
import pytest

from mmbench import compare as C
from mmbench import history as H
from tests.fakerun import make_run, trials

SPECS = trials()
IDS = [s["trial_id"] for s in SPECS]


def _states(cmp, state):
    return {(e.trial_id, e.metric) for e in cmp.entries if e.state == state}


def _pair(tmp_path, base_kw=None, cur_kw=None, **kw):
    a = make_run(tmp_path, "a", seed=1, counts=True, **(base_kw or {}))
    b = make_run(tmp_path, "b", seed=2, counts=True, **(cur_kw or {}))
    return C.compare(C.side_from_run(a), C.side_from_run(b), **kw)


def test_counts_within_their_run_to_run_spread_are_unchanged_and_a_real_change_regresses(tmp_path):
    cmp = _pair(tmp_path, cur_kw={"counts_slow": {IDS[3]: 1.10}})
    counted = [e for e in cmp.entries if e.metric.startswith("instr")]
    assert counted and {e.trial_id for e in counted if e.state == C.REGRESSED} == {IDS[3]}
    assert all(e.state == C.UNCHANGED for e in counted if e.trial_id != IDS[3])
    e = next(e for e in counted if e.state == C.REGRESSED)
    assert e.change == pytest.approx(0.10, abs=0.002) and "instruction count" in e.detail
    assert cmp.exit_code == 1
    # a looser threshold lets the same change through
    assert not _states(_pair(tmp_path / "t", cur_kw={"counts_slow": {IDS[3]: 1.10}}, instr_threshold=0.2),
                       C.REGRESSED)


def test_counts_from_another_code_path_are_not_comparable(tmp_path):
    cmp = _pair(tmp_path, cur_kw={"instr_env": "instr-env-2", "counts_slow": {IDS[0]: 1.5}})
    counted = [e for e in cmp.entries if e.metric.startswith("instr")]
    assert counted and all(e.state == C.NOT_COMPARABLE and "different code paths" in e.detail for e in counted)
    assert cmp.refusal and "different code paths" in cmp.refusal


def test_a_wall_time_move_the_counts_do_not_confirm_is_information_not_a_failure(tmp_path):
    cmp = _pair(tmp_path, cur_kw={"slow": {IDS[4]: 1.5}})
    moved = [e for e in cmp.entries if e.trial_id == IDS[4] and e.metric.endswith(("_ms_b1", "_ms_b16"))]
    assert moved and all(e.state == C.NOISE and e.cause == C.UNCONFIRMED for e in moved)
    assert "information, not a failure" in moved[0].detail and "instr" in moved[0].detail
    assert cmp.exit_code == 0
    # confirmed by the counts, the wall-time regression stands beside them
    both = _pair(tmp_path / "b", cur_kw={"slow": {IDS[4]: 1.5}, "counts_slow": {IDS[4]: 1.5}})
    assert ("latency_ms_b16" in {m for t, m in _states(both, C.REGRESSED) if t == IDS[4]})
    # without counts at all, wall time keeps its own verdict
    plain = C.compare(C.side_from_run(make_run(tmp_path / "p", "a", seed=1)),
                      C.side_from_run(make_run(tmp_path / "p", "b", seed=2, slow={IDS[4]: 1.5})))
    assert {t for t, _ in _states(plain, C.REGRESSED)} == {IDS[4]}


def _night(tmp_path, db, i, **kw):
    run = make_run(tmp_path, f"n{i:02d}", seed=i, counts=True, started=f"2026-01-{i + 1:02d}T03:17", **kw)
    H.record_run(db, run)
    return run


def test_a_regressed_night_stays_red_until_accepted_then_its_counts_are_the_baseline(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(6):
        _night(tmp_path, db, i)
    slow = {"counts_slow": {IDS[2]: 1.10}}
    night7 = _night(tmp_path, db, 6, **slow)
    first = C.judge("history:fake", str(night7), db)
    assert {t for t, m in _states(first, C.REGRESSED) if m.startswith("instr")} == {IDS[2]}
    night8 = _night(tmp_path, db, 7, **slow)  # the same slow code, nobody accepted: still red
    second = C.judge("history:fake", str(night8), db)
    assert second.exit_code == 1 and {t for t, _ in _states(second, C.REGRESSED)} == {IDS[2]}
    assert any("not accepted yet" in n and "n06" in n and "n07" in n for n in second.notes)
    assert [v.run_key for v in H.verdicts(db, "fake", unaccepted_only=True)] == ["fake/n06", "fake/n07"]
    v = H.accept(db, str(night8), "the extra pass is meant", who="tester")
    assert (v.accepted_by, v.accepted_why) == ("tester", "the extra pass is meant") and v.accepted
    night9 = _night(tmp_path, db, 8, **slow)  # judged against the accepted night's counts: green at once
    third = C.judge("history:fake", str(night9), db)
    assert third.exit_code == 0 and not _states(third, C.REGRESSED)
    assert not any("not accepted yet" in n and "n07" in n for n in third.notes)  # n06 is still open, n07 is not
    with pytest.raises(Exception, match="no regressions to accept"):
        H.accept(db, str(night9), "nothing to accept")


def test_a_new_runner_cpu_model_keeps_the_counts_history(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(5):
        _night(tmp_path, db, i, env={"cpu_model": "AMD EPYC 7763"})
    other = _night(tmp_path, db, 5, env={"cpu_model": "Intel Xeon 8370C"}, counts_slow={IDS[1]: 1.2})
    cmp = C.judge("history:fake", str(other), db)
    assert cmp.refusal is None
    assert {t for t, m in _states(cmp, C.REGRESSED)} == {IDS[1]}      # counts judged across the CPU model
    timed = [e for e in cmp.entries if e.metric.endswith("_ms_b1")]
    assert timed and all(e.state == C.NOT_COMPARABLE for e in timed)  # wall time has no history on this model
    assert any("start their history" in n for n in cmp.notes)


def test_an_edited_suite_passes_and_names_its_new_trials(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(5):
        _night(tmp_path, db, i)
    new = [{**SPECS[0], "trial_id": "beef00000001", "label": "tfn(extra)"}]
    run = _night(tmp_path, db, 5, specs=SPECS + new)
    cmp = C.judge("history:fake", str(run), db)
    assert cmp.refusal is None and cmp.exit_code == 0
    assert any("1 new trial(s)" in n and "beef00000001" in n for n in cmp.notes)


def test_a_history_with_counts_refuses_a_run_without_them(tmp_path):
    db = tmp_path / "h.sqlite"
    for i in range(5):
        _night(tmp_path, db, i)
    bare = make_run(tmp_path, "bare", seed=9, started="2026-01-09T03:17")
    H.record_run(db, bare)
    cmp = C.judge("history:fake", str(bare), db)
    assert cmp.refusal and "holds instruction counts" in cmp.refusal and cmp.exit_code == 2


def test_a_database_of_the_previous_schema_is_read_and_migrated_on_write(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    for stmt in H.MIGRATIONS[0].split(";") + H.MIGRATIONS[1].split(";"):
        if stmt.strip():
            con.execute(stmt)
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    assert H.verdicts(db, "fake") == []  # read as it is: no verdicts yet
    run = _night(tmp_path, db, 0)        # a write migrates it
    assert H.list_runs(db)[0].run_key == "fake/n00"
    assert H.baseline(db, "fake", C.side_from_run(run).instr, by="instr_fingerprint").rows
