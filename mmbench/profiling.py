"""`mmbench run --profile`: a torch.profiler trace of each trial's timed functions, taken after its timings and apart
from them (never inside a timed region), written to RUN_DIR/profiles/<trial id>.json (Chrome trace format: open it in
Perfetto, ui.perfetto.dev, or chrome://tracing), with the top operators by self CPU time in the trial's samples.

Opt-in and not part of the trial id (it changes no figure a trial measures). The trace travels back with the trial's
raw samples (a worker or a Ray node does not write the run directory) and the driver writes it (``save``)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Any

CALLS = 3            # each timed function's calls profiled, per batch size profiled
TOP = 10             # operators kept in the samples
TRACE_KEY = "_profile_trace"   # the trace's text in a result's raw samples, until the driver writes it
TOP_KEY = "profile_top_ops"
FILE_KEY = "profile_trace"
FOLDER = "profiles"


def enable(prepared):
    """The prepared run with every trial profiled (measure.profile: excluded from the id)."""
    trials = [replace(t, measure=t.measure.model_copy(update={"profile": True})) for t in prepared.trials]
    return replace(prepared, trials=trials)


def record(fns: dict, batch: int) -> dict[str, Any]:
    """Profile each timed function of one batch size (``fns``: (name, b) → (fn, context), trial._Bench.build's),
    CALLS calls each under a record_function named for it. Returns the raw entries: the top operators and the trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts, record_shapes=True) as prof:
        for (name, b), (fn, ctx) in fns.items():
            if b != batch:
                continue
            with record_function(f"{name} b{b}"):
                for _ in range(CALLS):
                    with ctx() if ctx else _null():
                        fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
    top = sorted((e for e in prof.key_averages() if not e.key.startswith(tuple(f"{n} b" for n, _ in fns))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP]
    fd, path = tempfile.mkstemp(suffix=".json", prefix="mmbench-profile-")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = f.read()
    finally:
        os.unlink(path)
    return {TOP_KEY: [{"name": e.key, "self_cpu_us": round(float(e.self_cpu_time_total), 3), "calls": int(e.count)}
                      for e in top],
            "profile_batch": batch, "profile_calls": CALLS, TRACE_KEY: trace}


def _null():
    import contextlib

    return contextlib.nullcontext()


def save(run, row: dict[str, Any], raw: dict[str, Any]) -> None:
    """The driver's half: the trace (if the trial made one) written to RUN_DIR/profiles/<id>.json, and its path (in
    the run directory) left in the samples in its place."""
    trace = raw.pop(TRACE_KEY, None)
    if trace is None:
        return
    (run.path / FOLDER).mkdir(exist_ok=True)
    name = f"{FOLDER}/{row['trial_id']}.json"
    run.write_text(name, trace)
    raw[FILE_KEY] = name
