"""Measure one Trial: build the model, count, time, train. Returns a flat row and its raw samples."""
from __future__ import annotations

import contextlib
import gc
import logging
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from mmbench import closed_form, interrupt, measure, profiling, stages
from mmbench import vocabulary as V
from mmbench.data.registry import TaskData
from mmbench.measure import contention, gpu_state, heap, metrics, nvml, robustness, seeds_together
from mmbench.measure import train as train_mod
from mmbench.measure.latency import LatencyStats
from mmbench.measure.train import NonFiniteLoss, loss_with_aux
from mmbench.model import build
from mmbench.plan import Trial
from mmbench.suite import LatencySpec, RobustnessSpec


@dataclass
class TrialResult:
    row: dict[str, Any]                                # one line of results.csv
    raw: dict[str, Any] = field(default_factory=dict)  # every latency sample, every seed's scores


def _inputs(dims, batch: int, device: str, seed: int, data: TaskData) -> list[torch.Tensor]:
    """Random inputs shaped as the task's: (B, d_m) vectors, or (B, T_m, d_m) sequences at their full length T_m."""
    g = torch.Generator().manual_seed(seed)
    if data.kind == "sequences":
        return [torch.randn(batch, x.shape[1], d, generator=g).to(device) for x, d in zip(data.train.xs, dims)]
    return [torch.randn(batch, d, generator=g).to(device) for d in dims]


def _masks(batch: int, device: str, data: TaskData) -> list[torch.Tensor] | None:
    """All-valid masks when the task pads its sequences (so the masking work is measured too), else None."""
    if data.train.lengths is None:
        return None
    return [torch.ones(batch, x.shape[1], dtype=torch.bool, device=device) for x in data.train.xs]


def _fusion_call(fusion: torch.nn.Module, xs, masks):
    return (lambda: fusion(xs)) if masks is None else (lambda: fusion(xs, masks=masks))


def warm_up() -> None:
    """What a trial imports lazily (torch._dynamo, which FLOP counting and the optimizers' first step pull in, takes a
    second): a fresh worker does it before it reports that a trial started, so that a trial's timeout is not spent on
    the interpreter's start-up."""
    import torch._dynamo  # noqa: F401


def base_row(trial: Trial) -> dict[str, Any]:
    return {"trial_id": trial.id, "task": trial.task_label, "method": trial.method, "label": trial.label,
            "dims": "x".join(map(str, trial.dims)), "rank": trial.rank, "hparams": trial.hparams,
            "device": trial.device, "status": "ok", "error": ""}


def run_trial(trial: Trial, data: TaskData) -> TrialResult:
    """Never raises for a failing trial: the failure becomes the row's status, with what was measured before it.
    The trial sets its own thread count; the process gets its own back (a next run in it reads it as its default)."""
    threads = torch.get_num_threads()
    heap.hold_for_timing()  # in whichever process runs the trial: the parent, a worker, a Ray task
    try:
        return _run_trial(trial, data)
    finally:
        torch.set_num_threads(threads)


def _run_trial(trial: Trial, data: TaskData) -> TrialResult:
    result = TrialResult(base_row(trial))
    try:
        if getattr(trial, "tune_item", None) is not None:  # a work item: one tuning trial, for the driver's study
            _tuning_item(trial, data, result)
            return result
        _measure(trial, data, result)
    except BaseException as exc:  # a broken method must not end the suite: it is a row with its status
        if not isinstance(exc, Exception) and interrupt.is_signal(exc):
            raise  # a real Ctrl-C / SIGTERM ends the run; a SystemExit or KeyboardInterrupt of the module does not
        result.row.update(zip(("status", "error"), _failure(exc)))
    try:
        # A failed trial can leave reference cycles (traceback frames holding tensors); on CUDA the next trial's
        # peak-memory figure must not see them. A full collection costs ~0.1-0.5 s, so only when it matters.
        if trial.device.startswith("cuda") or result.row["status"] != "ok":
            gc.collect()
        if trial.device.startswith("cuda") and not retires_worker(result.row):
            torch.cuda.empty_cache()  # after a sticky CUDA error this raises it again: the worker is retired instead
    except Exception as exc:
        if result.row["status"] == "ok":
            result.row.update(zip(("status", "error"), _failure(exc)))
    if result.row["status"] == "cuda_error":
        result.row["cuda_error"] = result.row["error"]
    return result


