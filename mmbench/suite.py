"""A suite file as validated, typed objects. Errors name the file, the key path and the line."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from mmbench import safe_yaml
from mmbench.errors import UserError

# Names that become paths (OUT/<name>/...) start with a letter or digit: no '.', '..' or hidden folders.
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def _label(v: str) -> str:
    """Labels are table cells and legend entries: one line, no table separator."""
    bad = next((c for c in v if c in "|`" or not c.isprintable()), None)
    if bad is not None:
        raise ValueError(f"label {v!r} contains {bad!r}: labels are one line without '|' or '`'")
    if not v.strip() or len(v) > 200:
        raise ValueError("labels are 1 to 200 characters, not blank")
    return v


Label = Annotated[str, AfterValidator(_label)]


def _all_positive(what: str) -> AfterValidator:
    """A list of sizes: each must be positive (the message names them, e.g. "batch sizes")."""
    def check(v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError(f"{what} must be positive")
        return v
    return AfterValidator(check)


class _Strict(BaseModel):
    # strict: `rank: true` is not 1 and `allow_pickle: "false"` is not a boolean; no inf or nan anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TaskSpec(_Strict):
    dataset: str
    params: dict[str, Any] = {}
    label: Label | None = None  # a name for this task in tables; defaults to the dataset's own


class ModelSpec(_Strict):
    # hidden widths of each modality's encoder MLP (raw features -> fusion dims)
    encoder_hidden: Annotated[list[int], _all_positive("hidden widths")] = []


class TrainSpec(_Strict):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    patience: int | None = Field(None, gt=0)  # early stopping: epochs without a better validation score; None: off
    loss: Literal["auto", "cross_entropy", "mse", "l1"] = "auto"  # auto: cross-entropy, or MSE for regression
    # The seeds as one model (measure/seeds_together.py): how, not what (each seed's results are its own run's), so
    # not part of the trial id. None: where the method is seed-batched (fast), else one by one; true: vmap too
    # where it is not; false: one by one.
    seeds_together: bool | None = Field(None, exclude=True)


class LatencySpec(_Strict):
    batch_sizes: Annotated[list[int], _all_positive("batch sizes")] = Field(default=[1, 256], min_length=1)
    warmup: int = Field(5, ge=0)               # calls before timing
    warmup_s: float | None = Field(None, ge=0)  # and at least this long (clocks ramp); None: 0.2 s CUDA, 0 CPU
    min_samples: int = Field(10, gt=0)
    max_samples: int = Field(200, gt=0)
    max_time_s: float = Field(1.0, gt=0)       # per measured function and batch size
    min_time_s: float = Field(0.25, ge=0)      # sample at least this long (capped by max_time_s), over all rounds
    rounds: int = Field(3, ge=1)               # the trial's timed functions are sampled in this many interleaved rounds
    target_rel_ci: float = Field(0.05, gt=0)   # stop once the median's 95% CI (±1.57·IQR/√n) is within this of it
    min_block_ms: float = Field(1.0, gt=0)     # a sample times enough calls to last this long
    train_step: bool = True                    # also time a full training step (forward, backward, optimizer)
    flush_l2: bool = False                     # CUDA: flush the L2 cache before each sample (one call per sample)
    cuda_graph: bool = False                   # CUDA: also time CUDA-graph replay of the forward, beside eager
    # Also time the encoders alone (the forward's stages: encoders, fusion; the rest is framework overhead). It adds a
    # column, changes no figure of the others: not part of the trial id.
    stages: bool = Field(True, exclude=True)


class RobustnessSpec(_Strict):
    levels: list[float] = Field(default=[round(0.1 * i, 1) for i in range(11)], min_length=2)  # × feature std
    missing: bool = True  # also score each modality removed (zeros)
    seed: int = 0         # the noise draws

    @field_validator("levels")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("levels must be non-negative and increasing")
        return v


class MeasureSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0)  # CPU threads; default: the physical cores other processes leave free
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "fp32"  # also a sweep axis
    compile: bool = False                    # torch.compile the model; also a sweep axis
    accuracy: bool = True
    flops: bool = True
    memory: bool = True
    latency: LatencySpec | None = LatencySpec()
    robustness: RobustnessSpec | None = None  # test-time noise / missing modality curves (needs accuracy)
    retrieval: bool = True                    # recall@1/5/10 for methods with per-modality embeddings
    # instructions per call of the timed functions, counted under valgrind (measure/instructions.py): exact to ~0.1%
    # run to run on any host, what the nightly gate judges. Not part of a trial's id (plan.TrialMeasure).
    instructions: bool = False

    @model_validator(mode="after")
    def _instructions_count_the_timed_calls(self):
        if self.instructions and self.latency is None:
            raise ValueError("instructions counts the timed calls at latency.batch_sizes: it needs measure.latency")
        return self


class ExecutionSpec(_Strict):
    """How trials run; not part of any trial's id (it changes no number)."""
    workers: int | None = Field(None, ge=0)          # 0: in this process; N: N subprocesses; None: 0 on CPU, 1 per GPU
    trial_timeout: float | None = Field(None, gt=0)  # seconds; a trial still running then is ended (needs a worker)
    # CPU, trials in this process: every trial's costs are measured first, alone, and then the trainings run in this
    # many worker processes at one thread each ("auto": the free cores); 1: each trial trains in its turn, here.
    train_workers: Any = 1

    @field_validator("train_workers")
    @classmethod
    def _train_workers(cls, v: Any) -> int | str:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"a count of worker processes (1 or more) or 'auto'; got {v!r}")
    executor: Literal["local", "ray"] = "local"      # local: this process / worker pool; ray: a Ray cluster
    # ray only (mmbench.ray_executor):
    address: str | None = None                       # "auto", host:port, ray://host:port; None: RAY_ADDRESS, else a
                                                     # Ray started on this machine for the run
    accelerator: str | None = None                   # run trials only on nodes with this GPU model (e.g. H100)
    gpus: int = Field(1, ge=1, strict=True)          # whole GPUs per CUDA trial (a fraction is refused)
    timing_slots: int = Field(1, ge=1)               # timed trials at once per node
    retries: int = Field(0, ge=0)                    # re-run a trial whose worker or node died, this many times


