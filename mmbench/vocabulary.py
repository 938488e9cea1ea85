"""The metric vocabulary: which results columns are metrics, of what kind, how they read and which way is better.

The one definition that compare (what it judges, and how), the report (its tables, titles, formats and best marks),
history (which runs a baseline leaves out) and evidence read. A new metric column is one Term in METRICS, and
they all pick it up. Plain strings only: no torch.

Kinds (KINDS): a timing `{name}_ms_b{B}` (the median over timed rounds at batch size B; beside it its evidence, and
in the raw samples every sample and `{name}_rounds_ms_b{B}`, each round's median); a memory
peak `{name}_mib_b{B}` (one figure a run); a deterministic count `{name}` (parameters, FLOPs); instructions per call
`{name}_b{B}` of a timed function, counted under valgrind (exact to ~0.1% on one code path, but bound to that path:
torch, the C library, the pinned CPU capability — compared only where those agree, never across them); a score
`{name}_mean` beside `{name}_std`, averaged over seeds (accuracy, F1, errors, robustness: any measured name, not only
the Terms).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Container

LOWER, HIGHER = "lower", "higher"
TIMING, MEMORY, COUNT, SCORE, INSTRUCTIONS = "timing", "memory", "count", "score", "instructions"


@dataclass(frozen=True)
class Kind:
    name: str
    pattern: str                 # its columns' names ({name}: the term, {b}: the batch size)
    spread: str | None           # the column holding a value's ± (same placeholders)
    unit: str
    fmt: str                     # an exact figure, as compare and versus print it
    cell: str | None             # a report cell (None: compact, 1.2k / 3.4M)
    spread_cell: str | None      # the ± in a report cell
    relative: bool               # a change is a ratio (costs), not a difference (scores)
    machine: bool                # depends on the machine: compared and ranked within one environment only


KINDS = {
    TIMING: Kind(TIMING, "{name}_ms_b{b}", "{name}_iqr_ms_b{b}", "ms", ".4g", ".4g", ".2g", True, True),
    MEMORY: Kind(MEMORY, "{name}_mib_b{b}", None, "MiB", ".4g", ".2f", None, True, True),
    COUNT: Kind(COUNT, "{name}", None, "", ",.0f", None, None, True, False),
    SCORE: Kind(SCORE, "{name}_mean", "{name}_std", "", ".4f", ".3f", ".3f", False, False),
    INSTRUCTIONS: Kind(INSTRUCTIONS, "{name}_b{b}", None, "instructions", ",.0f", None, None, True, True),
}


@dataclass(frozen=True)
class Term:
    name: str
    kind: str                    # a key of KINDS
    title: str                   # what the report calls it
    better: str = LOWER          # costs are better lower
    tabled: bool = True          # the report gives it a table (compare and history take every term)
    counts: str | None = None    # an instruction count: the timing term whose calls it counts

    def column(self, b: int | None = None) -> str:
        return KINDS[self.kind].pattern.format(name=self.name, b=b)


METRICS: tuple[Term, ...] = (
    # timings, whole model and fusion layer: eager forward, CUDA-graph replay, a training step
    Term("fusion_latency", TIMING, "Forward latency, fusion layer"),
    # the forward's other stage (stages.py); the report shows it in "where the time goes", not in a table of its own
    Term("encoder_latency", TIMING, "Forward latency, encoders", tabled=False),
    Term("latency", TIMING, "Forward latency, whole model"),
    Term("fusion_graph_latency", TIMING, "CUDA-graph replay latency, fusion layer"),
    Term("graph_latency", TIMING, "CUDA-graph replay latency, whole model"),
    Term("train_step", TIMING, "Training step latency, whole model"),
    # instructions per call of the same timed functions, under valgrind: what the nightly gate judges
    Term("instr_fusion", INSTRUCTIONS, "Instructions per call, fusion layer forward", counts="fusion_latency"),
    Term("instr", INSTRUCTIONS, "Instructions per call, whole-model forward", counts="latency"),
    Term("instr_train_step", INSTRUCTIONS, "Instructions per call, training step", counts="train_step"),
    # memory peaks of a forward and of a training step (allocator and reserved pool on CUDA)
    Term("peak_mem", MEMORY, "Peak forward memory above the baseline"),
    Term("peak_alloc", MEMORY, "Peak allocated memory, forward (weights and inputs included)"),
    Term("peak_reserved", MEMORY, "Peak reserved memory, forward"),
    Term("train_peak_mem", MEMORY, "Peak training-step memory above the baseline"),
    Term("train_peak_alloc", MEMORY, "Peak allocated memory, training step", tabled=False),  # one training figure
    Term("train_peak_reserved", MEMORY, "Peak reserved memory, training step", tabled=False),  # in the report
    Term("params", COUNT, "Parameters, whole model"),
    Term("fusion_params", COUNT, "Parameters, fusion layer"),
    Term("flops", COUNT, "FLOPs per sample, whole model (2 × multiply-adds)"),
    Term("fusion_flops", COUNT, "FLOPs per sample, fusion layer"),
    Term("encoder_flops", COUNT, "FLOPs per sample, encoders"),
    Term("head_flops", COUNT, "FLOPs per sample, task head"),
    Term("train_flops", COUNT, "FLOPs per sample, training step (forward + backward)"),
    Term("fusion_train_flops", COUNT, "FLOPs per sample, training step, fusion layer"),
    # scores with a name; any other X_mean beside X_std is a score too (see score_better)
    Term("acc", SCORE, "accuracy", HIGHER),
    Term("f1", SCORE, "macro-F1", HIGHER),
    Term("mae", SCORE, "mean absolute error", LOWER),
    Term("mse", SCORE, "mean squared error", LOWER),
    Term("corr", SCORE, "Pearson correlation", HIGHER),
    Term("acc2", SCORE, "binary accuracy (acc2)", HIGHER),
    Term("acc7", SCORE, "7-class accuracy (acc7)", HIGHER),
)
ERRORS = ("mae", "mse", "loss", "rmse")   # a score without a Term whose name starts so is better lower
ROBUSTNESS = "rob_"                       # the robustness measure's scores: rob_<modality>_{auc,rel,missing}

# The evidence beside each timing, `{name}_{what}_b{B}`: its IQR (iqr_ms) and sample count (n), the CPU utilisation
# of the timed region, the share of it spent waiting for a CPU, and the flags that make it no evidence of a cost.
FLAGS = {
    "contended": "the measured region was descheduled (its CPU time fell short of wall time × threads)",
    "noisy": "the median was not pinned down (its 95% CI wider than the target) when the time budget ran out",
    "host_slow": "the host ran its fixed reference workload over 15% slow beside most of the figure's rounds",
    "throttled": "the GPU was throttled (clocks, power or temperature) while timed",
    "co_tenants": "other processes used the GPU while timed",
}
CPU_UTIL, WAIT = "cpu_util", "wait"
CONTENDED = "contended"                   # the row-level flag: any of its timings was contended
INSTR_ENV = "instr_env"                   # the fingerprint of what decides an instruction count's code path
HOST_REF = "host_ref_ms"                  # the host's own speed: a fixed workload read between a CPU trial's rounds
SLOW_ROUNDS = "slow_rounds"               # a timing's rounds left out because the host ran slow beside them


def score_better(name: str) -> str:
    """Which way a score is better: its Term's, else errors (mae, mse …) lower and scores (accuracy, recall …)
    higher."""
    return _index().score_term(name).better


@dataclass(frozen=True)
class Column:
    """One metric column: its term (and batch size for a timing or memory peak)."""
    column: str
    term: Term
    batch: int | None = None

    @property
    def kind(self) -> Kind:
        return KINDS[self.term.kind]

    @property
    def better(self) -> str:
        return self.term.better

    @property
    def spread(self) -> str | None:
        """The column holding the value's ± (a timing's IQR, a score's std over seeds)."""
        return self.kind.spread.format(name=self.term.name, b=self.batch) if self.kind.spread else None

    @property
    def se(self) -> str | None:
        """A score's standard error on the test split, where the measure writes one."""
        return f"{self.term.name}_se" if self.term.kind == SCORE else None

    def evidence(self, what: str) -> str:
        """A timing's evidence column: `what` is cpu_util, wait, n or a flag."""
        return f"{self.term.name}_{what}_b{self.batch}"

    @property
    def rounds(self) -> str:
        """The raw key of a timing's per-round medians (samples.jsonl)."""
        return f"{self.term.name}_rounds_ms_b{self.batch}"