def retires_worker(row: dict) -> bool:
    """Whether the worker that measured this row must be replaced: a sticky CUDA error poisons its context, and a
    failed CUDA-graph capture leaves torch ≤ 2.11's allocator believing a capture is under way (PyTorch #180395:
    the next empty_cache raises an internal assert), so after either no later trial can trust that process."""
    return row.get("status") == "cuda_error" or bool(row.get("graph_error"))


# torch < 2.12 after a failed capture: the caching allocator is left mid-capture (see retires_worker), so this
# trial's own memory figures (empty_cache, then the peak) cannot be taken either; they are left empty.
_CAPTURE_FAILURE_BREAKS_ALLOCATOR = torch.__version__ < "2.12"

# Sticky CUDA errors: after one, every CUDA call in the process fails, so its worker must be replaced.
_CUDA_ERROR_TEXT = ("CUDA error", "device-side assert", "illegal memory access", "illegal address",
                    "illegal instruction", "unspecified launch failure", "misaligned address", "CUBLAS_STATUS",
                    "CUDNN_STATUS_EXECUTION_FAILED")


def is_cuda_error(exc: BaseException) -> bool:
    """A CUDA error that poisons the process's context (not an out-of-memory, which is recoverable)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(exc, accel):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _CUDA_ERROR_TEXT)


def _failure(exc: BaseException) -> tuple[str, str]:
    """(status, error) of an exception raised by a trial."""
    first = (str(exc).splitlines() or [""])[0][:300]
    if is_cuda_error(exc):
        return "cuda_error", first
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "oom", first
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):  # torch's CPU allocator says so
        return "oom", f"CPU out of memory: {first}"
    if isinstance(exc, NonFiniteLoss):
        return "nan", str(exc)
    what = str(exc)
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        what = f"{exc!r} raised by the trial's code, not a signal"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return "error", f"{type(exc).__name__}: {what}{where}"[:500]


def _measure(trial: Trial, data: TaskData, result: TrialResult) -> None:
    m, row = trial.measure, result.row
    threads = trial.threads or m.threads  # the run's resolved count (the suite's, or the free cores)
    if threads:
        torch.set_num_threads(threads)
    if trial.part == "train":  # the training set aside (execute.InProcess): the costs part's row says the rest
        row.update(train_threads=torch.get_num_threads())
    else:
        row.update(threads=torch.get_num_threads(), threads_requested=m.threads, precision=m.precision,
                   compile=m.compile)
    if trial.tune is not None:  # first: what is counted, timed and tested is the configuration tuning chose
        trial = _tuned(trial, data, result)
    if trial.part == "train":
        _accuracy(trial, data, result)
        return
    torch.manual_seed(0)
    model = build(trial.method, trial.hparams, data.input_dims, trial.dims, data.num_classes,
                  trial.model.encoder_hidden).to(trial.device).eval()
    cuda = trial.device.startswith("cuda")
    if cuda:
        row.update(nvml.device_row(trial.device))  # which GPU measured this row, matched to NVML by UUID
    _counts(trial, data, model, result)
    # the counts at every uniform modality dim, from the method's closed forms: the report's exact lines
    curve = closed_form.curves(model.fusion, trial.method, trial.hparams, len(trial.dims), data.num_classes, row)
    if curve is not None:
        result.raw[closed_form.KEY] = curve
    if m.latency is not None:
        with compile_scope(m.compile):
            _timing(trial, data, model, result)
    del model
    if m.accuracy and trial.part != "costs":
        _accuracy(trial, data, result)
    if cuda:
        used = nvml.device_row(trial.device)
        row.update(nvml_used_mib=used.get("nvml_used_mib"), nvml_process_mib=used.get("nvml_process_mib"))


def _targets(data: TaskData, batch: int, device: str) -> torch.Tensor:
    """Random targets shaped as the task's: (B,) class labels, or (B,) regression values (the split's own y)."""
    g = torch.Generator().manual_seed(4)
    if data.target == "regression":
        return torch.randn(batch, generator=g).to(device)
    return torch.randint(0, data.num_classes, (batch,), generator=g).to(device)


class OutputShapeError(ValueError):
    """A fusion module whose output is not (B, out_dim): nothing it would be measured or scored on means anything."""


def _check_output(trial: Trial, data: TaskData, model: torch.nn.Module) -> None:
    """Once, before anything is counted or timed: a batch of 2 must give a (2, out_dim) tensor."""
    xs, ms = _inputs(data.input_dims, 2, trial.device, 1, data), _masks(2, trial.device, data)
    with torch.inference_mode():
        out = model(xs, ms)
    want = (2, data.num_classes)
    if not isinstance(out, torch.Tensor):
        raise OutputShapeError(f"the fusion module returned a {type(out).__name__}, not a tensor of shape "
                               f"(B, out_dim) = {want}")
    if tuple(out.shape) != want:
        raise OutputShapeError(f"the fusion module returned shape {tuple(out.shape)} for a batch of 2; expected "
                               f"(B, out_dim) = {want}")


def _counts(trial: Trial, data: TaskData, model: torch.nn.Module, result: TrialResult) -> None:
    """Parameters; FLOPs per sample of the forward (batch 1) and of a training step's forward + backward (batch 2,
    halved: batch-norm methods cannot train on one sample), with the fusion / encoder breakdown."""
    row = result.row
    _check_output(trial, data, model)
    row["params"] = measure.params(model)
    row["fusion_params"] = measure.params(model.fusion)
    if not trial.measure.flops:
        return
    x1, m1 = _inputs(data.input_dims, 1, trial.device, 1, data), _masks(1, trial.device, data)
    with torch.inference_mode():
        if not torch.isfinite(model(x1, m1)).all():
            raise NonFiniteLoss("the model's output is not finite")
    fwd = measure.flops(lambda: model(x1, m1), model, parts=("fusion", "encoders"))
    lengths = [x.shape[1] for x in data.train.xs] if data.kind == "sequences" else None
    row.update(flops=fwd["total"], fusion_flops=fwd["fusion"], encoder_flops=fwd["encoders"],
               head_flops=fwd["total"] - fwd["fusion"] - fwd["encoders"],  # whatever runs outside both (none yet)
               macs=fwd["total"] // 2, fusion_macs=fwd["fusion"] // 2,
               flops_note=measure.flops_note(fwd["fusion"], model.fusion, lengths=lengths,
                                             uncounted=fwd["uncounted"]))
    x2, m2 = _inputs(data.input_dims, 2, trial.device, 1, data), _masks(2, trial.device, data)
    y2, loss_fn = _targets(data, 2, trial.device), train_mod.loss_function(data.target, trial.train.loss)
    model.train()
    try:
        step = measure.flops(lambda: loss_with_aux(model, x2, y2, loss_fn, m2).backward(), model,
                             parts=("fusion", "encoders"), backward=True)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    row.update(train_flops=step["total"] // 2, fusion_train_flops=step["fusion"] // 2,
               encoder_train_flops=step["encoders"] // 2)


class _Bench:
    """What a trial times, per batch size: the forward (whole model, encoders alone, fusion alone), a training step,
    CUDA-graph replays, each with the context its calls run in, all at the trial's precision."""

    def __init__(self, trial: Trial, data: TaskData, model: torch.nn.Module):
        m = trial.measure
        self.trial, self.data, self.model, self.device = trial, data, model, trial.device
        self.precision, self.lat = m.precision, m.latency
        self.comp = Compiled(m.compile)
        self.fwd_model, self.fwd_fusion = self.comp(model), self.comp(model.fusion)
        self.fwd_encoders = self.comp(model.encode) if self.lat.stages else None
        # fit's own step (measure/train.py): the suite's optimizer and loss, on the compiled forward when compiled
        self.step = train_mod.training_step(self.fwd_model, trial.train, data.target, self.precision, self.device) \
            if self.lat.train_step else None
        self.graph_error: str | None = None

    @contextlib.contextmanager
    def inference(self):  # no autocast cache: each call casts its weights, as a request does (and a CUDA graph must)
        with measure.precision_region(self.precision, self.device, cache=False), torch.inference_mode():
            yield

    @contextlib.contextmanager
    def training(self):  # TF32 flags for the whole step; the step puts forward + loss (only) under autocast
        self.model.train()
        try:
            with self.step.flags():
                yield
        finally:
            self.model.eval()

    def batch(self, b: int):
        """Model inputs, fusion inputs, masks and targets of batch size b (seeded: the same in every run)."""
        d, dev = self.data, self.device
        return (_inputs(d.input_dims, b, dev, 2, d), _inputs(self.trial.dims, b, dev, 3, d), _masks(b, dev, d),
                _targets(d, b, dev))

    def build(self, b: int, opt: torch.optim.Optimizer | None) -> dict:
        """Batch b's timed functions, (metric, b) → (fn, context) for measure.latency_rounds: compiled (and their
        CUDA graphs captured) now, before anything is timed. ``opt``: the timed training steps' optimizer."""
        xs, fs, ms, y = self.batch(b)
        fns = {("latency", b): (partial(self.fwd_model, xs, ms), self.inference),
               ("fusion_latency", b): (_fusion_call(self.fwd_fusion, fs, ms), self.inference)}
        if self.fwd_encoders is not None:  # the forward's first stage; the fusion is its second (no head follows)
            fns["encoder_latency", b] = (partial(self.fwd_encoders, xs), self.inference)
        if self.step is not None:
            fns["train_step", b] = (partial(self.step, opt, xs, y, ms), self.training)
        self.comp.warm(fns.values())  # compile now, before any timed (or captured) call
        return fns

    def graph_failed(self, b: int, err: str) -> None:
        if self.graph_error is None:  # the first failure says why; other batch sizes still try
            self.graph_error = f"batch {b}: {err}"

    def memory(self, b: int) -> dict:
        """Peak memory of a forward and of a training step at batch size b, each in its own scope: the weights, this
        batch's inputs and what the call allocates (for the step: gradients and a fresh optimizer's state, created
        inside it). Nothing else that is alive (other batch sizes, the timing's optimizer) is counted."""
        model = self.model
        if self.trial.measure.compile and not self.device.startswith("cuda"):
            return {}  # inductor's CPU kernels bypass the dispatcher: the tracker cannot see them (left empty)
        xs, _, ms, y = self.batch(b)
        weights = [*model.parameters(), *model.buffers()]
        inputs = [*xs, *(ms or [])]
        with self.inference():
            fwd = measure.peak_memory(partial(self.fwd_model, xs, ms), self.device, alive=weights + inputs)
        out = {f"{k}_b{b}": v for k, v in fwd.items() if k != "mem_measure"}
        out["mem_measure"] = fwd["mem_measure"]
        if self.step is not None:
            model.zero_grad(set_to_none=True)
            opt = self.step.optimizer()
            with self.training():
                step = measure.peak_memory(partial(self.step, opt, xs, y, ms), self.device,
                                           alive=weights + inputs + [y])
            model.zero_grad(set_to_none=True)
            del opt
            out.update({f"train_{k}_b{b}": v for k, v in step.items() if k != "mem_measure"})
        return out


