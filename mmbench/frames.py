"""Rows as pandas DataFrames, for a notebook: a run's rows (``Run.frame()``) and the history of one metric.

Columns are typed (identity and status text as ``string``, metrics as floats, exact counts and ranks as nullable
integers, flags as nullable booleans) and an empty number stays empty (NaN / <NA>), never 0. Each metric column's
unit is the vocabulary's, in ``frame.attrs["units"]`` (``units(columns)`` for any list of columns). pandas is
imported here only, when a frame is asked for.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from mmbench import vocabulary as V

INT_COLUMNS = ("rank", "threads", "threads_requested", "n_seeds")


def units(columns: Iterable[str]) -> dict[str, str]:
    """{column: unit} for the metric columns among ``columns`` and their spreads (a timing's IQR is in ms); exact
    counts and scores have no unit ('')."""
    out = {}
    for col in columns:
        c = V.column(col)
        if c is not None:
            out[col] = c.kind.unit
            if c.spread:
                out[c.spread] = c.kind.unit
    return {k: v for k, v in out.items() if k in set(columns)}


def _kind(values: list[Any]) -> str:
    """The dtype a column's present values fit: boolean, Int64, float64, string, else object."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "float64"
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    if all(isinstance(v, str) for v in present):
        return "string"
    return "object"


def _dtype(col: str, values: list[Any]) -> str:
    kind = _kind(values)
    c = V.column(col)
    if c is not None and kind in ("Int64", "float64"):  # a metric: a float, an exact count an integer where it is one
        return "Int64" if c.term.kind == V.COUNT and kind == "Int64" else "float64"
    if col in INT_COLUMNS and kind == "float64" and all(float(v).is_integer() for v in values
                                                        if isinstance(v, (int, float)) and v == v):
        return "Int64"
    return kind


def rows_frame(rows: list[dict[str, Any]]):
    """A DataFrame of result rows: one row per trial, the store's column order, typed columns, units in attrs."""
    import pandas as pd

    from mmbench.store import columns

    cols = columns(rows) if rows else []
    data = {}
    for col in cols:
        values = [r.get(col) for r in rows]
        dtype = _dtype(col, values)
        if dtype == "object":
            data[col] = pd.Series(values, dtype=object)
        else:
            data[col] = pd.Series([None if isinstance(v, float) and math.isnan(v) else v for v in values],
                                  dtype=dtype)
    frame = pd.DataFrame(data, columns=cols)
    frame.attrs["units"] = units(cols)
    return frame


def history_frame(db: str | Path, suite: str, metric: str, *, trial: str | None = None, last: int | None = None,
                  env_fingerprint: str | None = None):
    """One metric of a suite over its recorded runs, one row per run and trial, oldest run first: run, started,
    git_sha, trial_id, label, dims, status, and the metric's value (NaN where it was not measured). UserError (as
    ``mmbench history``) for an unknown suite or metric."""
    import pandas as pd

    from mmbench import history

    series = history.trend(db, suite, metric, trial=trial, last=last, env_fingerprint=env_fingerprint)
    recs = []
    for (tid, name), points in series.items():
        label, _, dims = name.rpartition(" · ")
        for p in points:
            recs.append({"run": p.run_key, "started": p.started, "git_sha": p.git_sha, "trial_id": tid,
                         "label": label, "dims": dims, "status": p.status, metric: p.value})
    cols = ["run", "started", "git_sha", "trial_id", "label", "dims", "status", metric]
    frame = pd.DataFrame(recs, columns=cols)
    for c in cols[:-1]:
        frame[c] = frame[c].astype("string")
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce").astype("float64")
    frame = frame.sort_values(["started", "run"], kind="stable", na_position="first").reset_index(drop=True)
    frame.attrs["units"] = units([metric])
    return frame
