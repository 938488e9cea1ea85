"""Will it fit? Every trial's memory, estimated from closed forms before anything is allocated.

A suite can ask for a dataset or a model that cannot exist (a 1.4 PiB array, a 10^18-parameter tensor fusion);
building it would fail deep inside numpy or torch, or take the machine down. The estimates here are lower bounds
(what the arrays and parameters alone take), compared with the memory the machine has in total: a suite refused
here could not have run on this machine, whatever else was running.
"""
from __future__ import annotations

from typing import Any

from mmbench.errors import UserError

FLOAT32 = 4


def machine_bytes(device: str) -> tuple[int | None, str]:
    """(bytes, what) of the memory a trial on ``device`` can use at most; None when it cannot be known. GPUs are read
    through NVML: the parent process never initialises CUDA (a context would hold memory for the whole run). A trial
    may land on any visible GPU, so the smallest one bounds it."""
    if device.startswith("cuda"):
        from mmbench.measure import nvml

        gpus = [g for g in nvml.visible_gpus() or [] if g.get("mem_total_mib")]
        if not gpus:
            return None, "the GPU"
        small = min(gpus, key=lambda g: g["mem_total_mib"])
        return int(small["mem_total_mib"] * 2**20), f"{small['name']} has"
    import psutil

    return int(psutil.virtual_memory().total), "this machine has"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"


def check_dataset(nbytes: int | None, what: str) -> None:
    """Before a generated dataset is drawn: its arrays must fit in memory."""
    if nbytes is None:
        return
    total, has = machine_bytes("cpu")
    if nbytes > total:
        raise UserError(f"{what}: its arrays need at least {human(nbytes)} but {has} {human(total)} of memory")


def model_params(trial, input_dims, num_classes: int) -> int:
    """The trial's parameter count (encoders, fusion), from a build on the meta device: exact, nothing allocated."""
    import torch

    from mmbench.model import build

    with torch.device("meta"):
        model = build(trial.method, trial.hparams, input_dims, trial.dims, num_classes, trial.model.encoder_hidden)
    return sum(p.numel() for p in model.parameters())


def trial_bytes(trial, params: int) -> tuple[int, str]:
    """(bytes, how): fp32 weights, plus gradients and optimizer state when the trial trains."""
    lat = trial.measure.latency
    if not (trial.measure.accuracy or (lat is not None and lat.train_step)):
        return params * FLOAT32, "fp32 weights"
    states = {"adam": 2, "adamw": 2}.get(trial.train.optimizer, 0)
    how = "weights, gradients" + (f" and {trial.train.optimizer} state" if states else "")
    return params * FLOAT32 * (2 + states), how


def input_bytes(trial, data) -> tuple[int, int]:
    """(bytes, batch): the largest batch the trial builds (latency batch sizes, the training batch), as the raw
    inputs and the fusion's inputs that timing keeps side by side, float32."""
    lat = trial.measure.latency
    batch = max([*(lat.batch_sizes if lat is not None else []),
                 trial.train.batch_size if trial.measure.accuracy else 1])
    steps = [x.shape[1] if x.ndim == 3 else 1 for x in data.train.xs]
    per_sample = sum(t * (i + d) for t, i, d in zip(steps, data.input_dims, trial.dims))
    return FLOAT32 * batch * per_sample, batch


def check_trials(trials, tasks: dict[str, Any], task_key, where=lambda t: {}) -> list[tuple[str, int, int]]:
    """UserError for the first trial whose parameters alone cannot fit on its device; else [(id, params, bytes)].
    ``where(trial)``: the error's location (UserError keywords)."""
    out = []
    limits: dict[str, tuple[int | None, str]] = {}
    for t in trials:
        data = tasks[task_key(t.task)]
        params = model_params(t, data.input_dims, data.num_classes)
        need, how = trial_bytes(t, params)
        inputs, batch = input_bytes(t, data)
        total, has = limits.setdefault(t.device, machine_bytes(t.device))
        if total is not None and need + inputs > total:
            raise UserError(f"trial {t.label} · dims {'x'.join(map(str, t.dims))} ({t.task_label}): "
                            f"{params:.3g} parameters and a batch of {batch} need at least {human(need + inputs)} "
                            f"({how}: {human(need)}; inputs: {human(inputs)}) but {has} {human(total)}", **where(t))
        need += inputs
        out.append((t.id, params, need))
    return out