def _timing(trial: Trial, data: TaskData, model: torch.nn.Module, result: TrialResult) -> None:
    """Per batch size, build the timed functions; time them all together in interleaved rounds; on CUDA with
    cuda_graph, the graph replays one batch size at a time (_graph_timing); then, per batch size, the peak memory in
    its own scope."""
    lat, bench = trial.measure.latency, _Bench(trial, data, model)
    opt = bench.step.optimizer() if bench.step is not None else None  # one for every timed step, dropped before memory
    fns = {}
    for b in lat.batch_sizes:
        fns.update(bench.build(b, opt))
    stats = _time(fns, trial, lat, result.row, result.raw)
    if opt is not None:
        result.row["optimizer_impl"] = train_mod.optimizer_impl(opt)
    cuda = trial.device.startswith("cuda")
    if lat.cuda_graph and cuda:
        stats.update(_graph_timing(bench, fns, trial, lat))
    result.row.update(bench.comp.columns())
    del fns, opt
    model.zero_grad(set_to_none=True)
    if cuda:  # what NVML saw around every timed block
        result.row.update(gpu_state.fold({key: list(st.probes) for key, st in stats.items()}))
    _record_latency(result.row, result.raw, stats, lat)
    measure_memory = trial.measure.memory
    if bench.graph_error and _CAPTURE_FAILURE_BREAKS_ALLOCATOR:
        measure_memory = False
        bench.graph_error += f"; memory not measured (torch {torch.__version__}: a failed capture leaves the " \
                             "allocator mid-capture)"
    if bench.graph_error:
        result.row["graph_error"] = bench.graph_error
    if measure_memory:
        for b in lat.batch_sizes:
            result.row.update(bench.memory(b))
    if trial.measure.profile:  # after every timing and memory peak, apart from them: the largest batch size's calls
        b = max(lat.batch_sizes)
        opt = bench.step.optimizer() if bench.step is not None else None
        result.raw.update(profiling.record(bench.build(b, opt), b))
        del opt
        model.zero_grad(set_to_none=True)


