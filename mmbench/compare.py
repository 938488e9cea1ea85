"""Compare two runs trial by trial (matched by id) and say, per metric, whether anything got worse.

Significance is judged where the variation lives. Samples of one process share that process's state (memory layout,
clock, what the neighbours did), so two runs of the same code differ by more than their samples say: raw samples are
never pooled as if independent (like asv, a verdict needs a factor *and* significance). Which columns are timings,
memory, counts and scores, and which way each is better, is mmbench.vocabulary's.

- timing (latency, training step): within the threshold: unchanged. Flagged noisy, contended, host_slow, throttled
  or beside GPU co-tenants on either side, or moved the way the host's own speed moved (a fixed reference workload timed beside
  the trial ran over HOST_TOLERANCE slower, or faster, than in the baseline): noise. Otherwise
  · against a history baseline, runs are the unit: the other side's value is a new draw from the history's per-run
    medians; regressed/improved when a one-sided t prediction test on their logs gives p < alpha AND the value lies
    outside the range of the history's runs (flagged runs are left out of the history) AND the run moved as a
    whole: its fastest quarter of rounds (slowest, for a speed-up) lies beyond the threshold too;
  · between two single runs, rounds are the unit (raw `*_rounds_ms_b*`: the median of each interleaved timing
    round): a one-sided exact Mann-Whitney U on the round medians, p < alpha, AND a move beyond threshold +
    allowance (the run-to-run spread that two single runs cannot show);
  · a budget that cannot reach p < alpha (too few rounds or runs; --quick runs, for one) is noise, "budget too
    small to judge", never a guess.
- instructions per call (valgrind; what the nightly gate judges): exact to ~0.1% on one code path, so no statistics:
  beyond the instruction threshold (default INSTR_THRESHOLD) regressed or improved, within it unchanged; compared
  only where the counts' own environment (instr_env: torch, Python, libc, pinned capability, valgrind, CPU vendor)
  agrees, whatever the wall-time environment. Against a history the figure is the newest clean run's, and that
  history is chosen by instr_env, so a runner's new CPU model does not restart it. In a comparison with counts, a
  timing that regressed or improved while its call's count did not move is noise, "not confirmed by the
  instruction count": information a person reads, not a failure.
- memory: an exact measure (CUDA allocator, CPU live-tensor tracker) by the threshold alone; any other: noise.
- parameters and FLOPs (deterministic): any change (an increase regressed, a decrease improved).
- accuracy and every other test metric averaged over seeds (X_mean beside X_std): a move for the worse larger than
  the seed spread (the larger of the two sides' std over seeds) regressed; a change within it is noise.
- a trial that was ok and now fails: failed (a regression); on one side only, failing on both, a metric measured on
  one side only, timings taken with different threads or on different environments: not comparable.
A comparison in which under MIN_COMPARABLE of the entries were comparable is refused (exit 2) with the reason: an
empty comparison must not pass. With counts, the counts are what must be comparable; a history that holds counts
judged against a run with none (valgrind gone) is refused too: the gate must not vanish quietly. Trials new to a
history (an edited suite) are not refusals: they start their history, and the summary names them.

Either side is a run directory or ``history:SUITE[:N]``: per trial, its last N (default 5) complete runs of that suite
on the other side's environment fingerprint.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmbench import evidence
from mmbench import vocabulary as V
from mmbench.errors import UserError

REGRESSED, IMPROVED, NOISE, UNCHANGED, FAILED, NOT_COMPARABLE = (
    "regressed", "improved", "noise", "unchanged", "failed", "not comparable")
STATES = (REGRESSED, FAILED, IMPROVED, NOISE, NOT_COMPARABLE, UNCHANGED)
# A history needs this many runs of a trial before its run-to-run spread means anything: with 3 or 4, nightly runs of
# unchanged code on this project's VMs were called regressions (an sd from three tight runs, then a 10-20 % night).
MIN_RUNS = 5
MIN_COMPARABLE = 0.5    # a comparison with a smaller share of comparable entries is refused
RUN_ALLOWANCE = 0.10    # two single runs: a move must exceed threshold + this (run-to-run spread on a quiet host)
# The host's own speed (a fixed reference workload timed beside each CPU trial) moved by more than this between the
# two sides: a timing that moved the same way is the machine's, not the code's. Back-to-back quiet runs on this
# project's VMs: see benchmarks/compare_floors.py.
HOST_TOLERANCE = 0.05
# A timing judged against a history is set against the runs of its trial taken at the host speed of the run judged
# (host_ref_ms within HOST_TOLERANCE), the last N of up to this many times N: a VM's vCPUs switch between a fast and
# a slow speed for minutes (this project's: a small model's step 1.6× apart), and a history of both spreads ~30%,
# too wide to find a 25% slowdown in.
SPEED_POOL = 4
# Instructions: the same trial counted in separate processes gives the same count (benchmarks/instr_floors.py); a
# margin stays for what a pass cannot pin (a heap state); a real change of a fusion module's code moves it far more.
INSTR_THRESHOLD = 0.01
EXACT_MEMORY = ("cuda_allocated", "cpu_live_tensors")
TOO_SMALL = "budget too small to judge"
# Why an entry is noise, a short name each (Entry.cause): the summary counts them, so that "113 noise" says whether
# the flags, the host's speed, the budget or the test held the verdict back.
FLAGGED, HOST_MOVED, SMALL, ALLOWED, PARTIAL, INSIDE, NOT_SIGNIFICANT, SEED_SPREAD = (
    "flagged", "host speed moved", "budget too small", "within the two-run allowance", "part of the run moved",
    "inside the history's range", "not significant", "within the seed spread")
UNCONFIRMED = "not confirmed by the instruction count"
NEW = "new"   # a trial (or a count) the history does not hold yet: it starts its history with this run


@dataclass
class Side:
    name: str                                    # what the user gave, for display
    suite: str
    fingerprint: str
    run_key: str | None                          # suite/run-dir name (to leave the current run out of a baseline)
    rows: dict[str, dict[str, Any]]              # trial id → row
    rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # trial → metric → per-round medians
    runs: dict[str, dict[str, list[float]]] | None = None  # history: trial → metric → per-run values (else None)
    at_speed: dict[str, list[tuple[float | None, dict[str, float]]]] | None = None  # history: history.Baseline's
    last: int = 0                                # history: runs a trial's baseline is made of
    env: dict[str, Any] = field(default_factory=dict)
    quick: bool | None = None                    # resolved.json's `quick` (None: unknown, or a history)
    note: str = ""
    instr: str | None = None                     # the instruction counts' environment fingerprint (None: none)
    history_counts: int = 0                      # history: trials whose baseline held instruction counts


def parse_threshold(text: str | float, what: str = "--threshold") -> float:
    """'10%' or '0.1' → 0.1."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise UserError(f"{what}: '{text}' is not a fraction or a percentage (e.g. 10% or 0.1)") from None
    if not (0 < v < 10 or (what == "--allowance" and v == 0)):
        raise UserError(f"{what}: {text} is out of range (give a positive percentage, e.g. 10%)")
    return v


