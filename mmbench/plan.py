"""Expand a Suite into Trials: plain, frozen, fully resolved configs with stable ids."""
from __future__ import annotations

import copy
import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from mmbench import data as datasets
from mmbench import methods
from mmbench.errors import UserError, closest
from mmbench.suite import TUNABLE_TRAIN, MeasureSpec, MethodTune, ModelSpec, Suite, TrainSpec, TuneSpec, locate

MEASURE_AXES = ("precision", "compile")  # sweep axes that set how a trial is measured, for every method


class TrialMeasure(MeasureSpec):
    """The suite's measure block as one trial is measured: precision and compile at this trial's values of their
    sweep axes. The device is the trial's own (Trial.device, resolved once for the run), so it is not repeated here:
    left out of dumps, the id and to_dict."""
    device: None = Field(None, exclude=True)
    # Counting instructions changes no figure a trial measures: turning it on must not start new ids (histories).
    instructions: bool = Field(False, exclude=True)
    # `mmbench run --profile` (profiling.py): a trace taken after the timings, apart from them; no figure changes.
    profile: bool = Field(False, exclude=True)


@dataclass(frozen=True)
class Trial:
    """One measured configuration. Everything that changes a number is in here, and so in the id. The specs are the
    suite's own frozen, validated objects: read their attributes (each default lives once, in mmbench/suite.py)."""
    method: str
    hparams: dict[str, Any]
    dims: tuple[int, ...]
    task: dict[str, Any]          # {"dataset": name, "params": {...resolved}}
    model: ModelSpec
    train: TrainSpec
    measure: TrialMeasure
    device: str
    label: str = field(default="", compare=False)        # display only: not part of the id
    task_label: str = field(default="", compare=False)
    # The thread count the run resolved (measure.threads, or the machine's free cores when the suite leaves it to
    # the machine): how it was measured, not what; the row records it, and compare refuses to compare across it.
    threads: int | None = field(default=None, compare=False)
    # The hyperparameter search this configuration gets (its space resolved for this method), or None: untuned.
    tune: TuneSpec | None = None
    # Where its study is stored (RUN_DIR/tuning) so that a resumed run continues it; None: in memory. Not the id's.
    tune_dir: str | None = field(default=None, compare=False)
    # What its study chose when the driver ran the tuning trials (tuning.dispatch: Tuned.to_dict), so the trial
    # itself, wherever it runs, only reads it. Not the id's.
    tuned: dict[str, Any] | None = field(default=None, compare=False)
    # A work item, not a trial: one tuning trial of this configuration, {"slot", "params"} (tuning.run_item). It is
    # in config() so that each work item has an id of its own.
    tune_item: dict[str, Any] | None = field(default=None, compare=False)
    # Which part of the trial a process runs when its training is set aside (execute.InProcess with train workers):
    # "costs" (everything but training, here, alone) or "train" (the seeds' fits and scores, in a worker); None: all.
    part: str | None = field(default=None, compare=False)

    def config(self) -> dict[str, Any]:
        """The canonical form the id hashes: plain JSON-able values, the specs dumped (measure without the device).
        ``tune`` only when set, so that an untuned trial's id is what it was before tuning existed."""
        out = {"method": self.method, "hparams": copy.deepcopy(self.hparams), "dims": self.dims,
               "task": copy.deepcopy(self.task), "model": self.model.model_dump(), "train": self.train.model_dump(),
               "measure": self.measure.model_dump(), "device": self.device}
        if self.tune is not None:  # seeds and parallel at their defaults are left out: the ids tuning began with
            out["tune"] = {k: v for k, v in self.tune.model_dump().items()
                           if not (k in ("seeds", "parallel") and v == 1)}
        if self.tune_item is not None:
            out["tune_item"] = copy.deepcopy(self.tune_item)
        return out

    @property
    def id(self) -> str:
        return trial_id(self.config())

    @property
    def rank(self) -> Any:
        rp = methods.info(self.method).rank_param
        return self.hparams.get(rp) if rp else None

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "label": self.label, "task_label": self.task_label, "threads": self.threads,
               **self.config()}
        # the fields left out of the id (how, not what: measure.latency.stages …) travel too
        out["train"], out["measure"] = _with_excluded(self.train, out["train"]), _with_excluded(self.measure,
                                                                                              out["measure"])
        if self.tune_dir is not None:
            out["tune_dir"] = self.tune_dir
        if self.tuned is not None:
            out["tuned"] = self.tuned
        if self.part is not None:
            out["part"] = self.part
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        """The inverse of to_dict (worker pipes, Ray tasks, JSON): the specs validated back into their types."""
        d = {k: v for k, v in d.items() if k != "id"}
        return cls(**{**d, "dims": tuple(d["dims"]), "model": ModelSpec.model_validate(d["model"]),
                      "train": TrainSpec.model_validate(d["train"]),
                      "measure": TrialMeasure.model_validate(d["measure"]),
                      "tune": TuneSpec.model_validate(d["tune"]) if d.get("tune") is not None else None})


