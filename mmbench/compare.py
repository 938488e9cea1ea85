"""Compare two runs trial by trial (matched by id) and say, per metric, whether anything got worse.

Verdicts (like asv: a factor *and* significance before crying regression):
- latency and memory: regressed / improved when the median moved by more than the threshold AND a one-sided
  Mann-Whitney U test on the raw samples says the shift is significant (p < alpha); moved beyond the threshold without
  significance: noise; within the threshold: unchanged.
- parameters and FLOPs (deterministic): any change is reported (an increase regressed, a decrease improved).
- accuracy and every other test metric averaged over seeds (X_mean beside X_std: F1, errors, correlation,
  robustness): a move for the worse larger than the seed spread (the larger of the two sides' std over seeds)
  regressed; a change within it is noise.
- a trial that was ok and now fails: failed (counts as a regression); on one side only, failing on both, or a metric
  measured on one side only: not comparable.

Either side is a run directory or ``history:SUITE[:N]``: per trial and metric the median of the last N (default 5)
complete runs of that suite on the other side's environment fingerprint, with their raw samples pooled.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmbench.errors import UserError

TIMING = re.compile(r"(?:(?:fusion_)?(?:graph_)?latency_ms|train_step_ms|(?:train_)?peak_(?:mem|alloc|reserved)_mib)"
                    r"_b\d+")
COUNTS = ("params", "fusion_params", "flops", "fusion_flops", "encoder_flops", "train_flops", "fusion_train_flops")
REGRESSED, IMPROVED, NOISE, UNCHANGED, FAILED, NOT_COMPARABLE = (
    "regressed", "improved", "noise", "unchanged", "failed", "not comparable")
STATES = (REGRESSED, FAILED, IMPROVED, NOISE, NOT_COMPARABLE, UNCHANGED)
MIN_SAMPLES = 3  # fewer raw samples a side and no test can be significant


@dataclass
class Side:
    name: str                                    # what the user gave, for display
    suite: str
    fingerprint: str
    run_key: str | None                          # suite/run-dir name (to leave the current run out of a baseline)
    rows: dict[str, dict[str, Any]]              # trial id → row
    samples: dict[str, dict[str, list[float]]]   # trial id → metric → raw samples
    note: str = ""


def parse_threshold(text: str | float) -> float:
    """'10%' or '0.1' → 0.1."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise UserError(f"--threshold: '{text}' is not a fraction or a percentage (e.g. 10% or 0.1)") from None
    if not 0 < v < 10:
        raise UserError(f"--threshold: {text} is out of range (give a positive percentage, e.g. 10%)")
    return v


def side_from_run(path: str | Path) -> Side:
    from mmbench import history
    from mmbench.report.load import load_run

    run = load_run(path, strict=True)
    samples: dict[str, dict[str, list[float]]] = {}
    for r in run.rows:
        raw = run.samples.get(r["trial_id"], {})
        samples[r["trial_id"]] = {m: s for m in r if (s := history.raw_samples(m, raw))}
    note = "" if run.meta.get("state") == "complete" else f"run is {run.meta.get('state')}"
    return Side(str(path), run.suite, history.fingerprint(run.env), f"{run.suite}/{run.path.name}",
                {r["trial_id"]: r for r in run.rows}, samples, note)


def side_from_history(spec: str, db: str | Path, other: Side) -> Side:
    from mmbench import history

    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise UserError(f"'{spec}': a history baseline is history:SUITE or history:SUITE:N")
    last = 5
    if len(parts) == 3:
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise UserError(f"'{spec}': N must be a positive integer")
        last = int(parts[2])
    b = history.baseline(db, parts[1], other.fingerprint, last=last, exclude_run_key=other.run_key)
    return Side(spec, b.suite, b.fingerprint, None, b.rows, b.samples,
                f"median of {len(b.run_keys)} run(s): {', '.join(b.run_keys)}")


def load_sides(baseline: str, current: str, db: str | Path) -> tuple[Side, Side]:
    is_hist = [s.startswith("history:") for s in (baseline, current)]
    if all(is_hist):
        raise UserError("one side must be a run directory (the history baseline matches its environment)")
    if is_hist[0]:
        cur = side_from_run(current)
        return side_from_history(baseline, db, cur), cur
    base = side_from_run(baseline)
    return base, side_from_history(current, db, base) if is_hist[1] else side_from_run(current)


