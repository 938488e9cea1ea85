"""Uncertainty drawn in the report's figures (report/plots.py): accuracy bars are ± the larger of the seed std and
the test split's SE, timing bars the IQR, flagged timings ringed."""
from matplotlib.collections import LineCollection

from mmbench.report import plots as P
from mmbench.report.tables import tagged_rows
from mmbench.store import load_runs
from tests.fakerun import make_run


def _segments(fig):
    return [seg for c in fig.axes[0].collections if isinstance(c, LineCollection) for seg in c.get_segments()]


def test_accuracy_bars_are_the_larger_of_seed_std_and_test_se_and_latency_bars_the_iqr(tmp_path):
    rows = tagged_rows(load_runs([make_run(tmp_path, "a", contended={"ed463c66b99e"})]))
    ok = [r for r in rows if r["status"] == "ok"]
    fig = P.accuracy_vs(rows, "latency_ms_b16", "latency", "t")
    segs = _segments(fig)
    vertical = {(round(s[0][0], 9), round(s[0][1], 9)): s[1][1] - s[0][1] for s in segs if s[0][0] == s[1][0]}
    horizontal = {(round(s[0][1], 9)): s[1][0] - s[0][0] for s in segs if s[0][1] == s[1][1]}
    for r in ok:
        want = 2 * max(r["acc_std"], r["acc_se"])
        got = vertical[(round(r["latency_ms_b16"], 9), round(r["acc_mean"] - want / 2, 9))]
        assert abs(got - want) < 1e-9
        assert abs(horizontal[round(r["acc_mean"], 9)] - r["latency_iqr_ms_b16"]) < 1e-9
    # some rows' seed std is the larger, others' the SE: both are used
    assert {r["acc_std"] > r["acc_se"] for r in ok} == {True, False}
    # the contended trial is ringed
    rings = [c for c in fig.axes[0].collections if c.get_label().startswith("flagged timing")]
    assert len(rings) == 1 and len(rings[0].get_offsets()) == 1


def test_latency_vs_dim_and_vs_batch_carry_iqr_bars(tmp_path):
    rows = tagged_rows(load_runs([make_run(tmp_path, "a")]))
    for fig, col in ((P.vs_dim(rows, "fusion_latency_ms_b16", "ms", "t"), "fusion_latency_iqr_ms_b16"),
                     (P.latency_vs_batch(rows), None)):
        lengths = sorted(round(s[1][1] - s[0][1], 9) for s in _segments(fig))
        assert lengths
        if col:
            assert lengths == sorted(round(r[col], 9) for r in rows if r["status"] == "ok")
    # counts are exact: no bars
    assert _segments(P.vs_dim(rows, "fusion_params", "n", "t")) == []