def side_from_run(path: str | Path) -> Side:
    from mmbench import history
    from mmbench.store import load_run

    run = load_run(path, strict=True)
    rounds: dict[str, dict[str, list[float]]] = {}
    for r in run.rows:
        raw = run.samples.get(r["trial_id"], {})
        rounds[r["trial_id"]] = {m: v for m in r if (t := V.timing(m)) and (v := _floats(raw.get(t.rounds)))}
    quick = run.resolved.get("quick") if isinstance(run.resolved.get("quick"), bool) else None
    note = "" if run.meta.get("state") == "complete" else f"run is {run.meta.get('state')}"
    return Side(str(path), run.suite, history.fingerprint(run.env), f"{run.suite}/{run.path.name}",
                {r["trial_id"]: r for r in run.rows}, rounds=rounds, env=run.env, quick=quick, note=note,
                instr=history.instr_fingerprint(run.env))


def _floats(v: Any) -> list[float] | None:
    if not isinstance(v, list):
        return None
    out = [float(x) for x in v if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
    return out or None


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
    suite, common = parts[1], dict(exclude_run_key=other.run_key, trials=list(other.rows))
    try:
        b = history.baseline(db, suite, other.fingerprint, last=last, pool=SPEED_POOL * last, **common)
    except UserError as exc:  # no runs on this environment: with counts, their own history may still judge
        if not (other.instr and exc.message.startswith("no baseline")):
            raise
        b, missing = history.Baseline(suite, other.fingerprint, [], {}, {}, {}), exc
    else:
        missing = None
    ib = None
    if other.instr:
        try:
            ib = history.baseline(db, suite, other.instr, last=last, by="instr_fingerprint", **common)
        except UserError as exc:
            if missing is not None or not exc.message.startswith("no baseline"):
                raise missing or exc from None
    rows, per_run = _merge_counts(b, ib, other.instr)
    note = f"per trial, the last {last} of {len(b.run_keys)} run(s): {', '.join(b.run_keys) or 'none'}"
    if missing is not None:
        note = f"timings: {missing.message} (a new runner model?); they start their history with this run"
    if ib is not None:
        note += f"; instruction counts: the newest of {len(ib.run_keys)} run(s) on their environment"
    elif other.instr:
        note += "; instruction counts: none in the history on their environment yet (they start it with this run)"
    counted = sum(1 for r in b.rows.values() if any(_is_instr(k) for k in r))
    return Side(spec, b.suite, b.fingerprint, None, rows, runs=per_run, at_speed=b.at_speed, last=last,
                env=other.env, note=note, instr=other.instr if ib is not None else None, history_counts=counted)


def _is_instr(metric: str) -> bool:
    c = V.column(metric)
    return c is not None and c.term.kind == V.INSTRUCTIONS


def _merge_counts(b, ib, instr: str | None) -> tuple[dict, dict]:
    """A history side's rows: timings, memory, counts and scores from the runs on the run's environment; instruction
    counts only from the runs on the counts' environment (``ib``), whatever CPU model those ran on."""
    keep = ("trial_id", "task", "label", "dims", "status", "error")
    rows = {t: {k: v for k, v in r.items() if not _is_instr(k)} for t, r in b.rows.items()}
    per_run = {t: {k: v for k, v in m.items() if not _is_instr(k)} for t, m in b.per_run.items()}
    for tid, r in (ib.rows.items() if ib is not None else ()):
        row = rows.setdefault(tid, {k: r[k] for k in keep if k in r})
        row.update({k: v for k, v in r.items() if _is_instr(k)}, **{V.INSTR_ENV: instr})
        per_run.setdefault(tid, {}).update({k: v for k, v in ib.per_run.get(tid, {}).items() if _is_instr(k)})
    return rows, per_run


def unfinished(path: str | Path) -> str | None:
    """Why a run directory is not a whole run ('interrupted, 4 of 9 trials'), or None when it is complete."""
    from mmbench.store import RunDir, read_jsonl

    p = Path(path)
    meta = RunDir(p).meta()
    if meta.get("state") == "complete":
        return None
    held = len({r["trial_id"] for r in read_jsonl(p / "results.jsonl")[0]})
    try:
        planned = len(RunDir(p).read_json("resolved.json").get("trials", []))
    except (OSError, ValueError, AttributeError):
        planned = "?"
    return f"{meta.get('state', '?')}, {held} of {planned} trials"


def _whole(path: str, partial: bool) -> str | None:
    """A run directory compared must be complete: a gate never passes on part of a run. ``partial``: it may not
    be, and the comparison says so."""
    why = unfinished(path)
    if why and not partial:
        raise UserError(f"the run is not complete ({why}): compare it once it has finished (--resume it), or pass "
                        "--partial to compare only the trials it holds", file=path)
    return why


def load_sides(baseline: str, current: str, db: str | Path, partial: bool = False) -> tuple[Side, Side]:
    """``partial``: a run directory that is not complete is compared on the trials it holds, and its side's note
    says so (otherwise: a UserError)."""
    is_hist = [s.startswith("history:") for s in (baseline, current)]
    if all(is_hist):
        raise UserError("one side must be a run directory (the history baseline matches its environment)")
    whys = [None if hist or not (Path(p) / "run.json").is_file() else _whole(p, partial)  # refused before loading
            for p, hist in zip((baseline, current), is_hist)]
    sides = _load_sides(baseline, current, db, is_hist)
    for side, why in zip(sides, whys):
        if why:
            side.note = f"PARTIAL: the run is {why}; only the trials it holds are compared"
    return sides


def _load_sides(baseline: str, current: str, db: str | Path, is_hist: list[bool]) -> tuple[Side, Side]:
    if is_hist[0]:
        cur = side_from_run(current)
        return side_from_history(baseline, db, cur), cur
    base = side_from_run(baseline)
    return base, side_from_history(current, db, base) if is_hist[1] else side_from_run(current)


def judge(baseline: str, current: str, db: str | Path, partial: bool = False, **options) -> Comparison:
    """Load both sides, compare them, and, where one side is the history and the other a run recorded in it, keep
    the verdict in the history (history.record_verdict): a run with regressions is then left out of every baseline
    until someone accepts it, so a regression stays red night after night. The notes name every run of the suite
    whose regressions are still unaccepted."""
    from mmbench import history

    base, cur = load_sides(baseline, current, db, partial)
    result = compare(base, cur, **options)
    hist, run = (base, cur) if base.runs is not None else (cur, base) if cur.runs is not None else (None, None)
    if hist is None or result.refusal or partial or not run.run_key:  # a verdict is on a whole run
        return result
    regressed = [(e.trial_id, e.label, e.metric, e.change) for e in result.regressions]
    history.record_verdict(db, run.run_key, hist.name, regressed)
    open_ = history.verdicts(db, run.suite, unaccepted_only=True)
    if open_:
        def one(v) -> str:
            first = v.regressed[0] if v.regressed else None
            what = f"; e.g. {first[1]} {first[2]}" + (f" {first[3] * 100:+.1f}%" if first and first[3] is not None
                                                       else "") if first else ""
            return f"{v.run_key} ({v.regressions} regression(s){what})"
        result.notes.append("regressions not accepted yet (these runs stay out of the baseline): "
                            + "; ".join(one(v) for v in open_)
                            + " — when a change is meant: mmbench history --accept RUN --why '…'")
    return result


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
    cause: str = ""                 # a noise entry's reason, one of the names above

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.current is None or not self.baseline:
            return None
        return self.current / self.baseline


@dataclass
class Comparison:
    baseline: str
    current: str
    suite: str
    threshold: float
    alpha: float
    allowance: float = RUN_ALLOWANCE
    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refusal: str | None = None      # why the comparison cannot be trusted at all (exit 2)

    def count(self, state: str) -> int:
        return sum(1 for e in self.entries if e.state == state)

    def noise_causes(self) -> dict[str, int]:
        """How many noise entries each cause holds, most first."""
        n: dict[str, int] = {}
        for e in self.entries:
            if e.state == NOISE:
                n[e.cause] = n.get(e.cause, 0) + 1
        return dict(sorted(n.items(), key=lambda kv: -kv[1]))

    def counts_text(self) -> str:
        """'2 regressed, 113 noise (62 flagged, 40 host speed moved, 11 not significant), 727 unchanged'."""
        def one(s: str) -> str:
            causes = ", ".join(f"{k} {c}" for c, k in self.noise_causes().items()) if s == NOISE else ""
            return f"{self.count(s)} {s}" + (f" ({causes})" if causes else "")
        return ", ".join(one(s) for s in STATES if self.count(s))

    @property
    def regressions(self) -> list[Entry]:
        return [e for e in self.entries if e.state in (REGRESSED, FAILED)]

    @property
    def exit_code(self) -> int:
        return 2 if self.refusal else 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "current": self.current, "suite": self.suite,
                "threshold": self.threshold, "alpha": self.alpha, "allowance": self.allowance, "notes": self.notes,
                "refusal": self.refusal, "counts": {s: self.count(s) for s in STATES},
                "noise_causes": self.noise_causes(),
                "regressions": len(self.regressions), "entries": [{**asdict(e), "ratio": e.ratio}
                                                                  for e in self.entries]}