def _time(fns: dict, trial: Trial, lat: LatencySpec, row: dict, raw: dict) -> dict[Any, LatencyStats]:
    """Every function at every batch size timed in interleaved rounds (measure.latency_rounds), each round probed for
    contention; on CPU the host's reference workload read between rounds (contention.HostReference: rounds beside a
    slow reading are left out, and its figure goes in the row); on CUDA each round read by NVML too (clocks, throttle
    reasons, other processes on the GPU)."""
    host = None if trial.device.startswith("cuda") else contention.HostReference()
    row.update(measure.system_load())  # what the machine was doing as timing began
    stats = _rounds(fns, trial, lat, host)
    if host is not None:
        row[V.HOST_REF] = host.median_ms
        raw[f"{contention.REFERENCE}_rounds_ms"] = host.readings_ms
    return stats


def _rounds(fns: dict, trial: Trial, lat: LatencySpec, host=None) -> dict[Any, LatencyStats]:
    cuda = trial.device.startswith("cuda")
    probes = (gpu_state.GpuProbe(trial.device),) if cuda else ()
    # warmup_s None: GPU clocks take a fraction of a second to ramp up; a CPU's are up in ms
    warmup_s = lat.warmup_s if lat.warmup_s is not None else 0.2 if cuda else 0.0
    try:
        return measure.latency_rounds(
            fns, rounds=lat.rounds, warmup=lat.warmup, warmup_s=warmup_s, min_samples=lat.min_samples,
            max_samples=lat.max_samples, min_time_s=lat.min_time_s, max_time_s=lat.max_time_s,
            target_rel_ci=lat.target_rel_ci, min_block_ms=lat.min_block_ms, flush_l2=lat.flush_l2,
            device=trial.device, probes=probes, host=host,
            # the forward and its stages sampled as one where all were built (a group with a key missing is none)
            together=tuple(stages.timed_together(b) for b in sorted({b for _, b in fns})),
            # the share of the CPU a timed call could use: on CUDA one thread launches the kernels
            threads=1 if cuda else torch.get_num_threads())
    finally:
        for p in probes:
            p.close()