def column(col: str, present: Container[str] | None = None) -> Column | None:
    """What a results column measures, or None (identity, evidence, anything else). A score `X_mean` counts only
    beside its `X_std` in ``present`` (the columns of the rows at hand); without ``present`` its name is enough (a
    column already judged, being shown)."""
    idx = _index()
    hit = idx.cache.get(col, _UNSEEN)
    if hit is _UNSEEN:
        hit = idx.cache[col] = idx.parse(col)
    if hit is not None and present is not None and hit.term.kind == SCORE and hit.spread not in present:
        return None
    return hit


def timing(col: str) -> Column | None:
    """The timing a column is, else None."""
    c = column(col)
    return c if c is not None and c.term.kind == TIMING else None


def counted_by(col: str) -> str | None:
    """The instruction-count column that counts a timing column's calls (latency_ms_b1 → instr_b1), else None."""
    t = timing(col)
    term = next((x for x in METRICS if x.counts == t.term.name), None) if t else None
    return term.column(t.batch) if term else None


def column_of(term: str, b: int | None = None) -> str:
    """A term's column (at batch size b): column_of("latency", 16) == "latency_ms_b16"."""
    return _index().terms[term].column(b)


def terms(kind: str) -> list[Term]:
    """The terms of one kind, in reading order."""
    return [t for t in METRICS if t.kind == kind]