# --- tuning ----------------------------------------------------------------------------------------------------

# train fields a `tune.space` may search (seeds are the replication, not a hyperparameter; loss is the task's)
TUNABLE_TRAIN = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "patience")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _distribution(v: dict[str, Any]) -> dict[str, Any]:
    """One typed distribution: {loguniform: [lo, hi]}, {uniform: [lo, hi]}, {int: [lo, hi]} or {choice: [...]}."""
    if len(v) != 1 or next(iter(v)) not in DISTRIBUTIONS:
        raise ValueError("a distribution is one of {loguniform: [lo, hi]}, {uniform: [lo, hi]}, {int: [lo, hi]}, "
                         f"{{choice: [a, b, ...]}}; got keys {sorted(v)}")
    kind, arg = next(iter(v.items()))
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ValueError("choice takes a non-empty list of values")
        if not all(x is None or isinstance(x, (str, bool)) or _number(x) for x in arg):
            raise ValueError("choice values are numbers, strings or booleans")
        if len({repr(x) for x in arg}) != len(arg):
            raise ValueError("choice lists a value twice")
        return v
    if not isinstance(arg, list) or len(arg) != 2:
        raise ValueError(f"{kind} takes [lo, hi]")
    lo, hi = arg
    if kind == "int":
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in arg):
            raise ValueError(f"int takes two integers, got {arg}")
    elif not all(_number(x) for x in arg):
        raise ValueError(f"{kind} takes two finite numbers, got {arg}")
    if hi < lo or (hi == lo and kind != "int"):
        raise ValueError(f"empty range [{lo}, {hi}]: lo must be below hi")
    if kind == "loguniform" and lo <= 0:
        raise ValueError(f"loguniform needs bounds above 0, got [{lo}, {hi}]")
    return v


