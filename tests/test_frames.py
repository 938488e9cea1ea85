"""Rows as DataFrames (frames.py): mmbench.load_run(path).frame() and mmbench.history_frame(db, suite, metric)."""
import math

import pytest

import mmbench
from mmbench import history
from mmbench.errors import UserError
from tests.fakerun import make_run


def test_run_frame_types_columns_keeps_empties_and_names_units(tmp_path):
    run = make_run(tmp_path, "a", fail={"401e01eaa23c"})
    loaded = mmbench.load_run(run)
    frame = loaded.frame()
    assert len(frame) == len(loaded.rows) and list(frame.columns[:3]) == ["trial_id", "task", "method"]
    assert str(frame["label"].dtype) == "string" and str(frame["status"].dtype) == "string"
    assert str(frame["rank"].dtype) == "Int64" and str(frame["params"].dtype) == "Int64"
    assert str(frame["latency_ms_b16"].dtype) == "float64" and str(frame["acc_mean"].dtype) == "float64"
    assert str(frame["latency_noisy_b16"].dtype) == "boolean"
    # the failed trial: a row whose numbers are empty, never 0
    failed = frame[frame["trial_id"] == "401e01eaa23c"].iloc[0]
    assert failed["status"] == "error" and math.isnan(failed["latency_ms_b16"]) and failed["params"] is __import__("pandas").NA
    # the values are the rows' own
    ok = {r["trial_id"]: r for r in loaded.rows if r["status"] == "ok"}
    for _, row in frame[frame["status"] == "ok"].iterrows():
        assert row["latency_ms_b16"] == ok[row["trial_id"]]["latency_ms_b16"]
        assert row["params"] == ok[row["trial_id"]]["params"]
    units = frame.attrs["units"]
    assert units["latency_ms_b16"] == "ms" and units["latency_iqr_ms_b16"] == "ms"
    assert units["peak_mem_mib_b16"] == "MiB" and units["params"] == "" and "trial_id" not in units
    # notebook use: a pivot of the latency by method and dims
    table = frame[frame["status"] == "ok"].pivot_table(index="label", columns="dims", values="latency_ms_b16")
    assert table.loc["tfn", "16x16x16"] == ok[next(t for t, r in ok.items() if r["label"] == "tfn"
                                                   and r["dims"] == "16x16x16")]["latency_ms_b16"]


def test_history_frame_one_row_per_run_and_trial_oldest_first(tmp_path):
    db = tmp_path / "h.sqlite"
    runs = [make_run(tmp_path, n, seed=i, started=f"2026-01-0{i + 1}T00:00:00+00:00", run_factor=1 + i)
            for i, n in enumerate(["a", "b", "c"])]
    for r in reversed(runs):  # recorded newest first: the frame still reads oldest first
        history.record_run(db, r)
    frame = mmbench.history_frame(db, "fake", "latency_ms_b16")
    n_trials = len(mmbench.load_run(runs[0]).rows)
    assert len(frame) == 3 * n_trials
    assert list(frame["started"].drop_duplicates()) == sorted(frame["started"].unique())
    assert str(frame["latency_ms_b16"].dtype) == "float64" and frame.attrs["units"] == {"latency_ms_b16": "ms"}
    one = frame[frame["label"] == "tfn"].groupby("run")["latency_ms_b16"].median()
    assert one.is_monotonic_increasing  # run_factor 1, 2, 3
    with pytest.raises(UserError, match="no metric 'latency_ms_b99'"):
        mmbench.history_frame(db, "fake", "latency_ms_b99")
