"""The suite and environment summary, shared by the markdown and HTML reports."""
from __future__ import annotations

from mmbench import evidence
from mmbench import vocabulary as V
from mmbench.store import Run


def _device(env: dict) -> str:
    dev = env.get("device") or "?"
    what = env.get("gpu_name") if str(dev).startswith("cuda") else env.get("cpu_model")
    return f"{dev} ({what})" if what else dev


def run_summary(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    cols = ["run", "suite", "state", "device", "torch", "threads", "git", "started", "trials (ok / failed)"]
    rows = []
    for r in runs:
        ok = sum(1 for x in r.rows if x.get("status") == "ok")
        unlearned = sum(1 for x in r.rows if x.get("status") == "ok" and x.get("did_not_learn") is True)
        rows.append([r.label, r.suite, r.meta.get("state", "?") + (" (truncated)" if r.truncated else ""),
                     _device(r.env), str(r.env.get("torch", "?")), _threads(r),
                     str(r.env.get("mmbench_git_sha") or "unknown")[:12], str(r.meta.get("started") or "?"),
                     f"{ok} / {len(r.rows) - ok}" + (f" ({unlearned} did not learn)" if unlearned else "")])
    return cols, rows


def _threads(run: Run) -> str:
    """The threads the trials really ran with (each row's `threads`), not the process default."""
    used = sorted({int(x["threads"]) for x in run.rows if isinstance(x.get("threads"), (int, float))
                   and not isinstance(x.get("threads"), bool)})
    if used:
        return ", ".join(map(str, used))
    return f"{run.env.get('torch_threads', '?')} (process default)"


def flag_summary(rows: list[dict]) -> str:
    """One line: how many rows carry a flagged timing, by flag, and the evidence behind it."""
    timed = [r for r in rows if r.get("status") == "ok" and any(V.timing(k) for k in r)]
    if not timed:
        return ""
    by_flag: dict[str, list[dict]] = {}
    for r in timed:
        for f in evidence.row_flags(r):
            by_flag.setdefault(f, []).append(r)
    flagged = {id(r) for rs in by_flag.values() for r in rs}
    utils = [v for r in timed for v in _evidence(r, V.CPU_UTIL)]
    if not flagged:
        extra = f" (CPU utilisation of the timed regions ≥ {min(utils):.2f})" if utils else ""
        return f"Timing evidence: none of the {len(timed)} timed rows is flagged{extra}."
    parts = []
    for f, rs in by_flag.items():
        why = V.FLAGS[f]
        if f == V.CONTENDED:
            low = [v for r in rs for v in _evidence(r, V.CPU_UTIL)]
            load = [r["load_avg_1m"] for r in rs if isinstance(r.get("load_avg_1m"), (int, float))]
            procs = [r["runnable_procs"] for r in rs if isinstance(r.get("runnable_procs"), (int, float))]
            waits = [v for r in rs for v in _evidence(r, V.WAIT)]
            why += "".join([f"; waited up to {max(waits):.0%} of the time for a CPU" if waits else "",
                            f"; CPU utilisation down to {min(low):.2f}" if low else "",
                            f"; load average up to {max(load):.1f}" if load else "",
                            f"; up to {max(procs):g} runnable processes" if procs else ""])
        parts.append(f"{len(rs)} {f.replace('_', '-')} ({why})")
    return (f"Timing evidence: {len(flagged)} of {len(timed)} timed rows have a flagged timing (⚠, not to be "
            f"trusted as a cost): " + "; ".join(parts) + ".")


def _evidence(row: dict, what: str) -> list[float]:
    """One kind of evidence (CPU utilisation, wait share) of every timing in a row, where it was measured."""
    return [v for k in row if (t := V.timing(k)) and isinstance(v := row.get(t.evidence(what)), (int, float))
            and not isinstance(v, bool)]


def state_note(runs: list[Run]) -> list[str]:
    """A warning for each run that did not complete: its tables are partial."""
    return [f"Run {r.label} is {r.meta.get('state', 'unknown')}"
            + (" and its results file ends in a cut-off line" if r.truncated else "")
            + ": its tables are incomplete." for r in runs if not r.complete]


def task_note(t: dict) -> str:
    parts = []
    if "modalities" in t:
        parts.append(f"{len(t['modalities'])} modalities ({', '.join(map(str, t['modalities']))})")
    ceiling = ceiling_text(t)
    if ceiling:
        parts.append(ceiling)
    if "chance_accuracy" in t:
        parts.append(f"chance {t['chance_accuracy']:.3f}")
    return "; ".join(parts) + "." if parts else ""


def ceiling_text(t: dict) -> str:
    """The ceiling on the scored test split with its binomial standard error, and its Monte-Carlo expectation."""
    b = t.get("bayes_accuracy")
    if not isinstance(b, (int, float)):
        return ""
    n = (t.get("sizes") or {}).get("test")
    se = t.get("bayes_accuracy_se")
    text = f"Bayes-optimal accuracy on the test split {b:.3f}"
    if isinstance(se, (int, float)):
        text += f" ± {se:.3f} (binomial SE{f', n = {n}' if n else ''})"
    mc = t.get("bayes_accuracy_mc")
    if isinstance(mc, (int, float)):
        mse = t.get("bayes_accuracy_mc_se")
        text += f"; expected (Monte Carlo) {mc:.3f}" + (f" ± {mse:.1g}" if isinstance(mse, (int, float)) else "")
    return text