def compare(base: Side, cur: Side, *, threshold: float = 0.10, alpha: float = 0.01,
            allowance: float = RUN_ALLOWANCE, same_suite: bool = True,
            instr_threshold: float = INSTR_THRESHOLD) -> Comparison:
    """Every trial and metric of two sides. ``same_suite=False`` (a report of runs of several suites) matches trial
    ids across suites."""
    if same_suite and base.suite != cur.suite:
        raise UserError(f"cannot compare runs of different suites: '{base.suite}' ({base.name}) and "
                        f"'{cur.suite}' ({cur.name})")
    out = Comparison(base.name, cur.name, cur.suite, threshold, alpha, allowance)
    for side, what in ((base, "baseline"), (cur, "current")):
        if side.note:
            out.notes.append(f"{what}: {side.note}")
    env_diff = _env_diff(base, cur)
    if env_diff:
        out.notes.append(f"the two sides ran on different environments ({env_diff}): timings are not comparable")
    for tid in list(dict.fromkeys([*base.rows, *cur.rows])):
        b, c = base.rows.get(tid), cur.rows.get(tid)
        r = c or b
        ident = dict(trial_id=tid, label=str(r.get("label", "?")), task=str(r.get("task", "?")),
                     dims=str(r.get("dims", "?")))
        if b is None or c is None:
            new = b is None and base.runs is not None
            out.entries.append(Entry(**ident, metric="—", state=NOT_COMPARABLE, cause=NEW if new else "",
                                     detail="new trial: not in the history yet, it starts its history with this run"
                                     if new else f"only in the {'current run' if b is None else 'baseline'}"))
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
        threads = _threads_diff(b, c)
        # a cluster run's rows carry their node's environment: judged per row, not by the two runs' drivers
        own = b.get("env_fingerprint") or c.get("env_fingerprint")
        envs = _row_envs(base, b, cur, c) if own else None
        diff = (f"{envs[0]} vs {envs[1]}" if envs else "") if own else env_diff
        trial_entries = []
        for col in _metrics(b, c):
            metric = col.column
            e = Entry(**ident, metric=metric, state=UNCHANGED, baseline=_f(b.get(metric)), current=_f(c.get(metric)))
            if e.baseline is None and e.current is not None and base.runs is not None and _is_instr(metric):
                e.state, e.cause, e.detail = NOT_COMPARABLE, NEW, "a new count: it starts its history with this run"
            elif e.baseline is None or e.current is None:
                e.state, e.detail = NOT_COMPARABLE, f"measured in the {'baseline' if e.current is None else 'current run'} only"
            elif col.term.kind == V.INSTRUCTIONS:  # before the environment check: counts have their own
                _instructions(e, b, c, instr_threshold)
            elif col.term.kind == V.COUNT:
                _count(e)
            elif col.term.kind == V.SCORE:
                _score(e, b, c, col)
            elif (threads and col.term.kind == V.TIMING) or diff:  # what is left, timings and memory, is the machine's
                e.change = e.current / e.baseline - 1 if e.baseline else None
                e.state, e.detail = NOT_COMPARABLE, threads or f"different environments ({diff})"
            else:
                _timing(e, b, c, base, cur, threshold, alpha, allowance)
            trial_entries.append(e)
        _confirm_by_counts(trial_entries)
        out.entries += trial_entries
    new = [e for e in out.entries if e.cause == NEW and e.metric == "—"]
    if new:
        out.notes.append(f"{len(new)} new trial(s) start their history with this run: "
                         + ", ".join(f"{e.label} {e.dims} ({e.trial_id})" for e in new[:20])
                         + (" …" if len(new) > 20 else ""))
    out.refusal = _counts_vanished(base, cur) or _refusal(out, base, cur, env_diff)
    return out