def _with_excluded(spec: Any, dump: dict[str, Any]) -> dict[str, Any]:
    """A spec's dump with its id-excluded fields put back (nested specs too), so that from_dict restores them."""
    for name, f in type(spec).model_fields.items():
        v = getattr(spec, name)
        if f.exclude and v is not None:
            dump[name] = v.model_dump() if hasattr(v, "model_dump") else v
        elif isinstance(v, BaseModel) and isinstance(dump.get(name), dict):
            _with_excluded(v, dump[name])
    return dump


def trial_id(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but CUDA is not available on this machine", key="measure.device")
    return requested


def resolve_threads(requested: int | None, device: str) -> tuple[int | None, list[str]]:
    """The trials' thread count and any warning: on CPU what the machine can give a trial (physical cores that
    other processes are not using; hardware threads beyond the cores rarely help matmuls) unless the suite sets it;
    asking for more than that is allowed, with a warning, since those threads will wait for each other."""
    if not device.startswith("cpu"):
        return requested, []
    from mmbench.measure.contention import free_cores

    free, how = free_cores()
    if requested is None:
        return free, []
    if requested > free:
        return requested, [f"measure.threads is {requested} but this machine can give a trial {free} ({how}): "
                           "latencies will include waiting for cores (rows measured so are flagged contended)"]
    return requested, []


def _defaults(fn, skip: tuple[str, ...]) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if n not in skip and p.default is not inspect.Parameter.empty
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def resolve_task(suite: Suite, index: int) -> dict[str, Any]:
    spec = suite.task_list[index]
    where = ("task",) if suite.task is not None else ("tasks", index)
    entry = datasets.info(spec.dataset) if ":" not in spec.dataset else None
    if entry is None:
        raise UserError(f"unknown dataset '{spec.dataset}'", **locate(suite, *where, "dataset"))
    unknown = sorted(set(spec.params) - set(entry.params))
    if unknown:
        raise UserError(f"dataset '{spec.dataset}' has no parameter '{unknown[0]}'; it takes: {', '.join(entry.params)}",
                        key=".".join(map(str, where + ("params", unknown[0]))),
                        **locate(suite, *where, "params", unknown[0]))
    return {"dataset": spec.dataset, "params": {**_defaults(entry.fn, ()), **spec.params}}


def expand(suite: Suite, n_modalities: list[int], device: str, threads: int | None = None) -> list[Trial]:
    """All trials of the suite: tasks × methods × (suite sweep overridden by the method's own sweep).

    ``n_modalities[i]`` is the modality count of task i (integer dims are repeated to it). A suite-level axis applies
    only to methods that take it (``rank`` means each method's own rank hyperparameter), so a method without a rank is
    not duplicated across rank values; naming such an axis on the method itself is an error. ``threads``: the
    resolved thread count every trial runs with (resolve_threads).
    """
    trials: list[Trial] = []
    owners: dict[str, int] = {}  # label → the methods entry whose trials carry it
    check_suite_axes(suite)
    check_suite_tune(suite)
    for ti, _ in enumerate(suite.task_list):
        task = resolve_task(suite, ti)
        for mi, spec in enumerate(suite.methods):
            where = ("methods", mi)
            try:
                entry = methods.info(spec.method)
            except UserError as exc:
                raise exc.at(key=f"methods.{mi}.method", **locate(suite, *where, "method")) from None
            defaults = _defaults(entry.cls.__init__, ("self", "dims", "out_dim"))
            fixed = dict(spec.params)
            if "rank" in fixed and entry.rank_param != "rank":
                fixed = _rename_rank(fixed, entry, suite, where + ("params", "rank"))
            axes = _method_axes(suite, spec, entry, where)
            for name in fixed:
                if name not in entry.hyperparams:
                    raise UserError(f"method '{spec.method}' has no hyperparameter '{name}'; it takes: "
                                    f"{', '.join(entry.hyperparams) or 'none'}",
                                    key=f"methods.{mi}.params.{name}", **locate(suite, *where, "params", name))
                if name in axes:
                    raise UserError(f"'{name}' is both fixed in params and swept", key=f"methods.{mi}.params.{name}",
                                    **locate(suite, *where, "params", name))
            measure_axes = {n: axes.pop(n) for n in MEASURE_AXES if n in axes}
            dims_axis = axes.pop("dims", None)
            if dims_axis is None:
                raise UserError("no 'dims' to sweep: give sweep.dims at suite level or on the method",
                                key=f"methods.{mi}", **locate(suite, *where))
            names, mnames = list(axes), list(measure_axes)
            measures = [(how, _trial_measure(suite, mi, how)) for how in
                        (dict(zip(mnames, mcombo)) for mcombo in itertools.product(*(measure_axes[n] for n in mnames)))]
            for dims_value in dims_axis:
                dims = _dims(dims_value, n_modalities[ti], suite, mi)
                for combo in itertools.product(*(axes[n] for n in names)):
                    hp = {**defaults, **fixed, **dict(zip(names, combo))}
                    _check_types(entry, {**fixed, **dict(zip(names, combo))}, suite, mi)
                    _check_builds(spec.method, dims, hp, suite, mi)
                    tune = resolve_tune(suite, mi, entry, axes, hp)
                    for how, measure in measures:
                        label = (spec.label or _auto_label(spec.method, dict(zip(names, combo)), fixed)) \
                            + _measure_suffix(how)
                        _check_label_owner(owners, label, mi, suite)
                        trials.append(Trial(
                            method=spec.method, hparams=hp, dims=dims, task=task,
                            model=suite.model, train=suite.train, measure=measure, device=device, label=label,
                            task_label=task_label(suite, ti), threads=threads, tune=tune))
    _check_unique(trials, suite)
    return trials


def check_suite_tune(suite: Suite) -> None:
    """A suite-level `tune.space` name that is neither a train field nor any method's hyperparameter (a typo)."""
    if suite.tune is None:
        return
    taken = {"rank", *TUNABLE_TRAIN}
    for spec in suite.methods:
        try:
            taken.update(methods.info(spec.method).hyperparams)
        except UserError:
            return  # expand names the unknown method, with its place
    for name in suite.tune.space:
        if name in ("dims", *MEASURE_AXES) or name in suite.sweep:
            raise UserError(f"'{name}' is a sweep axis (what the suite compares): it cannot also be tuned",
                            key=f"tune.space.{name}", **locate(suite, "tune", "space", name))
        if name not in taken:
            raise UserError(f"neither a train field ({', '.join(TUNABLE_TRAIN)}) nor a hyperparameter of any method "
                            f"in this suite{closest(name, taken)}", key=f"tune.space.{name}",
                            **locate(suite, "tune", "space", name))


def resolve_tune(suite: Suite, mi: int, entry, axes: dict[str, list], hp: dict[str, Any]) -> TuneSpec | None:
    """One method's tuning: the suite's `tune:` with the method's own over it, its space cut to what this method
    takes (suite level) and checked (method level: every name must apply), each distribution checked against the
    value it searches (the type it must be; the untuned value, tuning trial 0, must lie inside it)."""
    spec = suite.methods[mi]
    own: MethodTune | None = spec.tune
    if suite.tune is None and own is None:
        return None
    where = ("methods", mi, "tune")
    if not suite.measure.accuracy:
        path = where if own is not None else ("tune",)
        raise UserError("tuning selects on validation accuracy: it needs measure.accuracy", key=".".join(map(str, path)),
                        **locate(suite, *path))
    base = suite.tune.model_dump(exclude={"space"}) if suite.tune is not None else {}
    if own is not None:
        base.update({k: v for k, v in own.model_dump(exclude={"space"}).items() if v is not None})
    if "trials" not in base:
        raise UserError("a tuned method needs a budget: give trials here or in the suite's tune:",
                        key=".".join(map(str, where + ("trials",))), **locate(suite, *where))
    space: dict[str, tuple[tuple, dict]] = {}  # name -> (key path of its distribution, distribution)
    for name, dist in (suite.tune.space.items() if suite.tune is not None else ()):
        target = entry.rank_param if name == "rank" else name
        if name in TUNABLE_TRAIN or (target is not None and target in entry.hyperparams):
            space[target] = (("tune", "space", name), dist)
    for name, dist in (own.space.items() if own is not None else ()):
        path = where + ("space", name)
        target = entry.rank_param if name == "rank" else name
        if name in ("dims", *MEASURE_AXES):
            raise UserError(f"'{name}' is a sweep axis (what the suite compares): it cannot also be tuned",
                            key=".".join(map(str, path)), **locate(suite, *path))
        if name not in TUNABLE_TRAIN and (target is None or target not in entry.hyperparams):
            raise UserError(f"method '{entry.name}' has no hyperparameter '{name}' and it is no train field; it takes: "
                            f"{', '.join(entry.hyperparams) or 'none'}; train: {', '.join(TUNABLE_TRAIN)}",
                            key=".".join(map(str, path)), **locate(suite, *path))
        space[target] = (path, dist)
    if not space:
        path = where if own is not None else ("tune", "space")
        raise UserError(f"nothing to tune for method '{entry.name}': the space names none of its hyperparameters "
                        "or train fields", key=".".join(map(str, path)), **locate(suite, *path))
    for target, (path, dist) in space.items():
        _check_distribution(suite, entry, target, dist, path, axes, hp)
    # seeds per tuning trial: at most the suite's (--quick's one seed tunes on one)
    base["seeds"] = min(base.get("seeds", 1), len(suite.train.seeds))
    return TuneSpec.model_validate({**base, "space": {k: d for k, (_, d) in sorted(space.items())}})


def _check_distribution(suite: Suite, entry, target: str, dist: dict, path: tuple, axes: dict, hp: dict) -> None:
    from mmbench import params as typed

    key = ".".join(map(str, path))
    if target in axes:
        raise UserError(f"'{path[-1]}' is a sweep axis of method '{entry.name}' (what the suite compares): it cannot "
                        "also be tuned", key=key, **locate(suite, *path))
    (kind, arg), = dist.items()
    values = arg if kind == "choice" else [float(arg[0]), float(arg[1])] if kind != "int" else list(arg)
    if target in TUNABLE_TRAIN:
        untuned, what = getattr(suite.train, target), f"train.{target}"
        for v in values:
            try:
                TrainSpec.model_validate({**suite.train.model_dump(), target: v})
            except ValidationError as exc:
                raise UserError(f"{kind} value {v!r} is no {what}: {exc.errors()[0]['msg']}", key=key,
                                **locate(suite, *path)) from None
    else:
        untuned, what = hp.get(target), f"{entry.name}'s {target}"
        try:
            for v in values:
                typed.check(entry.cls.__init__, {target: v}, f"method '{entry.name}'")
        except UserError as exc:
            raise UserError(f"{kind}: {exc.message}", key=key, **locate(suite, *path)) from None
    if untuned is None:
        raise UserError(f"{what} has no untuned value (its default is None): give one (tuning trial 0 runs the "
                        "untuned values)", key=key, **locate(suite, *path))
    inside = untuned in arg if kind == "choice" else arg[0] <= untuned <= arg[1]
    if not inside:
        raise UserError(f"the untuned {what} {untuned!r} lies outside {dist}: tuning trial 0 runs the untuned values, "
                        "so the space must hold them", key=key, **locate(suite, *path))


def _trial_measure(suite: Suite, mi: int, how: dict[str, Any]) -> TrialMeasure:
    """The suite's measure block with this trial's swept precision / compile, validated as the block itself is."""
    try:
        # the dump leaves out what the id does not hold (measure.latency.stages …): put back from the suite's spec
        return TrialMeasure.model_validate(_with_excluded(suite.measure, {**suite.measure.model_dump(
            exclude={"device"}), **how}))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = err["loc"][0]
        path = ("methods", mi, "sweep", name) if name in suite.methods[mi].sweep else ("sweep", name)
        raise UserError(f"{err['msg']}, got {err.get('input')!r}", key=".".join(map(str, path)),
                        **locate(suite, *path)) from None


def _rename_rank(params: dict, entry, suite, path) -> dict:
    if entry.rank_param is None:
        raise UserError(f"method '{entry.name}' has no rank", key=".".join(map(str, path)), **locate(suite, *path))
    out = dict(params)
    out[entry.rank_param] = out.pop("rank")
    return out


def _method_axes(suite: Suite, spec, entry, where) -> dict[str, list]:
    axes: dict[str, list] = {}
    for name, values in suite.sweep.items():  # suite level: only what this method takes
        if name == "dims" or name in MEASURE_AXES:
            axes[name] = values
        elif name == "rank":
            if entry.rank_param:
                axes[entry.rank_param] = values
        elif name in entry.hyperparams:
            axes[name] = values
    for name, values in spec.sweep.items():  # method level: must apply
        path = where + ("sweep", name)
        if name == "dims" or name in MEASURE_AXES:
            axes[name] = values
        elif name == "rank":
            if not entry.rank_param:
                raise UserError(f"method '{spec.method}' has no rank to sweep", key=".".join(map(str, path)),
                                **locate(suite, *path))
            axes[entry.rank_param] = values
        elif name in entry.hyperparams:
            axes[name] = values
        else:
            raise UserError(f"method '{spec.method}' has no hyperparameter '{name}'; it takes: "
                            f"{', '.join(entry.hyperparams) or 'none'}", key=".".join(map(str, path)),
                            **locate(suite, *path))
    return axes


def _dims(value, m: int, suite: Suite, mi: int) -> tuple[int, ...]:
    """One value of the dims axis: an int (every modality), a list of ints, or 'AxBxC' (the results' own format)."""
    if isinstance(value, str) and all(p.strip().isdigit() for p in value.lower().split("x")):
        value = [int(p) for p in value.lower().split("x")]
    dims = [value] * m if isinstance(value, int) and not isinstance(value, bool) else value
    ok = isinstance(dims, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
    path = ("methods", mi, "sweep", "dims") if "dims" in suite.methods[mi].sweep else ("sweep", "dims")
    if not ok:
        raise UserError(f"dims must be an integer (every modality), a list of integers or 'AxB…' like '16x32', "
                        f"got {value!r}", key=".".join(map(str, path)), **locate(suite, *path))
    if any(d <= 0 for d in dims):
        raise UserError(f"dims must be positive, got {dims}", key=".".join(map(str, path)), **locate(suite, *path))
    if len(dims) != m:
        raise UserError(f"dims {dims} has {len(dims)} entries but the task has {m} modalities",
                        key=".".join(map(str, path)), **locate(suite, *path))
    return tuple(dims)


def _check_types(entry, given: dict, suite: Suite, mi: int) -> None:
    """The suite's hyperparameter values against the constructor's annotations (strictly: `rank: true` is no 1)."""
    from mmbench import params as typed

    try:
        typed.check(entry.cls.__init__, given, f"method '{entry.name}'")
    except UserError as exc:
        name = exc.key.split(".", 1)[1]
        spec = suite.methods[mi]
        shown = "rank" if name == entry.rank_param and name not in spec.params and name not in spec.sweep else name
        path = (("methods", mi, "params", shown) if shown in spec.params else
                ("methods", mi, "sweep", shown) if shown in spec.sweep else ("sweep", shown))
        raise UserError(exc.message, key=".".join(map(str, path)), **locate(suite, *path)) from None


def _check_builds(method: str, dims, hp: dict, suite: Suite, mi: int) -> None:
    """Construct the module on the meta device: its own argument checks run, and no memory is allocated."""
    import torch

    try:
        with torch.device("meta"):
            methods.create(method, dims, 2, **hp)
    except UserError as exc:
        if "Overflow" in exc.message or "overflow" in exc.message:  # torch's size arithmetic: past 2^63 elements
            exc = UserError(f"method '{method}' at dims {list(dims)}: a parameter tensor would hold more than 2^63 "
                            "elements: it cannot be built on any machine")
        raise exc.at(key=f"methods.{mi}", **locate(suite, "methods", mi)) from None
    except (RuntimeError, OverflowError, MemoryError) as exc:  # torch refusing a size, on the meta device too
        raise UserError(f"method '{method}' at dims {list(dims)} cannot be built: {str(exc).splitlines()[0][:200]}",
                        key=f"methods.{mi}", **locate(suite, "methods", mi)) from None


def check_suite_axes(suite: Suite) -> None:
    """A suite-level sweep axis that no method takes would be ignored silently (a typo: `rnak`)."""
    taken = {"dims", "rank", *MEASURE_AXES}
    for spec in suite.methods:
        try:
            taken.update(methods.info(spec.method).hyperparams)
        except UserError:
            return  # expand names the unknown method, with its place

    for name in suite.sweep:
        if name not in taken:
            raise UserError(f"no method in this suite takes '{name}'{closest(name, taken)}",
                            key=f"sweep.{name}", **locate(suite, "sweep", name))


def check_measure_axes(suite: Suite, trials: list[Trial]) -> None:
    """Precisions the device cannot do and an unusable torch.compile are suite errors, found before any trial."""
    from mmbench.measure import precision

    for p in sorted({t.measure.precision for t in trials}):
        try:
            precision.check(p, trials[0].device)
        except UserError as exc:
            path = ("sweep", "precision") if "precision" in suite.sweep else ("measure", "precision")
            raise exc.at(key=".".join(path), **locate(suite, *path)) from None
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise UserError(str(exc), key="measure.precision", **locate(suite, "measure", "precision")) from None
    if any(t.measure.compile for t in trials):
        try:
            precision.check_compile(trials[0].device)
        except UserError as exc:
            raise exc.at(key="measure.compile", **locate(suite, "measure", "compile")) from None


def _measure_suffix(how: dict) -> str:
    """Swept measurement settings are part of the label, so tables keep such trials apart."""
    parts = [how["precision"]] if "precision" in how else []
    if "compile" in how:
        parts.append("compiled" if how["compile"] else "eager")
    return f" [{', '.join(parts)}]" if parts else ""


def _auto_label(method: str, swept: dict, fixed: dict) -> str:
    shown = {**fixed, **swept}
    return method if not shown else f"{method}(" + ",".join(f"{k}={v}" for k, v in shown.items()) + ")"


def task_label(suite: Suite, index: int) -> str:
    return task_labels(suite)[index]


def task_labels(suite: Suite) -> list[str]:
    """Each task's name in tables: its `label:`, else the dataset's (with the interaction for synthetic ones). Tasks
    whose default names would be the same get the parameters they differ in appended; a `label:` given twice (or equal
    to another task's name) is refused, so no two tasks share a name in any table."""
    specs = suite.task_list
    params = [resolve_task(suite, i)["params"] for i in range(len(specs))]
    base = [s.label or (f"{s.dataset}-{p['interaction']}" if "interaction" in p else s.dataset)
            for s, p in zip(specs, params)]
    labels = list(base)
    for name in set(base):
        group = [i for i, b in enumerate(base) if b == name and not specs[i].label]
        if len(group) < 2:
            continue
        keys = sorted({k for i in group for k in params[i]})
        differ = [k for k in keys if len({repr(params[i].get(k)) for i in group}) > 1]
        for i in group:
            labels[i] = f"{name}(" + ",".join(f"{k}={params[i].get(k)}" for k in differ) + ")" if differ else name
    seen: dict[str, int] = {}
    for i, name in enumerate(labels):
        if name in seen:
            where = (("tasks", i, "label") if specs[i].label else ("tasks", i))
            raise UserError(f"task label '{name}' is also task {seen[name]}'s: give each task its own `label:`",
                            key=".".join(map(str, where)), **locate(suite, *where))
        seen[name] = i
    return labels


def task_key(task: dict) -> str:
    """Trials of the same task share its data: this is how the runner finds it."""
    return json.dumps(task, sort_keys=True, default=str)


def _check_label_owner(owners: dict[str, int], label: str, mi: int, suite: Suite) -> None:
    """Two methods entries under one label (an explicit label equal to another entry's own) would share the rows
    of every table: one of them would vanish from the report."""
    first = owners.setdefault(label, mi)
    if first != mi:
        where = ("methods", mi, "label") if suite.methods[mi].label else ("methods", mi, "method")
        raise UserError(f"label '{label}' is also methods.{first}'s: give one of them another label",
                        key=".".join(map(str, where)), **locate(suite, *where))


def _check_unique(trials: list[Trial], suite: Suite) -> None:
    seen: dict[str, Trial] = {}
    for t in trials:
        if t.id in seen:
            raise UserError(f"two entries expand to the same trial ({t.label}, dims {list(t.dims)}): "
                            "remove one or change its parameters", file=getattr(suite, "_source", None))
        seen[t.id] = t
