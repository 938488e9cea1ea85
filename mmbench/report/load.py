"""Read run directories for reports and comparisons: rows, raw samples, environment, each tagged with its run.

Only the standard library and mmbench.store: a report can be made on a machine without torch, from copied results.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.errors import UserError
from mmbench.store import RunDir


@dataclass
class Run:
    """One run directory, read once."""
    path: Path
    meta: dict[str, Any]
    env: dict[str, Any]
    tasks: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    samples: dict[str, dict[str, Any]]
    label: str = ""                       # how this run is named beside others in a merged report
    truncated: bool = False               # results.jsonl ended in a torn line (a kill mid-write)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suite(self) -> str:
        return self.meta.get("suite", "?")

    @property
    def complete(self) -> bool:
        return self.meta.get("state") == "complete" and not self.truncated


def read_jsonl(path: Path, *, strict: bool) -> tuple[list[dict[str, Any]], bool]:
    """(records, truncated). A torn last line (no trailing newline) is a kill mid-write: dropped, or an error when
    ``strict``. A malformed line in the middle is always an error: the file was damaged, not cut."""
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.split("\n")
    torn = lines[-1].strip() != ""
    if torn and strict:
        raise UserError(f"{path.name} is truncated (last line cut off: {lines[-1][:40]!r}…)", file=str(path.parent))
    out = []
    for i, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path.name} line {i} is not valid JSON", file=str(path.parent)) from None
        if not isinstance(rec, dict):
            raise UserError(f"{path.name} line {i} is not a JSON object", file=str(path.parent))
        out.append(rec)
    return out, torn


def _json_file(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path.name} is not valid JSON", file=str(path.parent)) from None


def load_run(path: str | Path, *, strict: bool = False) -> Run:
    """A run directory as a Run. Raises UserError for a path that is not one (or, when ``strict``, a torn file)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError("not a run directory (no such directory)", file=str(p))
    meta = RunDir(p).meta()
    if not isinstance(meta, dict) or "suite" not in meta:
        raise UserError("not a run directory (run.json has no 'suite')", file=str(p))
    if strict and not (p / "results.jsonl").exists() and meta.get("state") == "complete":
        raise UserError("results.jsonl is missing from a complete run", file=str(p))
    rows, torn = read_jsonl(p / "results.jsonl", strict=strict)
    for i, r in enumerate(rows, 1):
        if "trial_id" not in r:
            raise UserError(f"results.jsonl line {i} has no 'trial_id'", file=str(p))
    samples, _ = read_jsonl(p / "samples.jsonl", strict=False)  # samples precede their row: a torn one has no row
    return Run(path=p, meta=meta, env=_json_file(p / "env.json", {}), tasks=_json_file(p / "tasks.json", []),
               rows=rows, samples={s["trial_id"]: s for s in samples if "trial_id" in s}, truncated=torn)


def load_runs(paths: list[str | Path]) -> list[Run]:
    runs = [load_run(p) for p in paths]
    for run, label in zip(runs, run_labels(runs)):
        run.label = label
    return runs


def run_labels(runs: list[Run]) -> list[str]:
    """Short names that tell runs apart: the device if that differs, else the git sha, else the directory name."""
    if len(runs) == 1:
        return [runs[0].path.name]
    candidates = [
        lambda r: r.env.get("device") or "?",
        lambda r: (r.env.get("mmbench_git_sha") or "unknown")[:7],
        lambda r: f"{r.env.get('device') or '?'}@{(r.env.get('mmbench_git_sha') or 'unknown')[:7]}",
        lambda r: r.path.name,
    ]
    for make in candidates:
        labels = [make(r) for r in runs]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i + 1}:{r.path.name}" for i, r in enumerate(runs)]