Distribution = Annotated[dict[str, Any], AfterValidator(_distribution)]


class TuneSpec(_Strict):
    """How each swept configuration is tuned: ``trials`` tuning trials (each trains the first ``seeds`` of
    ``train.seeds`` on train and is scored by their mean validation score), the first the untuned defaults; the best
    is then trained over ``train.seeds`` and tested once."""
    trials: int = Field(gt=0)                          # the budget: the same for every configuration
    # seeds per tuning trial (at most train.seeds): more than one keeps a value that trains only one initialisation
    # from being chosen; each tuning trial then costs that many fits
    seeds: int = Field(1, gt=0)
    # tuning trials asked at once (TPE's constant liar spreads them); they run in parallel through the executor.
    # The choice depends on this number, never on --workers or on the order results come back in
    parallel: int = Field(1, gt=0)
    sampler: Literal["tpe", "random"] = "tpe"          # seeded: the same suite chooses the same parameters
    seed: int = 0
    timeout_s: float | None = Field(None, gt=0)        # and stop starting tuning trials after this long
    pruner: Literal["none", "median", "halving"] = "none"  # stop a tuning trial early on its validation curve
    space: dict[str, Distribution] = {}                # train field or method hyperparameter -> distribution


class MethodTune(_Strict):
    """A method's own `tune:`: any key given overrides the suite's; its `space` adds to (and overrides) the suite's."""
    trials: int | None = Field(None, gt=0)
    seeds: int | None = Field(None, gt=0)
    parallel: int | None = Field(None, gt=0)
    sampler: Literal["tpe", "random"] | None = None
    seed: int | None = None
    timeout_s: float | None = Field(None, gt=0)
    pruner: Literal["none", "median", "halving"] | None = None
    space: dict[str, Distribution] = {}


def _one_dims_value(sweep: Any) -> Any:
    """`dims: 16` and `dims: "16x16"` (one setting, not a list of them) are read as a one-value axis: unambiguous,
    and the spellings a user reaches for first (the second is the `dims` column's own format)."""
    if isinstance(sweep, dict) and isinstance(sweep.get("dims"), (int, str)) and not isinstance(sweep["dims"], bool):
        return {**sweep, "dims": [sweep["dims"]]}
    return sweep


# A sweep (the suite's, or one method's): axis -> values; an empty axis would be a run of 0 trials.
Sweep = Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], BeforeValidator(_one_dims_value)]


class MethodSpec(_Strict):
    method: str
    label: Label | None = None
    params: dict[str, Any] = {}
    sweep: Sweep = {}
    tune: MethodTune | None = None