def _instructions(e: Entry, b: dict, c: dict, threshold: float) -> None:
    """Instructions per call: deterministic on one code path, so judged by the threshold alone, where both sides
    counted on the same code path (instr_env)."""
    eb, ec = b.get(V.INSTR_ENV), c.get(V.INSTR_ENV)
    if eb and ec and eb != ec:
        e.state, e.detail = NOT_COMPARABLE, (f"instruction counts from different code paths (instr_env {eb} vs {ec}: "
                                             "torch, Python, libc, capability, valgrind or CPU vendor changed)")
        return
    if e.baseline <= 0:
        e.state, e.detail = NOT_COMPARABLE, "baseline count is not positive"
        return
    e.change = e.current / e.baseline - 1
    if abs(e.change) <= threshold:
        e.detail = f"instruction count within ±{threshold * 100:g}%"
        return
    e.state = REGRESSED if e.change > 0 else IMPROVED
    e.detail = (f"instruction count {e.change * 100:+.2f}%, beyond ±{threshold * 100:g}% (counts repeat to ~0.1% "
                "run to run)")


def _confirm_by_counts(entries: list[Entry]) -> None:
    """A timing that regressed or improved while the instruction count of the same calls did not: wall time on a
    shared host moves for reasons of its own, so it is information, not a verdict. A timing without a count (a
    CUDA graph, a trial that was not counted) keeps its own verdict."""
    by_metric = {e.metric: e for e in entries}
    for e in entries:
        if e.state not in (REGRESSED, IMPROVED) or not V.timing(e.metric):
            continue
        count = by_metric.get(V.counted_by(e.metric) or "")
        if count is None or count.state == NOT_COMPARABLE or count.state == e.state:
            continue
        moved = f"{count.change * 100:+.2f}%" if count.change is not None else "unchanged"
        e.state, e.cause = NOISE, UNCONFIRMED
        e.detail = (f"wall time {e.change * 100:+.1f}%, but the instruction count of the same calls moved {moved} "
                    f"({count.metric}): information, not a failure; " + e.detail).rstrip("; ")