@dataclass
class Entry:
    trial_id: str
    label: str
    task: str
    dims: str
    metric: str
    state: str
    baseline: float | None = None
    current: float | None = None
    change: float | None = None     # relative (timing, counts) or absolute (accuracy)
    p_value: float | None = None
    detail: str = ""


@dataclass
class Comparison:
    baseline: str
    current: str
    suite: str
    threshold: float
    alpha: float
    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for e in self.entries if e.state == state)

    @property
    def regressions(self) -> list[Entry]:
        return [e for e in self.entries if e.state in (REGRESSED, FAILED)]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "current": self.current, "suite": self.suite,
                "threshold": self.threshold, "alpha": self.alpha, "notes": self.notes,
                "counts": {s: self.count(s) for s in STATES}, "regressions": len(self.regressions),
                "entries": [asdict(e) for e in self.entries]}


def compare(base: Side, cur: Side, *, threshold: float = 0.10, alpha: float = 0.01) -> Comparison:
    if base.suite != cur.suite:
        raise UserError(f"cannot compare runs of different suites: '{base.suite}' ({base.name}) and "
                        f"'{cur.suite}' ({cur.name})")
    out = Comparison(base.name, cur.name, cur.suite, threshold, alpha)
    for side, what in ((base, "baseline"), (cur, "current")):
        if side.note:
            out.notes.append(f"{what}: {side.note}")
    if base.fingerprint != cur.fingerprint:
        out.notes.append("the two sides ran on different environments: timings may differ for that reason alone")
    for tid in list(dict.fromkeys([*base.rows, *cur.rows])):
        b, c = base.rows.get(tid), cur.rows.get(tid)
        r = c or b
        ident = dict(trial_id=tid, label=str(r.get("label", "?")), task=str(r.get("task", "?")),
                     dims=str(r.get("dims", "?")))
        if b is None or c is None:
            out.entries.append(Entry(**ident, metric="—", state=NOT_COMPARABLE,
                                     detail=f"only in the {'current run' if b is None else 'baseline'}"))
            continue
        b_ok, c_ok = b.get("status") == "ok", c.get("status") == "ok"
        if not c_ok:
            state = FAILED if b_ok else NOT_COMPARABLE
            detail = f"{c.get('status')}: {c.get('error') or ''}".strip()
            out.entries.append(Entry(**ident, metric="—", state=state,
                                     detail=detail if b_ok else f"failed on both sides ({detail})"))
            continue
        if not b_ok:
            out.entries.append(Entry(**ident, metric="—", state=NOT_COMPARABLE,
                                     detail=f"failed in the baseline ({b.get('status')}), ok now"))
            continue
        for metric in _metrics(b, c):
            e = Entry(**ident, metric=metric, state=UNCHANGED, baseline=_f(b.get(metric)), current=_f(c.get(metric)))
            if e.baseline is None or e.current is None:
                e.state, e.detail = NOT_COMPARABLE, f"measured in the {'baseline' if e.current is None else 'current run'} only"
            elif metric in COUNTS:
                _count(e)
            elif _seed_metric(metric, b, c):
                _accuracy(e, b, c, f"{metric[:-5]}_std")
            else:
                _timing(e, base.samples.get(tid, {}).get(metric), cur.samples.get(tid, {}).get(metric),
                        threshold, alpha, deterministic=b.get("mem_measure") == c.get("mem_measure") == "cuda_allocated"
                        and "_mib_b" in metric)
            out.entries.append(e)
    return out