def _graph_timing(bench: "_Bench", fns: dict, trial: Trial, lat: LatencySpec) -> dict[Any, LatencyStats]:
    """CUDA-graph replays of each batch size's forward and fusion, after the eager timing, one batch size at a time:
    its graphs are captured, timed, and freed before the next one's (each graph's private pool holds its forward's
    peak; all batch sizes' alive at once needed ~3× the largest's). A capture or a replay that fails (a host sync,
    out of memory) sets graph_error and leaves the eager figures standing."""
    stats: dict[Any, LatencyStats] = {}
    for b in lat.batch_sizes:
        if bench.graph_error and _CAPTURE_FAILURE_BREAKS_ALLOCATOR:
            break  # the allocator is mid-capture: a new capture would start with its empty_cache and fail
        graphs = {key: fns[key] for key in (("latency", b), ("fusion_latency", b))}
        err = capture_graphs(graphs, b, bench.inference)
        if err is None:
            try:
                stats.update(_rounds({k: v for k, v in graphs.items() if k[0].endswith("graph_latency")}, trial, lat))
            except torch.cuda.OutOfMemoryError as exc:
                err = f"oom: {(str(exc).splitlines() or [''])[0][:300]}"
        del graphs  # this batch size's graphs and their pools
        if err:
            bench.graph_failed(b, err)
        if not (bench.graph_error and _CAPTURE_FAILURE_BREAKS_ALLOCATOR):
            gc.collect()
            torch.cuda.empty_cache()  # the freed pools go back before the next batch size's graphs
    return stats