def _counts_vanished(base: Side, cur: Side) -> str | None:
    """The history judged with instruction counts and this run brought none: refusing keeps the gate from
    vanishing when valgrind does (or a suite drops measure.instructions)."""
    hist, run = (base, cur) if base.runs is not None else (cur, base) if cur.runs is not None else (None, None)
    if hist is None or not hist.history_counts:
        return None
    if any(_is_instr(k) for r in run.rows.values() for k in r if r.get(k) is not None):
        return None
    notes = {r.get("instr_note") for r in run.rows.values() if r.get("instr_note")}
    why = f" ({sorted(notes)[0]})" if notes else ""
    return (f"the history holds instruction counts for {hist.history_counts} trial(s) but this run has none{why}: "
            "the gate would vanish; count them (measure.instructions with valgrind installed) or compare with a "
            "history of runs without counts")


def _env_diff(base: Side, cur: Side) -> str:
    if base.fingerprint == cur.fingerprint:
        return ""
    from mmbench.history import FINGERPRINT_KEYS

    diff = [f"{k} {base.env.get(k)!r} vs {cur.env.get(k)!r}" for k in FINGERPRINT_KEYS
            if str(base.env.get(k)) != str(cur.env.get(k))]
    return "; ".join(diff) or f"fingerprint {base.fingerprint} vs {cur.fingerprint}"


def _threads_diff(b: dict, c: dict) -> str:
    tb, tc = _f(b.get("threads")), _f(c.get("threads"))
    if tb is None or tc is None or tb == tc:
        return ""
    return f"different threads ({tb:g} in the baseline, {tc:g} now)"