class Suite(_Strict):
    name: str
    description: str = ""
    task: TaskSpec | None = None
    tasks: list[TaskSpec] | None = None
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    measure: MeasureSpec = MeasureSpec()
    execution: ExecutionSpec = ExecutionSpec()
    sweep: Sweep = {}
    tune: TuneSpec | None = None  # hyperparameter search per swept configuration (mmbench/tuning.py)
    methods: list[MethodSpec] = Field(min_length=1)
    quick: dict[str, Any] | None = None  # overrides of task/tasks/train/measure/sweep/tune for --quick

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(SAFE_NAME, v):
            raise ValueError(f"{v!r}: a suite name becomes a folder: 1-100 letters, digits, '_', '.' or '-', "
                             "starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _one_task_key(self) -> "Suite":
        if (self.task is None) == (self.tasks is None):
            raise ValueError("give exactly one of 'task' or 'tasks'")
        return self

    @property
    def task_list(self) -> list[TaskSpec]:
        return [self.task] if self.task is not None else list(self.tasks or [])


# --- loading -------------------------------------------------------------------------------------------------------

# What --quick does when the suite has no `quick:` block: one seed, a quarter of the epochs, short latency budgets.
def default_quick(raw: dict) -> dict:
    train = raw.get("train") or {}
    seeds = train.get("seeds", TrainSpec().seeds)
    epochs = train.get("epochs", TrainSpec().epochs)
    out = {"train": {"seeds": list(seeds)[:1] if isinstance(seeds, list) else seeds,
                     "epochs": max(1, epochs // 4) if isinstance(epochs, int) else epochs},
           "measure": {"latency": {"max_time_s": 0.1, "min_samples": 5, "warmup": 2}}}
    if (raw.get("measure") or {}).get("latency") is None and "measure" in raw and "latency" in raw["measure"]:
        out["measure"].pop("latency")
    return out


def load_suite(path: str | Path, *, quick: bool = False) -> Suite:
    """Read and validate a suite file. Raises UserError naming file, key path and line."""
    path = Path(path)
    shown = str(path)
    node, raw = safe_yaml.load_file(path, shown)  # bounded: size, encoding, depth, aliases, duplicate keys, numbers
    if not isinstance(raw, dict):
        raise UserError("a suite must be a YAML mapping at top level", file=shown)
    lines = _line_index(node)
    if quick:
        overrides = raw.get("quick")
        if overrides is None:
            overrides = default_quick(raw)
        elif not isinstance(overrides, dict):
            raise UserError("must be a mapping", file=shown, key="quick", line=lines.get(("quick",)))
        bad = sorted(set(overrides) - {"task", "tasks", "train", "measure", "sweep", "model", "tune"})
        if bad:
            raise UserError(f"'{bad[0]}' cannot be overridden in quick mode", file=shown,
                            key=f"quick.{bad[0]}", line=lines.get(("quick", bad[0])))
        raw = _deep_merge(raw, overrides)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or None
        line = (lines.get(("quick",) + loc) if quick else None) or _nearest_line(lines, loc)
        raise UserError(_pydantic_message(err), file=shown, key=key, line=line) from None
    object.__setattr__(suite, "_source", shown)  # for later errors (plan) that need the file and lines
    object.__setattr__(suite, "_lines", lines)
    _check_method_labels(suite)
    return suite


def _check_method_labels(suite: Suite) -> None:
    """Two methods under one label would share one row of every table: one of them would vanish."""
    seen: dict[str, int] = {}
    for i, m in enumerate(suite.methods):
        if m.label is None:
            continue
        if m.label in seen:
            first = locate(suite, "methods", seen[m.label], "label")["line"]
            raise UserError(f"label '{m.label}' is already methods.{seen[m.label]}'s"
                            + (f" (line {first})" if first else "") + ": labels must be unique",
                            key=f"methods.{i}.label", **locate(suite, "methods", i, "label"))
        seen[m.label] = i


def locate(suite: Suite, *path: Any) -> dict:
    """file/line keyword arguments for a UserError about ``path`` in this suite's source."""
    lines = getattr(suite, "_lines", {})
    return {"file": getattr(suite, "_source", None), "line": _nearest_line(lines, tuple(path))}


def _pydantic_message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "too_short" and "sweep" in err["loc"]:
        return "an empty sweep axis expands to no trials: give at least one value"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if err["type"].endswith("_type") and isinstance(value, (bool, int, float, str)):
        msg += f", got {value!r}"  # `true` for an integer, "false" for a boolean: say what was read
    return msg


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _line_index(node) -> dict[tuple, int]:
    """Map every key path (('methods', 0, 'params', 'rank')) to its 1-based line in the file."""
    index: dict[tuple, int] = {}

    def walk(n, path: tuple) -> None:
        index[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                walk(v, path + (k.value,))
                index[path + (k.value,)] = k.start_mark.line + 1  # a key's line, not its value's
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    if node is not None:
        walk(node, ())
    return index


def _nearest_line(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest prefix of loc present in the file (a missing key points at its parent)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]] if end else None
    return None
