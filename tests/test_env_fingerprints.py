"""Rows measured on different environments (a cluster's H100 and A100 nodes) are kept apart: compare calls their
timings not comparable, and a report marks the best timing within one environment only. No torch, no Ray."""
import json
from pathlib import Path

from fakerun import ENV, make_run, trials

from mmbench.compare import NOT_COMPARABLE, compare, side_from_run
from mmbench.history import fingerprint, row_fingerprint


def _stamp(run: Path, fp_of) -> None:
    """Give every row its own env_fingerprint, as the Ray executor's rows carry (fp_of: row → fingerprint)."""
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    (run / "results.jsonl").write_text("".join(json.dumps({**r, "env_fingerprint": fp_of(r)}) + "\n" for r in rows))


def test_a_row_fingerprint_is_the_run_environment_with_the_trials_threads():
    row = {"threads": 4}
    assert row_fingerprint(ENV, row) == fingerprint({**ENV, "torch_threads": 4}) != fingerprint(ENV)
    assert row_fingerprint(ENV, {"env_fingerprint": "abc"}) == "abc"


def test_compare_never_compares_timings_of_two_environments(tmp_path):
    specs = trials(methods=("tfn", "late"), dims=(4, 8))
    base = make_run(tmp_path, "base", specs=specs, seed=1)
    cur = make_run(tmp_path, "cur", specs=specs, seed=2, slow={specs[0]["trial_id"]: 3.0})
    other = specs[1]["trial_id"]  # measured on an A100 node now, an H100 node before; the others on the same one
    _stamp(base, lambda r: "h100")
    _stamp(cur, lambda r: "a100" if r["trial_id"] == other else "h100")
    cmp = compare(side_from_run(base), side_from_run(cur))
    moved = [e for e in cmp.entries if e.trial_id == other]
    timings = [e for e in moved if "_ms_b" in e.metric or "_mib_b" in e.metric]
    assert timings and all(e.state == NOT_COMPARABLE and "different environments" in e.detail for e in timings)
    assert all(e.state != NOT_COMPARABLE for e in moved if e.metric in ("params", "flops", "acc_mean"))
    slow = [e for e in cmp.entries if e.trial_id == specs[0]["trial_id"] and e.metric == "latency_ms_b1"]
    assert slow[0].state == "regressed"  # same environment on both sides: judged as ever


def test_a_local_row_matches_a_cluster_row_of_the_same_machine(tmp_path):
    specs = trials(methods=("late",), dims=(4,))
    base = make_run(tmp_path, "local", specs=specs, seed=1)  # rows without env_fingerprint: the run's env
    cur = make_run(tmp_path, "ray", specs=specs, seed=2)
    _stamp(cur, lambda r: row_fingerprint(ENV, r))
    cmp = compare(side_from_run(base), side_from_run(cur))
    assert not [e for e in cmp.entries if "different environments" in e.detail]


def test_a_report_marks_the_best_timing_within_each_environment(tmp_path):
    from mmbench.store import load_runs
    from mmbench.report.tables import build_tables, tagged_rows

    specs = trials(methods=("tfn", "lmf", "late"), dims=(4,))  # tfn, lmf rank 1 and 4, late
    run = make_run(tmp_path, "mixed", specs=specs, seed=1)
    h100 = {specs[0]["trial_id"], specs[1]["trial_id"]}  # tfn and lmf rank 1; lmf rank 4 and late on the A100
    _stamp(run, lambda r: "h100fp" if r["trial_id"] in h100 else "a100fp")
    rows = tagged_rows(load_runs([run]))
    assert len({r["_key"] for r in rows}) == 4 and all(r["_env"] in ("h100fp", "a100fp") for r in rows)
    assert any("h100f" in r["_key"] for r in rows)  # the table row names its environment
    lat = next(t for t in build_tables(rows) if t.metric.column == "latency_ms_b1")
    best = [k for k, c in lat.cells.items() if c.best]
    by_env = {r["_key"]: r["_env"] for r in rows}
    assert sorted(by_env[k] for k, _ in best) == ["a100fp", "h100fp"]  # one best per environment
    params = next(t for t in build_tables(rows) if t.metric.column == "params")
    # Counts do not depend on the machine: judged over all rows, where lmf rank 1 and late tie for the fewest (no ★);
    # per environment each would have been starred.
    low = sorted(c.value for c in params.cells.values())
    assert low[0] == low[1] < low[2]
    assert not any(c.best for c in params.cells.values())