def _refusal(out: Comparison, base: Side, cur: Side, env_diff: str) -> str | None:
    judged = [e for e in out.entries if e.cause != NEW]  # new trials start their history: not a refusal
    if not judged and out.entries:
        return None
    counts = [e for e in judged if _is_instr(e.metric)]
    if counts:  # with instruction counts, they are what the gate judges: timings on another runner may not compare
        judged = counts + [e for e in judged if e.metric == "—"]
    n = len(judged)
    bad = [e for e in judged if e.state == NOT_COMPARABLE]
    timed = counts or [e for e in judged if V.timing(e.metric)]
    timed_bad = [e for e in timed if e.state == NOT_COMPARABLE]
    what = "instruction counts" if counts else "timings"
    if n and len(bad) < MIN_COMPARABLE * n and len(timed_bad) <= (1 - MIN_COMPARABLE) * len(timed):
        return None
    if len(bad) < MIN_COMPARABLE * n:  # the timings (or counts), what compare is for, were not comparable
        n, bad = len(timed), timed_bad
        head = f"only {n - len(bad)} of {n} {what} were comparable"
    else:
        head = "nothing was comparable" if len(bad) == n else f"only {n - len(bad)} of {n} comparisons were comparable"
    if base.quick is not None and cur.quick is not None and base.quick != cur.quick:
        q, nq = ("baseline", "current run") if base.quick else ("current run", "baseline")
        return (f"{head}: the {q} was run with --quick and the {nq} without (different budgets: compare runs of the "
                f"same budget)")
    if not n:
        return f"{head}: neither side holds a trial"
    why: dict[str, int] = {}
    for e in bad:
        key = "different threads" if e.detail.startswith("different threads") else e.detail
        why[key] = why.get(key, 0) + 1
    top = max(why, key=why.get)
    if top == "different threads":
        top = next(e.detail for e in bad if e.detail.startswith("different threads"))
    return f"{head} ({len(bad)} not comparable, most because: {top})"


def _row_envs(base: Side, b: dict, cur: Side, c: dict) -> tuple[str, str] | None:
    """The two rows' environment fingerprints when they differ and a row carries its own (a cluster run's rows
    were measured on several nodes); None when they agree."""
    from mmbench.history import row_fingerprint

    fb = row_fingerprint(base.env, b) if base.env else b.get("env_fingerprint") or base.fingerprint
    fc = row_fingerprint(cur.env, c) if cur.env else c.get("env_fingerprint") or cur.fingerprint
    return (fb, fc) if fb != fc else None


