"""The suite and environment summary, shared by the markdown and HTML reports."""
from __future__ import annotations

from mmbench.report.load import Run


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
                     _device(r.env), str(r.env.get("torch", "?")), str(r.env.get("torch_threads", "?")),
                     str(r.env.get("mmbench_git_sha") or "unknown")[:12], str(r.meta.get("started") or "?"),
                     f"{ok} / {len(r.rows) - ok}" + (f" ({unlearned} did not learn)" if unlearned else "")])
    return cols, rows


def state_note(runs: list[Run]) -> list[str]:
    """A warning for each run that did not complete: its tables are partial."""
    return [f"Run {r.label} is {r.meta.get('state', 'unknown')}"
            + (" and its results file ends in a cut-off line" if r.truncated else "")
            + ": its tables are incomplete." for r in runs if not r.complete]


def task_note(t: dict) -> str:
    parts = []
    if "modalities" in t:
        parts.append(f"{len(t['modalities'])} modalities ({', '.join(map(str, t['modalities']))})")
    if "bayes_accuracy" in t:
        parts.append(f"Bayes-optimal accuracy {t['bayes_accuracy']:.3f} (± {t.get('bayes_accuracy_se', 0):.3f})")
    if "chance_accuracy" in t:
        parts.append(f"chance {t['chance_accuracy']:.3f}")
    return "; ".join(parts) + "." if parts else ""