def _record_latency(row: dict, raw: dict, stats: dict, lat: LatencySpec) -> None:
    why = []
    for (name, b), st in stats.items():
        row[f"{name}_ms_b{b}"] = st.median_ms
        row[f"{name}_iqr_ms_b{b}"] = st.iqr_ms
        row[f"{name}_n_b{b}"] = st.n
        row[f"{name}_noisy_b{b}"] = st.noisy
        row[f"{name}_contended_b{b}"] = st.contended
        row[f"{name}_host_slow_b{b}"] = st.host_slow
        row[f"{name}_slow_rounds_b{b}"] = len(st.slow_rounds_ms)
        row[f"{name}_cpu_util_b{b}"] = st.cpu_util
        wait = st.evidence.wait_fraction if st.evidence else None
        row[f"{name}_wait_b{b}"] = wait
        raw[f"{name}_ms_b{b}"] = list(st.samples_ms)
        raw[f"{name}_rounds_ms_b{b}"] = list(st.rounds_ms)
        raw[f"{name}_slow_rounds_ms_b{b}"] = list(st.slow_rounds_ms)
        if st.rounds_host_ms:  # each kept round's own host speed: a figure relative to the host can be made from it
            raw[f"{name}_rounds_host_ms_b{b}"] = [list(pair) for pair in st.rounds_host_ms]
        if st.contended:
            why.append(f"{name}_ms_b{b}: " + (f"waited {wait:.0%} of its time for a CPU" if wait is not None else
                                              "timing thread starved of CPU"))
    for b in lat.batch_sizes:
        row[f"throughput_sps_b{b}"] = b / (row[f"latency_ms_b{b}"] / 1e3)
        if lat.train_step:
            row[f"train_throughput_sps_b{b}"] = b / (row[f"train_step_ms_b{b}"] / 1e3)
    row["contended"] = bool(why)
    row["contended_why"] = "; ".join(why)
    if lat.stages:
        row.update(stages.overhead_columns(row, lat.batch_sizes))


def _cuda_healthy() -> None:
    torch.cuda.synchronize()  # raises if the failed capture left a sticky error: then the trial is a cuda_error


def capture_graphs(fns: dict, b: int, context, capture=None, healthy=_cuda_healthy) -> str | None:
    """Add CUDA-graph replays of batch b's forward and fusion calls to ``fns``, captured inside ``context`` (the eager
    calls' precision region, autocast cache off). A capture that fails (a host sync in forward, out of memory) adds
    nothing, so the eager figures stand, and returns why ("oom: …" for out of memory) for the row's graph_error."""
    capture = capture or measure.cuda_graph
    try:
        with context():
            graph = capture(fns["latency", b][0])
            fusion_graph = capture(fns["fusion_latency", b][0])
    except Exception as exc:
        healthy()
        first = (str(exc).splitlines() or [""])[0][:300]
        return f"oom: {first}" if isinstance(exc, torch.cuda.OutOfMemoryError) else f"{type(exc).__name__}: {first}"
    fns["graph_latency", b] = (graph, None)
    fns["fusion_graph_latency", b] = (fusion_graph, None)
    return None


@contextlib.contextmanager
def compile_scope(enabled: bool):
    """A compiled trial starts from a clean compiler state: dynamo caches compiled code per code object, so every
    earlier trial's FusionModel would count towards the recompile limit of the same ``forward``, past which dynamo
    silently runs eager. Within the trial the limit is generous (one entry per batch size × grad mode × precision) and
    hitting it fails the trial instead of falling back."""
    if not enabled:
        yield
        return
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    _LIMIT_HITS.clear()
    log = logging.getLogger("torch._dynamo.convert_frame")  # where dynamo says it hit the limit and ran eager
    handler = _LimitHits()
    log.addHandler(handler)
    try:
        name = recompile_limit_name(torch._dynamo.config)
        with torch._dynamo.config.patch(**{name: max(64, getattr(torch._dynamo.config, name))}):
            yield
    finally:
        log.removeHandler(handler)
        torch._dynamo.reset()  # free this trial's compiled code (and the model it guards on)


def recompile_limit_name(config) -> str:
    """dynamo's recompile limit: ``recompile_limit`` since torch 2.7, ``cache_size_limit`` before."""
    return "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"


_LIMIT_HITS: list[str] = []  # this trial's "hit config.recompile_limit" messages: code that then ran eager


class _LimitHits(logging.Handler):
    def emit(self, record) -> None:
        msg = record.getMessage()
        if "hit config." in msg and "limit" in msg:
            _LIMIT_HITS.append(msg.splitlines()[0])