def _f(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


def _metrics(b: dict, c: dict) -> list[V.Column]:
    """The metric columns of two rows (a score: X_mean beside its X_std on either side)."""
    present = b.keys() | c.keys()
    return [col for k in dict.fromkeys([*b, *c]) if (col := V.column(k, present))]


def _count(e: Entry) -> None:
    if e.current == e.baseline:
        return
    e.change = (e.current - e.baseline) / e.baseline if e.baseline else None
    e.state = REGRESSED if e.current > e.baseline else IMPROVED
    e.detail = "deterministic count changed"


def _score(e: Entry, b: dict, c: dict, col: V.Column) -> None:
    spread = max(_f(b.get(col.spread)) or 0.0, _f(c.get(col.spread)) or 0.0)
    e.change = e.current - e.baseline
    if e.change == 0:
        return
    worse = e.change < 0 if col.better == V.HIGHER else e.change > 0
    if abs(e.change) <= spread:
        e.state, e.cause, e.detail = NOISE, SEED_SPREAD, f"within the seed spread ({spread:.3g})"
    else:
        e.state = REGRESSED if worse else IMPROVED
        e.detail = f"{'worse' if worse else 'better'} by more than the seed spread ({spread:.3g})"


def _timing(e: Entry, b: dict, c: dict, base: Side, cur: Side, threshold: float, alpha: float,
            allowance: float) -> None:
    timed = V.timing(e.metric) is not None
    matched = _at_host_speed(e, base, b, cur, c) if timed else None
    at_speed = matched is not None and len(matched) >= MIN_RUNS
    if e.current == e.baseline:  # e.g. no memory above the baseline level on either side
        return
    if e.baseline <= 0:
        e.state, e.detail = NOT_COMPARABLE, "baseline is zero"
        return
    e.change = e.current / e.baseline - 1
    if abs(e.change) <= threshold:
        return
    worse = e.change > 0
    flagged = [f"{what}: {d}" for what, row in (("baseline", b), ("current run", c))
               if (d := evidence.describe(row, e.metric))]
    if flagged:
        e.state, e.cause, e.detail = NOISE, FLAGGED, "flagged in the " + "; ".join(flagged)
        return
    host = None if at_speed else _host_shift(b, c)  # matched: the same speed by construction
    if timed and host is not None and (host > HOST_TOLERANCE if worse else host < -HOST_TOLERANCE):
        e.state, e.cause, e.detail = NOISE, HOST_MOVED, (f"the host ran its fixed reference workload {host * 100:+.0f}% against the "
                                    f"baseline, beside this trial: the machine's speed moved, not (only) the code")
        return
    if not timed:  # memory: one number per run
        if b.get("mem_measure") == c.get("mem_measure") and b.get("mem_measure") in EXACT_MEMORY:
            e.state = REGRESSED if worse else IMPROVED
            e.detail = f"exact memory measure ({b.get('mem_measure')})"
        else:
            e.state, e.cause, e.detail = NOISE, SMALL, f"{TOO_SMALL}: one memory figure a run from an inexact measure " \
                                       f"({b.get('mem_measure') or c.get('mem_measure') or 'unknown'})"
        return
    tid = e.trial_id
    hist = base.runs if base.runs is not None else cur.runs
    if hist is not None:
        if matched is not None and not at_speed:  # e.detail says how many were found
            e.state, e.cause = NOISE, SMALL
            return
        runs = matched if at_speed else hist.get(tid, {}).get(e.metric) or []
        single, side = (e.current, cur) if base.runs is not None else (e.baseline, base)
        higher = worse if base.runs is not None else not worse
        significant = _vs_runs(e, runs, single, higher, alpha) and _whole_shift(
            e, side.rounds.get(tid, {}).get(e.metric), e.baseline if base.runs is not None else e.current, higher,
            threshold)
    else:
        significant = _vs_rounds(e, base.rounds.get(tid, {}).get(e.metric), cur.rounds.get(tid, {}).get(e.metric),
                                 worse, alpha, threshold + allowance)
    if significant:
        e.state, e.cause = REGRESSED if worse else IMPROVED, ""
    else:
        e.state, e.cause = NOISE, e.cause or NOT_SIGNIFICANT  # a helper that held it back named why


def _at_host_speed(e: Entry, base: Side, b: dict, cur: Side, c: dict) -> list[float] | None:
    """Against a history: the trial's last runs (its Side.last) taken at the host speed of the run judged, whose
    median becomes the history's figure (e.baseline, or e.current where the history is the current side). None where
    there is no speed to match on (CUDA trials, runs before host_ref_ms): the history's last runs, as they are."""
    hist, row = (base, c) if base.at_speed is not None else (cur, b) if cur.at_speed is not None else (None, None)
    ref = _f(row.get(V.HOST_REF)) if hist is not None else None
    pool = hist.at_speed.get(e.trial_id) if hist is not None else None
    if not ref or not pool or not any(r for r, _ in pool):
        return None
    matched = [v[e.metric] for r, v in pool if r and abs(r / ref - 1) <= HOST_TOLERANCE and e.metric in v]
    matched = matched[:hist.last]
    if len(matched) < MIN_RUNS:
        e.detail = (f"{TOO_SMALL}: the history holds {len(matched)} unflagged run(s) of this trial at this run's host "
                    f"speed (host_ref_ms within {HOST_TOLERANCE:.0%} of {ref:.3g}), {MIN_RUNS} needed")
        return matched
    if hist is base:
        e.baseline = statistics.median(matched)
    else:
        e.current = statistics.median(matched)
    return matched


def _host_shift(b: dict, c: dict) -> float | None:
    """How much slower (+) or faster (−) the host ran the reference workload beside this trial than in the baseline
    (vocabulary.HOST_REF; a history's is the median of its runs). None where a side lacks it (CUDA, older runs)."""
    rb, rc = _f(b.get(V.HOST_REF)), _f(c.get(V.HOST_REF))
    return rc / rb - 1 if rb and rc else None


def _vs_runs(e: Entry, runs: list[float], single: float, higher: bool, alpha: float) -> bool:
    """Runs as the unit: is ``single`` a draw from the distribution of the history's per-run values? One-sided t
    prediction test on logs (``higher``: is it above them), and outside their range."""
    runs = [v for v in runs if v > 0]
    if len(runs) < MIN_RUNS:
        e.cause, e.detail = SMALL, f"{TOO_SMALL}: the history holds {len(runs)} unflagged run(s) of this trial, " \
                                   f"{MIN_RUNS} needed"
        return False
    from scipy.stats import t as student

    logs = [math.log(v) for v in runs]
    k = len(logs)
    mean = sum(logs) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (k - 1))
    z = (math.log(single) - mean) / (max(sd, 1e-12) * math.sqrt(1 + 1 / k))
    e.p_value = float(student.sf(z if higher else -z, k - 1))
    outside = single > max(runs) if higher else single < min(runs)
    e.detail = f"runs as the unit: {k} history runs, spread {sd * 100:.1f}% (sd of log medians)"
    if e.p_value < alpha and not outside:
        e.cause, e.detail = INSIDE, e.detail + ", but inside the history's range"
    return e.p_value < alpha and outside


def _whole_shift(e: Entry, rounds: list[float] | None, history: float, higher: bool, threshold: float) -> bool:
    """A change of the code moves every round of the run; a slow stretch of the machine only some of them. So the
    run's fastest quarter of rounds (its slowest quarter, for a speed-up) must have moved beyond the threshold too.
    On this project's VMs a slow stretch the host reference missed (it slows a memory-bound training step more than
    the reference's small matmuls) moved a run's median +18% while its fastest quarter of rounds moved +9%."""
    if not rounds or history <= 0:
        return True  # nothing to check it with (older runs): the median's verdict stands
    q = statistics.quantiles(rounds, n=4, method="inclusive")[0 if higher else 2] if len(rounds) > 1 else rounds[0]
    moved = q / history - 1
    if (moved > threshold) if higher else (moved < -threshold):
        return True
    e.cause = PARTIAL
    e.detail += (f"; but its {'fastest' if higher else 'slowest'} quarter of rounds moved only {moved * 100:+.0f}% "
                 f"(within the threshold): part of the run moved, not all of it")
    return False


