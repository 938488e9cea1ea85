"""report.md: one comparison table per task and metric (method × dims), with the accuracy ceiling beside it."""
from __future__ import annotations

from typing import Any, Callable

from mmbench.store import RunDir


def _num(v: float) -> str:
    if v is None or v != v:
        return "—"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.2f}G"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def _metrics(rows: list[dict]) -> list[tuple[str, str, Callable[[dict], str]]]:
    """(title, column, cell formatter) for each metric present in the rows."""
    present = {k for r in rows for k in r}
    out: list[tuple[str, str, Callable[[dict], str]]] = []
    if "acc_mean" in present:
        out.append(("Test accuracy (mean ± std over seeds)", "acc_mean",
                    lambda r: f"{r['acc_mean']:.3f} ± {r.get('acc_std', 0):.3f}"))
    for col, title in (("params", "Parameters, whole model"), ("fusion_params", "Parameters, fusion layer"),
                       ("flops", "FLOPs per sample, whole model (2 × multiply-adds)"),
                       ("fusion_flops", "FLOPs per sample, fusion layer")):
        if col in present:
            out.append((title, col, lambda r, c=col: _num(r.get(c))))
    batches = sorted({int(k.rsplit("_b", 1)[1]) for k in present if k.startswith("fusion_latency_ms_b")})
    for b in batches:
        for prefix, what in (("fusion_", "fusion layer"), ("", "whole model")):
            col = f"{prefix}latency_ms_b{b}"
            out.append((f"Forward latency, {what}, batch {b} (median ms ± IQR)", col,
                        lambda r, c=col, p=prefix, b=b: (f"{r[c]:.4g} ± {r.get(f'{p}latency_iqr_ms_b{b}', 0):.2g}"
                                                          + (" ⚠" if r.get(f"{p}latency_noisy_b{b}") else ""))))
    for b in batches:
        col = f"peak_mem_mib_b{b}"
        if col in present:
            out.append((f"Peak forward memory, batch {b} (MiB)", col, lambda r, c=col: f"{r[c]:.2f}"))
    return out


def _table(rows: list[dict], fmt: Callable[[dict], str], col: str) -> list[str]:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    dims = list(dict.fromkeys(r["dims"] for r in rows))
    cell: dict[tuple[str, str], str] = {}
    for r in rows:
        ok = r.get("status") == "ok" and r.get(col) is not None
        cell[(r["label"], r["dims"])] = fmt(r) if ok else (r.get("status", "?") if r.get("status") != "ok" else "—")
    lines = ["| method | " + " | ".join(dims) + " |", "|---|" + "---|" * len(dims)]
    lines += [f"| {lab} | " + " | ".join(cell.get((lab, d), "") for d in dims) + " |" for lab in labels]
    return lines


def render(run: RunDir) -> str:
    meta, rows = run.meta(), run.rows()
    env: dict[str, Any] = run.read_json("env.json") if (run.path / "env.json").exists() else {}
    tasks = run.read_json("tasks.json") if (run.path / "tasks.json").exists() else []
    out = [f"# {meta['suite']} — run {run.path.name}", ""]
    if meta.get("state") != "complete":
        out += [f"**This run is {meta.get('state')}: the tables below are incomplete.**", ""]
    device = env.get("gpu_name") if env.get("device", "").startswith("cuda") else env.get("cpu_model")
    out += [f"Device: {env.get('device', '?')} ({device}), torch {env.get('torch', '?')}, "
            f"{env.get('torch_threads', '?')} threads, git {env.get('mmbench_git_sha') or 'unknown'}.", ""]
    info = {t["label"]: t for t in tasks}
    for task in dict.fromkeys(r["task"] for r in rows):
        trows = [r for r in rows if r["task"] == task]
        out += [f"## Task: {task}", ""]
        t = info.get(task, {})
        if "bayes_accuracy" in t:
            out += [f"Bayes-optimal accuracy {t['bayes_accuracy']:.3f} (± {t.get('bayes_accuracy_se', 0):.3f}), "
                    f"chance {t['chance_accuracy']:.3f}.", ""]
        for title, col, fmt in _metrics(trows):
            out += [f"### {title}", "", *_table(trows, fmt, col), ""]
        failed = [r for r in trows if r.get("status") != "ok"]
        if failed:
            out += ["### Failed trials", ""] + [f"- {r['label']} dims {r['dims']}: **{r['status']}** {r.get('error', '')}"
                                                 for r in failed] + [""]
    return "\n".join(out)


def write_report(run: RunDir) -> None:
    run.write_text("report.md", render(run))
