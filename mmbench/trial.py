"""Measure one Trial: build the model, count, time, train. Returns a flat row and its raw samples."""
from __future__ import annotations

import gc
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmbench import measure
from mmbench.data.registry import TaskData
from mmbench.measure.train import NonFiniteLoss, train_and_evaluate
from mmbench.model import build
from mmbench.plan import Trial


@dataclass
class TrialResult:
    row: dict[str, Any]                                # one line of results.csv
    raw: dict[str, Any] = field(default_factory=dict)  # every latency sample, every seed's scores


def _inputs(dims, batch: int, device: str, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=g).to(device) for d in dims]


def base_row(trial: Trial) -> dict[str, Any]:
    return {"trial_id": trial.id, "task": trial.task_label, "method": trial.method, "label": trial.label,
            "dims": "x".join(map(str, trial.dims)), "rank": trial.rank, "hparams": trial.hparams,
            "device": trial.device, "status": "ok", "error": ""}


def run_trial(trial: Trial, data: TaskData) -> TrialResult:
    """Never raises for a failing trial: the failure becomes the row's status, with what was measured before it."""
    result = TrialResult(base_row(trial))
    try:
        _measure(trial, data, result)
    except torch.cuda.OutOfMemoryError as exc:
        result.row.update(status="oom", error=str(exc).splitlines()[0][:300])
    except NonFiniteLoss as exc:
        result.row.update(status="nan", error=str(exc))
    except Exception as exc:  # a broken method must not end the suite: it is a row with its status
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.row.update(status="error", error=f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})"[:500])
    finally:
        gc.collect()
        if trial.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return result


def _measure(trial: Trial, data: TaskData, result: TrialResult) -> None:
    m = trial.measure
    if m.get("threads"):
        torch.set_num_threads(m["threads"])
    result.row["threads"] = torch.get_num_threads()
    torch.manual_seed(0)
    model = build(trial.method, trial.hparams, data.input_dims, trial.dims, data.num_classes,
                  trial.model["encoder_hidden"]).to(trial.device).eval()
    _counts(trial, data, model, result)
    if m.get("latency"):
        _timing(trial, data, model, result)
    del model
    if m["accuracy"]:
        _accuracy(trial, data, result)


def _counts(trial: Trial, data: TaskData, model: torch.nn.Module, result: TrialResult) -> None:
    row = result.row
    row["params"] = measure.params(model)
    row["fusion_params"] = measure.params(model.fusion)
    if not trial.measure["flops"]:
        return
    with torch.inference_mode():
        x1 = _inputs(data.input_dims, 1, trial.device, 1)
        if not torch.isfinite(model(x1)).all():
            raise NonFiniteLoss("the model's output is not finite")
        counts = measure.flops(lambda: model(x1), model, parts=("fusion",))
    row["flops"], row["fusion_flops"] = counts["total"], counts["fusion"]


def _timing(trial: Trial, data: TaskData, model: torch.nn.Module, result: TrialResult) -> None:
    row, raw, lat, device = result.row, result.raw, trial.measure["latency"], trial.device
    timing = {k: lat[k] for k in ("warmup", "min_samples", "max_samples", "max_time_s", "target_rel_iqr",
                                  "min_block_ms")}
    with torch.inference_mode():
        for b in lat["batch_sizes"]:
            xs, fs = _inputs(data.input_dims, b, device, 2), _inputs(trial.dims, b, device, 3)
            for prefix, fn in (("", lambda: model(xs)), ("fusion_", lambda: model.fusion(fs))):
                stats = measure.latency(fn, device=device, **timing)
                row[f"{prefix}latency_ms_b{b}"] = stats.median_ms
                row[f"{prefix}latency_iqr_ms_b{b}"] = stats.iqr_ms
                row[f"{prefix}latency_n_b{b}"] = stats.n
                row[f"{prefix}latency_noisy_b{b}"] = stats.noisy
                raw[f"{prefix}latency_ms_b{b}"] = list(stats.samples_ms)
            if trial.measure["memory"]:
                mem = measure.peak_memory(lambda: model(xs), device)
                row[f"peak_mem_mib_b{b}"] = mem["peak_mem_mib"]
                row["mem_measure"] = mem["mem_measure"]
            del xs, fs


def _accuracy(trial: Trial, data: TaskData, result: TrialResult) -> None:
    row, t = result.row, trial.train

    def make():
        return build(trial.method, trial.hparams, data.input_dims, trial.dims, data.num_classes,
                     trial.model["encoder_hidden"])

    scores = [train_and_evaluate(make, data.train, data.val, data.test, data.num_classes, seed=s,
                                 epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
                                 weight_decay=t["weight_decay"], optimizer=t["optimizer"], device=trial.device)
              for s in t["seeds"]]
    accs = np.array([s.test_accuracy for s in scores])
    f1s = np.array([s.test_macro_f1 for s in scores])
    row.update(acc_mean=float(accs.mean()), acc_std=float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
               f1_mean=float(f1s.mean()), f1_std=float(f1s.std(ddof=1)) if len(f1s) > 1 else 0.0,
               n_seeds=len(scores), train_time_s=float(sum(s.train_time_s for s in scores)))
    for key in ("bayes_accuracy", "chance_accuracy"):
        if key in data.info:
            row[key] = data.info[key]
    result.raw["seeds"] = [s.__dict__ for s in scores]