class Compiled:
    """torch.compile for one trial: ``warm`` makes the first call of each (function, context) outside the timed
    region and times it (compile_s); ``columns`` says what was compiled: graphs, graph breaks, fallback."""

    def __init__(self, enabled: bool):
        self.enabled, self.seconds, self.calls = enabled, 0.0, 0

    def __call__(self, module):
        # dynamic=False: each batch size gets its own static graph (on a recompile dynamo would otherwise mark the
        # batch dimension dynamic, and the second batch size would time a dynamic-shape graph)
        return torch.compile(module, dynamic=False) if self.enabled else module

    def warm(self, calls) -> None:
        if not self.enabled:
            return
        for fn, ctx in calls:
            t0 = time.perf_counter()
            with ctx() if ctx else contextlib.nullcontext():
                fn()
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def columns(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        from torch._dynamo.utils import counters

        graphs = int(counters["stats"]["unique_graphs"])
        # Code that hit the recompile limit, or no graph at all, ran eager although the row says compiled: flag it.
        return {"compile_graphs": graphs, "compile_graph_breaks": int(sum(counters["graph_break"].values())),
                "compile_s": self.seconds, "compile_fallback": graphs == 0 or bool(_LIMIT_HITS),
                "compile_note": "; ".join(_LIMIT_HITS)[:300] or None}


def _tuned(trial: Trial, data: TaskData, result: TrialResult) -> Trial:
    """Tune this configuration on train and validation only (mmbench/tuning.py: the test split is not passed);
    the trial as tuned: its hyperparameters and train block with the chosen values (its id stays the planned one)."""
    from dataclasses import replace

    from mmbench import tuning

    def build_with(hp: dict) -> torch.nn.Module:
        return build(trial.method, hp, data.input_dims, trial.dims, data.num_classes, trial.model.encoder_hidden)

    if trial.tuned is not None:  # the run's driver tuned it (tuning.dispatch)
        tuned = tuning.Tuned.from_dict(trial.tuned, trial.train, trial.hparams)
    else:
        tuned = tuning.tune(trial.tune, trial.train, trial.hparams, build_with, data.train, data.val,
                            target=data.target, device=trial.device, precision=trial.measure.precision,
                            storage=tuning.storage_path(trial.tune_dir, trial.id), name=trial.id)
    states = [t["state"] for t in tuned.trials]
    result.row.update(tuned_params=tuned.params, tuned_val=tuned.best_val, untuned_val=tuned.untuned_val,
                      tune_gain=None if tuned.untuned_val is None else tuned.best_val - tuned.untuned_val,
                      tune_trials=len(tuned.trials), tune_budget=trial.tune.trials,
                      tune_seeds=trial.tune.seeds, tune_parallel=trial.tune.parallel,
                      tune_pruned=states.count("pruned"), tune_failed=states.count("fail"),
                      tune_sampler=trial.tune.sampler, tune_time_s=tuned.seconds)
    result.raw["tuning"] = tuned.trials
    result.raw["tuning_best_so_far"] = tuned.best_so_far
    return replace(trial, hparams=tuned.hparams, train=tuned.train)


def _tuning_item(trial: Trial, data: TaskData, result: TrialResult) -> None:
    """One tuning trial sent by the driver (tuning.dispatch), on train and validation only."""
    from mmbench import tuning

    if trial.threads or trial.measure.threads:
        torch.set_num_threads(trial.threads or trial.measure.threads)
    outcome = result.row["tuning_outcome"] = tuning.run_item(trial, data)
    if any(text in outcome.get("error", "") for text in _CUDA_ERROR_TEXT):  # counted as failed, and the worker
        result.row.update(status="cuda_error", error=outcome["error"])   # whose context it poisoned is replaced


def _accuracy(trial: Trial, data: TaskData, result: TrialResult) -> None:
    """Each seed: fit (selection on validation), then the kept checkpoint on test once — scores, retrieval for
    methods with embeddings, robustness curves when the suite asks. Columns: every metric's mean and std over seeds."""
    row, t, m = result.row, trial.train, trial.measure
    kind, prec = data.info.get("metrics", ""), m.precision

    def make():
        return build(trial.method, trial.hparams, data.input_dims, trial.dims, data.num_classes,
                     trial.model.encoder_hidden)

    per_seed, raw_seeds, curves = [], [], []
    xte, _ = train_mod.tensors(data.test, trial.device)
    fitted, how = [None] * len(t.seeds), "one by one"
    if t.seeds_together is not False:
        fitted, how = seeds_together.fit_seeds(make, data.train, data.val, t, list(t.seeds), target=data.target,
                                               device=trial.device, precision=prec, vmap_too=bool(t.seeds_together),
                                               fit_alone=False)
    for i, s in enumerate(t.seeds):
        model, info = fitted[i] or train_mod.fit(make, data.train, data.val, t, seed=s, target=data.target,
                                                 device=trial.device, precision=prec)
        fitted[i] = None  # each model is dropped once evaluated, as one by one
        score = train_mod.evaluate_seed(model, info, data.test, s, data.target, data.num_classes, kind, trial.device,
                                        prec)
        values = dict(score.test)
        if m.retrieval:
            emb = train_mod.embeddings(model, xte, precision=prec)
            if emb is not None:
                values.update(metrics.retrieval(emb))
        if m.robustness is not None:
            mte = train_mod.split_masks(data.test, trial.device)
            curve = _robustness(model, data, xte, m.robustness, kind, mte, prec)
            curves.append(curve)
            values.update(robustness.summarise(curve, data.modalities))
        per_seed.append(values)
        raw_seeds.append({**score.__dict__, "test": values, "did_not_learn": train_mod.did_not_learn(info, data.target),
                          "initial_loss": info.initial_loss, "epoch_losses": info.epoch_losses,
                          "val_chance": info.val_chance, "val_chance_se": info.val_chance_se,
                          "trained_loss": info.trained_loss,
                          "train_chance_loss": info.train_chance_loss, "val_loss": info.val_loss,
                          "val_chance_loss": info.val_chance_loss, "val_loss_gain_se": info.val_loss_gain_se,
                          "val_rows": info.val_rows,
                          "optimizer_impl": info.optimizer_impl})
        del model
    for key in per_seed[0]:
        v = np.array([p[key] for p in per_seed], dtype=np.float64)
        row[f"{key}_mean"] = float(v.mean())
        row[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else None  # one seed: no spread, not 0
    row.update(n_seeds=len(per_seed), train_time_s=float(sum(r["train_time_s"] for r in raw_seeds)),
               epoch_time_s=float(np.mean([r["epoch_time_s"] for r in raw_seeds])),
               epochs_run_mean=float(np.mean([r["epochs_run"] for r in raw_seeds])),
               best_epoch_mean=float(np.mean([r["best_epoch"] for r in raw_seeds])),
               optimizer_impl=", ".join(sorted({r["optimizer_impl"] for r in raw_seeds})), seeds_trained=how)
    why = [f"seed {r['seed']}: {r['did_not_learn']}" for r in raw_seeds if r["did_not_learn"]]
    row.update(did_not_learn=bool(why), did_not_learn_why="; ".join(why))  # still measured and kept
    if curves:
        row["rob_metric"] = _robust_metric(data, kind)
    if "acc_mean" in row:  # the test split's binomial standard error: how far luck alone moves an accuracy
        row["acc_se"] = float(np.sqrt(row["acc_mean"] * (1 - row["acc_mean"]) / len(data.test.y)))
    for key in ("bayes_accuracy", "bayes_accuracy_se", "bayes_accuracy_mc", "chance_accuracy", "bayes_mse",
                "bayes_corr", "chance_mse"):
        if data.info.get(key) is not None:
            row[key] = data.info[key]
    result.raw["seeds"] = raw_seeds
    if curves:
        result.raw["robustness"] = [{"seed": s, "modalities": data.modalities, **c} for s, c in zip(t.seeds, curves)]


def _robust_metric(data: TaskData, kind: str) -> str:
    """The score a robustness curve plots: higher is better, comparable across levels."""
    if data.target == "classification":
        return "acc"
    return "acc2" if kind == "affect" else "corr"


def _robustness(model, data: TaskData, xte, spec: RobustnessSpec, kind: str, masks=None, prec: str = "fp32") -> dict:
    name = _robust_metric(data, kind)
    y = np.asarray(data.test.y)

    def score(xs) -> float:
        out = train_mod.outputs(model, xs, masks=masks, precision=prec).float().cpu().numpy()
        return train_mod.score(out, y, data.target, data.num_classes, kind)[name]

    scales = [robustness.feature_scale(x) for x in data.train.xs]
    return robustness.curves(score, xte, scales, spec.levels, spec.missing, spec.seed)