def _f(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


def _metrics(b: dict, c: dict) -> list[str]:
    keys = list(dict.fromkeys([*b, *c]))
    return [k for k in keys if k in COUNTS or _seed_metric(k, b, c) or TIMING.fullmatch(k)]


def _seed_metric(k: str, b: dict, c: dict) -> bool:
    """A test metric averaged over seeds: X_mean beside its X_std (accuracy, F1, errors, robustness …)."""
    return k.endswith("_mean") and (f"{k[:-5]}_std" in b or f"{k[:-5]}_std" in c)


def _count(e: Entry) -> None:
    if e.current == e.baseline:
        return
    e.change = (e.current - e.baseline) / e.baseline if e.baseline else None
    e.state = REGRESSED if e.current > e.baseline else IMPROVED
    e.detail = "deterministic count changed"


def _accuracy(e: Entry, b: dict, c: dict, std_col: str) -> None:
    from mmbench.report.tables import HIGHER, seed_metric_better

    spread = max(_f(b.get(std_col)) or 0.0, _f(c.get(std_col)) or 0.0)
    e.change = e.current - e.baseline
    if e.change == 0:
        return
    worse = e.change < 0 if seed_metric_better(e.metric[:-5]) == HIGHER else e.change > 0
    if abs(e.change) <= spread:
        e.state, e.detail = NOISE, f"within the seed spread ({spread:.3g})"
    else:
        e.state = REGRESSED if worse else IMPROVED
        e.detail = f"{'worse' if worse else 'better'} by more than the seed spread ({spread:.3g})"


def _timing(e: Entry, bs: list[float] | None, cs: list[float] | None, threshold: float, alpha: float,
            deterministic: bool) -> None:
    if e.current == e.baseline:  # e.g. no memory above the baseline level on either side
        return
    if e.baseline <= 0:
        e.state, e.detail = NOT_COMPARABLE, "baseline is zero"
        return
    e.change = e.current / e.baseline - 1
    if abs(e.change) <= threshold:
        return
    worse = e.change > 0
    if bs and cs and len(bs) >= MIN_SAMPLES and len(cs) >= MIN_SAMPLES:
        from scipy.stats import mannwhitneyu

        e.p_value = float(mannwhitneyu(cs, bs, alternative="greater" if worse else "less").pvalue)
        significant = e.p_value < alpha
        e.detail = f"Mann-Whitney U, n={len(bs)}/{len(cs)}"
    elif deterministic:
        significant, e.detail = True, "deterministic allocator measure"
    else:
        significant, e.detail = False, "too few raw samples for a significance test"
    if significant:
        e.state = REGRESSED if worse else IMPROVED
    else:
        e.state = NOISE


# --- rendering ---------------------------------------------------------------------------------------------------
def _val(metric: str, v: float | None) -> str:
    if v is None:
        return "—"
    if metric.endswith("_mean"):
        return f"{v:.4f}"
    if metric in COUNTS:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _change(e: Entry) -> str:
    if e.change is None:
        return "—"
    if e.metric.endswith("_mean"):
        return f"{e.change:+.4f}"
    return f"{e.change * 100:+.1f}%"


def _rows(entries: list[Entry]) -> list[str]:
    lines = ["| trial | method | dims | metric | baseline | current | change | p | detail |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for e in entries:
        p = "—" if e.p_value is None else f"{e.p_value:.2g}"
        lines.append(f"| `{e.trial_id}` | {e.label} | {e.dims} | {e.metric} | {_val(e.metric, e.baseline)} | "
                     f"{_val(e.metric, e.current)} | {_change(e)} | {p} | {e.detail.replace('|', '/')} |")
    return lines


def to_markdown(cmp: Comparison) -> str:
    """A summary for a CI job page (GitHub job summary markdown)."""
    n = len(cmp.regressions)
    head = f"❌ {n} regression{'s' if n != 1 else ''}" if n else "✅ no regressions"
    out = [f"## mmbench compare · {cmp.suite}: {head}", "",
           f"baseline `{cmp.baseline}` · current `{cmp.current}` · threshold {cmp.threshold * 100:g}% · "
           f"significance p < {cmp.alpha:g} (one-sided Mann-Whitney U on raw samples)", ""]
    out += [f"> {note}" for note in cmp.notes] + ([""] if cmp.notes else [])
    out += ["| " + " | ".join(STATES) + " |", "|" + "---:|" * len(STATES),
            "| " + " | ".join(str(cmp.count(s)) for s in STATES) + " |", ""]
    titles = {REGRESSED: "Regressions", FAILED: "Failed trials (ok in the baseline)", IMPROVED: "Improvements",
              NOISE: "Noise (moved beyond the threshold without significance, or within the seed spread)",
              NOT_COMPARABLE: "Not comparable"}
    for state, title in titles.items():
        es = [e for e in cmp.entries if e.state == state]
        if es:
            out += [f"### {title}", "", *_rows(es), ""]
    out += [f"<details><summary>All {len(cmp.entries)} comparisons</summary>", "", *_rows(cmp.entries), "",
            "</details>", ""]
    return "\n".join(out)
