"""Synthetic run directories for report, history and compare tests (and the report-speed benchmark): no torch.

Latency samples are drawn from a seeded log-normal around a per-trial median, so a test can shift one trial's
distribution and know exactly what a comparison must find. The rows carry what the measuring side writes: per timed
metric its IQR, sample count, ``noisy`` and ``contended`` flags and CPU utilisation; raw per-round medians
(``*_rounds_ms_b*``, ``rounds`` interleaved rounds); the real ``threads``; the FLOP breakdown (encoders + fusion +
head = flops); CPU memory from the live-tensor tracker.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.store import RunDir

ENV = {"device": "cpu", "cpu_model": "Test CPU", "cpu_count_logical": 2, "torch": "2.13.0", "python": "3.11.2",
       "torch_threads": 1, "mmbench_git_sha": "0123456789abcdef", "hostname": "box", "time": "2026-01-01T00:00:00"}


def trials(methods=("tfn", "lmf", "late"), dims=(4, 8, 16), ranks=(1, 4)) -> list[dict[str, Any]]:
    out = []
    for m in methods:
        for d in dims:
            for r in (ranks if m == "lmf" else (None,)):
                label = f"{m}(rank={r})" if r is not None else m
                tid = hashlib.sha256(f"{m}-{d}-{r}".encode()).hexdigest()[:12]
                out.append({"trial_id": tid, "method": m, "label": label, "dims": f"{d}x{d}x{d}", "rank": r, "d": d})
    return out


def make_run(root: Path, name: str, *, suite: str = "fake", specs: list[dict] | None = None, seed: int = 0,
             slow: dict[str, float] | None = None, n_samples: int = 30, env: dict | None = None,
             state: str = "complete", accuracy: bool = True, fail: set[str] = frozenset(),
             robustness: bool = False, params_delta: dict[str, int] | None = None,
             acc_delta: dict[str, float] | None = None, started: str | None = None, rounds: int = 5,
             run_factor: float = 1.0, contended: set[str] = frozenset(), noisy: set[str] = frozenset(),
             quick: bool = False, threads: int = 1, seeds: int = 3, host: float | None = 1.0,
             host_slow: set[str] = frozenset(), partial: dict[str, float] | None = None,
             counts: bool = False, counts_slow: dict[str, float] | None = None, instr_env: str = "instr-env-1"
             ) -> Path:
    """A run directory <root>/<suite>/<name>. ``slow``: trial id → latency factor; ``fail``: ids that fail;
    ``run_factor``: every latency of this run × it (a process-level shift, as between two runs of the same code);
    ``contended``/``noisy``/``host_slow``: ids whose timed metrics are flagged so (and, contended, slowed 2×); ``host``: the host's
    speed as the reference workload saw it (its `host_ref_ms` × this; None: no reference column); ``partial``: trial
    id → factor on the last 60% of its samples only (a slow stretch of the machine over part of its rounds).
    ``counts``: instruction counts per call as the valgrind pass writes them (repeating to ±0.02% run to run, as
    measured), on the counts' environment ``instr_env``; ``counts_slow``: trial id → factor on its counts."""
    specs = specs if specs is not None else trials()
    rng = np.random.default_rng(seed)
    path = root / suite / name
    path.mkdir(parents=True)
    run = RunDir(path)
    run.write_json("run.json", {"schema": 1, "suite": suite, "state": "running",
                                "started": started or f"2026-01-01T00:00:{seed % 60:02d}+00:00", "finished": None})
    run.write_json("env.json", {**ENV, **(env or {}),
                                **({"instructions": {"fingerprint": instr_env, "capability": "avx2"}} if counts
                                   else {})})
    run.write_json("tasks.json", [{"label": "synthetic-synergy", "modalities": ["m0", "m1", "m2"],
                                   "sizes": {"train": 3000, "val": 1000, "test": 2000},
                                   "bayes_accuracy": 0.9, "bayes_accuracy_se": 0.0067, "bayes_accuracy_mc": 0.901,
                                   "bayes_accuracy_mc_se": 0.0007, "chance_accuracy": 0.5}])
    run.write_json("resolved.json", {"quick": quick,
                                     "trials": [{"id": s["trial_id"], "method": s["method"]} for s in specs]})
    for s in specs:
        tid, d, r = s["trial_id"], s["d"], s["rank"] or 1
        row = {"trial_id": tid, "task": "synthetic-synergy", "method": s["method"], "label": s["label"],
               "dims": s["dims"], "rank": s["rank"], "hparams": {}, "device": "cpu", "status": "ok", "error": "",
               "threads": threads, "threads_requested": threads, "load_avg_1m": 0.5, "runnable_procs": 1}
        raw: dict[str, Any] = {}
        if tid in fail:
            row.update(status="error", error="RuntimeError: injected")
            run.append(row, raw)
            continue
        fusion_params = (d + 1) ** 3 * 2 if s["method"] == "tfn" else (3 * (d + 1) * 2 * r + r + 2)
        fusion_params += (params_delta or {}).get(tid, 0)
        row.update(params=fusion_params + 100, fusion_params=fusion_params, flops=2 * fusion_params + 200,
                   fusion_flops=2 * fusion_params, encoder_flops=200, head_flops=0, mem_measure="cpu_live_tensors")
        factor = (slow or {}).get(tid, 1.0) * run_factor * (2.0 if tid in contended else 1.0)
        for b in (1, 16):
            for prefix in ("fusion_", ""):
                base = 1e-3 * fusion_params ** 0.5 * (1 + b / 8) * (1.3 if prefix == "" else 1.0)
                xs = base * factor * rng.lognormal(0.0, 0.03, n_samples)
                if tid in (partial or {}):
                    xs[int(0.4 * n_samples):] *= partial[tid]
                name = f"{prefix}latency"
                row[f"{name}_ms_b{b}"] = float(np.median(xs))
                row[f"{name}_iqr_ms_b{b}"] = float(np.subtract(*np.percentile(xs, [75, 25])))
                row[f"{name}_n_b{b}"] = n_samples
                row[f"{name}_noisy_b{b}"] = tid in noisy
                row[f"{name}_contended_b{b}"] = tid in contended
                row[f"{name}_host_slow_b{b}"] = tid in host_slow
                row[f"{name}_slow_rounds_b{b}"] = 4 if tid in host_slow else 0
                row[f"{name}_cpu_util_b{b}"] = 0.45 if tid in contended else 0.98
                raw[f"{name}_ms_b{b}"] = xs.tolist()
                raw[f"{name}_rounds_ms_b{b}"] = [float(np.median(c)) for c in np.array_split(xs, min(rounds, n_samples))]
            if counts:
                for name in ("instr_fusion", "instr"):
                    exact = 2e4 * fusion_params ** 0.5 * (1 + b / 8) * (1.4 if name == "instr" else 1.0)
                    exact *= (counts_slow or {}).get(tid, 1.0)
                    row[f"{name}_b{b}"] = round(exact * (1 + rng.uniform(-2e-4, 2e-4)), 1)
                row.update(instr_env=instr_env, instr_capability="avx2", instr_calls=20)
            row[f"peak_mem_mib_b{b}"] = 0.01 * fusion_params * b / 1e3
            row[f"peak_alloc_mib_b{b}"] = row[f"peak_mem_mib_b{b}"] + 4 * fusion_params / 2 ** 20
        row["contended"] = tid in contended
        if host is not None:
            row["host_ref_ms"] = 0.05 * host
        if accuracy:
            base_acc = {"tfn": 0.88, "lmf": 0.80 + 0.02 * r, "late": 0.5}.get(s["method"], 0.7)
            base_acc += (acc_delta or {}).get(tid, 0.0)
            # training is seeded: the same trial scores the same in every run, as on a real deterministic machine
            accs = np.clip(base_acc + np.random.default_rng(int(hashlib.sha256(tid.encode()).hexdigest()[:8], 16)).normal(0, 0.01, seeds), 0, 1)
            std = float(accs.std(ddof=1)) if seeds > 1 else None
            row.update(acc_mean=float(accs.mean()), acc_std=std, f1_mean=float(accs.mean()), f1_std=std,
                       n_seeds=seeds, bayes_accuracy=0.9, chance_accuracy=0.5,
                       acc_se=float(np.sqrt(accs.mean() * (1 - accs.mean()) / 2000)))
            raw["seeds"] = [{"seed": i, "test": {"acc": float(a), "f1": float(a)}} for i, a in enumerate(accs)]
        if robustness:  # as the robustness measure writes it: per seed, per modality index, a noise curve
            levels = [0.0, 0.25, 0.5, 0.75, 1.0]
            acc = row.get("acc_mean", 0.8)
            raw["robustness"] = [{"seed": si, "modalities": ["m0", "m1"], "clean": {"score": acc},
                                  **{str(i): {"levels": levels, "noise": [acc - 0.3 * x * (i + 1) / 3 - 0.01 * si
                                                                          for x in levels], "missing": 0.5}
                                     for i in range(2)}} for si in range(3)]
            for i, m in enumerate(["m0", "m1"]):
                row[f"rob_{m}_auc_mean"] = acc - 0.15 * (i + 1) / 3
                row[f"rob_{m}_auc_std"] = 0.01
            row["rob_metric"] = "acc"
        run.append(row, raw)
    run.write_csv()
    if state != "running":
        run.set_state(state)
    return path


def truncate_results(path: Path) -> None:
    """Cut the last line of results.jsonl in half, as a kill mid-write would."""
    f = path / "results.jsonl"
    text = f.read_text()
    f.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2)