def _vs_rounds(e: Entry, bs: list[float] | None, cs: list[float] | None, worse: bool, alpha: float,
               needed: float) -> bool:
    """Rounds as the unit (two single runs): exact one-sided Mann-Whitney U on the per-round medians, and a move
    beyond threshold + the run-to-run allowance."""
    if not bs or not cs:
        e.cause, e.detail = SMALL, f"{TOO_SMALL}: no per-round medians on {'either side' if not bs and not cs else 'one side'}"
        return False
    smallest = 1 / math.comb(len(bs) + len(cs), len(bs))
    if smallest >= alpha:
        e.cause, e.detail = SMALL, (f"{TOO_SMALL}: {len(bs)}/{len(cs)} rounds (the smallest possible p is {smallest:.2g} ≥ alpha "
                    f"{alpha:g}; more rounds, or a history baseline)")
        return False
    from scipy.stats import mannwhitneyu

    e.p_value = float(mannwhitneyu(cs, bs, alternative="greater" if worse else "less", method="exact").pvalue)
    e.detail = f"rounds as the unit: Mann-Whitney U on {len(bs)}/{len(cs)} round medians"
    if e.p_value < alpha and abs(e.change) <= needed:
        e.cause, e.detail = ALLOWED, e.detail + f", within the threshold + run-to-run allowance ({needed * 100:g}%)"
        return False
    return e.p_value < alpha


# --- rendering: the CLI's table and the markdown summary show the same columns ---------------------------------------
TABLE = ("trial", "method", "dims", "metric", "baseline", "current", "change", "ratio", "p", "detail")
NUMERIC = ("baseline", "current", "change", "ratio", "p")   # right-aligned


def value_text(metric: str, v: float | None) -> str:
    """A metric's value as compare prints it (the vocabulary's format for its kind)."""
    if v is None:
        return "—"
    col = V.column(metric)
    return format(v, col.kind.fmt if col else ".4g")


def _relative(metric: str) -> bool:
    col = V.column(metric)
    return col is None or col.kind.relative


def cells(e: Entry) -> list[str]:
    """An entry as the text of TABLE's columns. A change is relative for a cost, a difference for a score."""
    if e.change is None:
        change = "—"
    elif _relative(e.metric):
        change = f"{e.change * 100:+.1f}%"
    else:
        change = format(e.change, "+" + V.column(e.metric).kind.fmt)
    ratio = "—" if e.ratio is None or not _relative(e.metric) else f"{e.ratio:.3g}×"
    p = "—" if e.p_value is None else f"{e.p_value:.2g}"
    return [e.trial_id, e.label, e.dims, e.metric, value_text(e.metric, e.baseline), value_text(e.metric, e.current),
            change, ratio, p, e.detail]


def _rows(entries: list[Entry]) -> list[str]:
    lines = ["| " + " | ".join(TABLE) + " |", "|" + "".join("---:|" if c in NUMERIC else "---|" for c in TABLE)]
    for e in entries:
        trial, *middle, detail = cells(e)
        lines.append("| " + " | ".join([f"`{trial}`", *middle, detail.replace("|", "/")]) + " |")
    return lines


def to_markdown(cmp: Comparison) -> str:
    """A summary for a CI job page (GitHub job summary markdown)."""
    n = len(cmp.regressions)
    head = f"❌ {n} regression{'s' if n != 1 else ''}" if n else "✅ no regressions"
    if cmp.refusal:
        head = f"⛔ not comparable: {cmp.refusal}"
    out = [f"## mmbench compare · {cmp.suite}: {head}", "",
           f"baseline `{cmp.baseline}` · current `{cmp.current}` · threshold {cmp.threshold * 100:g}% · "
           f"significance p < {cmp.alpha:g} with runs (history) or rounds (two runs, and a move beyond threshold + "
           f"{cmp.allowance * 100:g}%) as the unit", ""]
    out += [f"> {note}" for note in cmp.notes] + ([""] if cmp.notes else [])
    out += ["| " + " | ".join(STATES) + " |", "|" + "---:|" * len(STATES),
            "| " + " | ".join(str(cmp.count(s)) for s in STATES) + " |", ""]
    if cmp.count(NOISE):
        out += ["noise, by why: " + ", ".join(f"{k} {c}" for c, k in cmp.noise_causes().items()), ""]
    titles = {REGRESSED: "Regressions", FAILED: "Failed trials (ok in the baseline)", IMPROVED: "Improvements",
              NOISE: "Noise (moved beyond the threshold without significance, flagged, a budget too small to judge, "
                     "or within the seed spread)",
              NOT_COMPARABLE: "Not comparable"}
    for state, title in titles.items():
        es = [e for e in cmp.entries if e.state == state]
        if es:
            out += [f"### {title}", "", *_rows(es), ""]
    out += [f"<details><summary>All {len(cmp.entries)} comparisons</summary>", "", *_rows(cmp.entries), "",
            "</details>", ""]
    return "\n".join(out)
