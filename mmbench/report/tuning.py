"""What tuning did, per configuration of a task (rows of a tuned suite, mmbench/tuning.py): the untuned (tuning
trial 0) and tuned validation scores, the test accuracy of the chosen configuration and the values chosen."""
from __future__ import annotations

from typing import Any

HEADER = ("configuration", "tuning trials", "validation untuned → tuned", "test acc (tuned)", "chosen")


def _num(v: Any, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def _value(v: Any) -> str:
    return format(v, ".3g") if isinstance(v, float) else str(v)


def rows(task_rows: list[dict]) -> list[tuple[str, ...]]:
    """One line per tuned configuration of a task; empty when the task's rows were not tuned."""
    out = []
    for r in task_rows:
        if r.get("status") != "ok" or not isinstance(r.get("tuned_params"), dict):
            continue
        gain = r.get("tune_gain")
        val = f"{_num(r.get('untuned_val'))} → {_num(r.get('tuned_val'))}" + (f" ({gain:+.3f})" if
                                                                            isinstance(gain, float) else "")
        budget = f"{r.get('tune_trials')} of {r.get('tune_budget')}" + (
            f", {r['tune_pruned']} pruned" if r.get("tune_pruned") else "") + (
            f", {r['tune_failed']} failed" if r.get("tune_failed") else "")
        chosen = ", ".join(f"{k}={_value(v)}" for k, v in sorted(r["tuned_params"].items()))
        out.append((f"{r['_key']} {r.get('dims', '')}", budget, val, _num(r.get("acc_mean")), chosen))
    return out


NOTE = ("Each configuration was tuned on validation only (one seed per tuning trial); tuning trial 0 ran the untuned "
        "values. The tables and figures above show the tuned configurations, trained over the suite's seeds and "
        "tested once.")
DECIDES = ("Accuracy is tuned accuracy: every configuration was tuned with the same budget on validation only "
           "(see Tuning under the task).")