def batch_sizes(keys) -> list[int]:
    """The batch sizes of the timings and memory peaks among some columns, smallest first."""
    return sorted({c.batch for k in keys if (c := column(k)) is not None and c.batch is not None})


_UNSEEN = object()


class _Index:
    """METRICS compiled: a regex per batched kind, the terms by name, and every column already classified."""

    def __init__(self, metrics: tuple[Term, ...]):
        self.metrics = metrics
        self.terms = {t.name: t for t in metrics}
        self.batched = []
        for kind in (TIMING, MEMORY, INSTRUCTIONS):
            names = "|".join(re.escape(t.name) for t in metrics if t.kind == kind)
            if names:
                rx = re.escape(KINDS[kind].pattern).replace(r"\{name\}", f"({names})").replace(r"\{b\}", r"(\d+)")
                self.batched.append(re.compile(rx))
        self.cache: dict[str, Column | None] = {}

    def score_term(self, name: str) -> Term:
        term = self.terms.get(name)
        if term is not None and term.kind == SCORE:
            return term
        return Term(name, SCORE, name, LOWER if name.split("_")[0] in ERRORS else HIGHER)

    def parse(self, col: str) -> Column | None:
        for rx in self.batched:
            if m := rx.fullmatch(col):
                return Column(col, self.terms[m.group(1)], int(m.group(2)))
        term = self.terms.get(col)
        if term is not None and term.kind == COUNT:
            return Column(col, term)
        if col.endswith("_mean") and len(col) > len("_mean"):
            return Column(col, self.score_term(col[:-len("_mean")]))
        return None


_INDEX: _Index | None = None


def _index() -> _Index:
    """Built once, and again when METRICS is replaced (a test adding a term)."""
    global _INDEX
    if _INDEX is None or _INDEX.metrics is not METRICS:
        _INDEX = _Index(METRICS)
    return _INDEX
