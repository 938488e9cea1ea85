"""Issue 12's proof, in one call on a CUDA machine (H100/H200: ~6-8 min; --quick ~2 min):

    pip install -e '.[test,gpu]'             # nvidia-ml-py for the NVML columns
    python benchmarks/gpu_check.py           # writes benchmarks/gpu_check_<GPU>.md
    python benchmarks/gpu_check.py --quick   # fewer configurations, shorter budgets
    python benchmarks/gpu_check.py --dry-run # CPU, tiny sizes: every part that can run without a GPU

Everything mmbench measures here goes through the real CLI (`python -m mmbench run ... --json`, default worker pool:
one worker per GPU), on suites written to a temporary folder. The references share no code with mmbench's measures
and run in their own processes: torch.utils.benchmark.Timer and triton.testing.do_bench (when triton imports) in one
timing process, after mmbench's runs (never two timers on the GPU at once), and torch.cuda.max_memory_allocated in a
fresh process per configuration. This script's own process never touches CUDA (it checks, with nvidia-smi, that the
mmbench parent does not either).

Floors: mmbench's median latency within 5% of the Timer's; peak allocated within 1% of the separate process's;
TFN b8192 128³ out 64 fp32 fusion ≤ 88 ms and ≤ 5 GiB (H200); LMF 32³ b32 graph replay ≤ 0.03 ms (H200).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT: list[str] = []
VERDICTS: list[tuple[str, bool | None]] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def verdict(name: str, ok: bool | None, detail: str = "") -> None:
    VERDICTS.append((name, ok))
    say(f"- {'PASS' if ok else ('n/a' if ok is None else 'FAIL')}: {name}{' — ' + detail if detail else ''}")


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **(extra or {})}


# --- nvidia-smi (this process never opens CUDA) --------------------------------------------------------------------

def smi(query: str, kind: str = "gpu") -> list[list[str]]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{kind}={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


# --- the CLI ---------------------------------------------------------------------------------------------------------

def cli_run(cfg, name: str, suite: str, *extra: str, env: dict | None = None, watch: bool = False) -> dict:
    """Write the suite, run `python -m mmbench run SUITE --json` in cfg.tmp (user modules import from there); with
    ``watch``, poll nvidia-smi's compute apps meanwhile and record the CLI's process tree."""
    import psutil

    path = cfg.tmp / f"{name}.yaml"
    path.write_text(suite if suite.startswith(("name", "task")) else textwrap.dedent(suite))
    cmd = [sys.executable, "-m", "mmbench", "run", str(path), "--json", "--out", str(cfg.tmp / "results"), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cfg.tmp, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen, tree = set(), set()
    if watch:
        while proc.poll() is None:
            try:
                tree |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
            seen |= {int(r[0]) for r in smi("pid,used_memory", "compute-apps") if r and r[0].isdigit()}
            time.sleep(0.3)
    out, err = proc.communicate(timeout=cfg.cli_timeout)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        say(f"**{name}: the CLI failed (exit {proc.returncode})**: {err.strip()[-1500:]}")
        return {"rows": [], "seconds": secs, "ok": False}
    doc = json.loads(out)
    run_dir = Path(doc["run_dir"])
    resolved = json.loads((run_dir / "resolved.json").read_text())
    tasks = json.loads((run_dir / "tasks.json").read_text())
    say(f"{name}: {len(doc['rows'])} trials through the CLI in {secs:.1f} s "
        f"(statuses {sorted({r['status'] for r in doc['rows']})})")
    return {"rows": doc["rows"], "seconds": secs, "ok": True, "pid": proc.pid, "seen_pids": seen, "tree": tree,
            "trials": {t["id"]: t for t in resolved["trials"]}, "tasks": tasks, "run_dir": run_dir}


def latency_spec(cfg, batches, graph: bool, time_s: float) -> str:
    return (f"{{batch_sizes: {list(batches)}, max_time_s: {time_s}, min_time_s: {time_s / 2}, rounds: 3, "
            f"warmup: 10, min_samples: 10, train_step: false, cuda_graph: {str(graph).lower()}}}")


def small_suite(cfg, name: str, data: str, batches, graph: bool, sweep: str, method: str) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        task: {{dataset: synthetic, params: {{modalities: 3, dim: 16, {data}}}}}
        train: {{epochs: 1, batch_size: 32, seeds: [0]}}
        measure: {{device: {cfg.device}, accuracy: false, latency: {latency_spec(cfg, batches, graph, cfg.time_s)}}}
        sweep: {{{sweep}}}
        methods: [{{method: {method}}}]
        """)


def grid_suite(cfg) -> str:
    ranks = ", ".join(map(str, cfg.ranks))
    return f"""\
        name: gpu_grid
        task: {{dataset: synthetic, params: {{modalities: 3, dim: 16, num_classes: 2, n_train: 64, n_val: 32,
                                               n_test: 32}}}}
        train: {{epochs: 1, batch_size: 32, seeds: [0]}}
        measure:
          device: {cfg.device}
          accuracy: false
          flops: false
          latency: {latency_spec(cfg, cfg.batches, True, cfg.time_s)}
        sweep:
          dims: {cfg.dims}
          precision: {cfg.precisions}
        methods:
          - method: tfn
          - method: lmf
            sweep: {{rank: [{ranks}]}}
        """


# --- references: separate processes, no mmbench measure code --------------------------------------------------------

def _ref_model(c):
    """The trial's model as mmbench builds it (the model is not a measure), its inputs, and the precision context
    written out here."""
    import contextlib

    import torch

    from mmbench.model import build

    torch.manual_seed(0)
    model = build(c["method"], c["hparams"], c["input_dims"], c["dims"], c["num_classes"],
                  c["encoder_hidden"]).to(c["device"]).eval()
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(c["batch"], d, generator=g).to(c["device"]) for d in c["input_dims"]]
    if c["device"].startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = c["precision"] == "tf32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c["precision"])
    ctx = (lambda: torch.autocast(c["device"].split(":")[0], dtype=dtype, cache_enabled=False)) if dtype \
        else contextlib.nullcontext
    return model, xs, ctx


def ref_timing(configs: list[dict]) -> list[dict]:
    import torch
    from torch.utils.benchmark import Timer

    try:
        from triton.testing import do_bench
    except Exception:  # no triton: that reference is left out
        do_bench = None
    out = []
    for c in configs:
        model, xs, ctx = _ref_model(c)

        def fn():
            with ctx():
                model(xs)

        with torch.inference_mode():
            end = time.perf_counter() + c.get("warm_s", 0.3)  # clocks up, as mmbench's warm-up does
            while time.perf_counter() < end:
                fn()
            m = Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=c.get("min_run_time", 0.5))
            res = {**c, "timer_ms": m.median * 1e3}
            if do_bench is not None and c["device"].startswith("cuda"):
                res["do_bench_ms"] = float(do_bench(fn, warmup=50, rep=200))
        out.append(res)
        del model, xs
    return out


def ref_memory(configs: list[dict]) -> list[dict]:
    """One trial's configurations (its batch sizes) in this fresh process: per batch, only the weights and that
    batch's inputs alive, one warm call (cuBLAS workspaces exist after mmbench's warm-up too), then the peak."""
    import gc

    import torch

    out = []
    for c in configs:
        model, xs, ctx = _ref_model(c)
        if not c["device"].startswith("cuda"):
            out.append({**c, "peak_alloc_mib": None})
            continue
        with torch.inference_mode():
            with ctx():
                model(xs)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            with ctx():
                model(xs)
            torch.cuda.synchronize()
        out.append({**c, "peak_alloc_mib": torch.cuda.max_memory_allocated() / 2**20})
        del model, xs
        gc.collect()
    return out


def subprocess_json(args: list[str], payload, timeout: float) -> object:
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], input=json.dumps(payload),
                       capture_output=True, text=True, env=_env(), timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ref_configs(run: dict, cfg) -> list[dict]:
    """One reference configuration per (trial, batch size), from the run's own resolved trials."""
    task = run["tasks"][0]
    out = []
    for r in run["rows"]:
        t = run["trials"][r["trial_id"]]
        for b in cfg.batches:
            out.append({"key": (r["trial_id"], b), "method": t["method"], "hparams": t["hparams"],
                        "input_dims": task["input_dims"], "dims": list(t["dims"]), "num_classes": task["num_classes"],
                        "encoder_hidden": t["model"]["encoder_hidden"], "batch": b,
                        "precision": t["measure"]["precision"], "device": cfg.device,
                        "min_run_time": cfg.ref_time_s})
    return out


# --- the parts -------------------------------------------------------------------------------------------------------

def part_grid(cfg) -> None:
    say("## mmbench vs independent references (whole-model forward; fusion alone; CUDA graph for LMF)")
    say()
    run = cli_run(cfg, "grid", grid_suite(cfg), *cfg.pool_args, watch=cfg.cuda)
    cfg.grid = run
    if not run["ok"]:
        verdict("grid ran", False)
        return
    configs = ref_configs(run, cfg)
    timing = subprocess_json(["--ref-timing"], configs, timeout=cfg.cli_timeout)
    by = {tuple(t["key"]): t for t in timing}
    mems = {}
    if cfg.cuda:
        from concurrent.futures import ThreadPoolExecutor

        per_trial: dict[str, list] = {}
        for c in configs:
            per_trial.setdefault(c["key"][0], []).append(c)
        with ThreadPoolExecutor(4) as ex:  # memory needs no quiet GPU: four fresh processes at a time
            for ms in ex.map(lambda cs: subprocess_json(["--ref-memory"], cs, timeout=300), per_trial.values()):
                mems.update({tuple(m["key"]): m["peak_alloc_mib"] for m in ms})
    say()
    say("| method | dims | prec | batch | mmbench ms (IQR, n) | Timer ms | ratio | do_bench ms | fusion ms | "
        "graph ms | fusion graph ms | peak alloc MiB | separate process MiB | ratio | throttled |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lat_ok, mem_ok = [], []
    for r in run["rows"]:
        if r["status"] != "ok":
            say(f"| {r['label']} | {r['dims']} | {r.get('precision')} | | {r['status']}: {r['error'][:80]} |")
            lat_ok.append(False)
            continue
        for b in cfg.batches:
            ref = by.get((r["trial_id"], b), {})
            ours, timer = r.get(f"latency_ms_b{b}"), ref.get("timer_ms")
            ratio = ours / timer if ours and timer else None
            peak, sep = r.get(f"peak_alloc_mib_b{b}"), mems.get((r["trial_id"], b))
            mratio = peak / sep if peak and sep else None
            if ratio is not None:
                lat_ok.append(abs(ratio - 1) <= 0.05)
            if mratio is not None:
                mem_ok.append(abs(mratio - 1) <= 0.01)
            say(f"| {r['label']} | {r['dims']} | {r.get('precision')} | {b} | {_f(ours)} ({_f(r.get(f'latency_iqr_ms_b{b}'))}, "
                f"{r.get(f'latency_n_b{b}')}) | {_f(timer)} | {_f(ratio, 3)} | {_f(ref.get('do_bench_ms'))} | "
                f"{_f(r.get(f'fusion_latency_ms_b{b}'))} | {_f(r.get(f'graph_latency_ms_b{b}'))} | "
                f"{_f(r.get(f'fusion_graph_latency_ms_b{b}'))} | {_f(peak, 1)} | {_f(sep, 1)} | {_f(mratio, 4)} | "
                f"{r.get('throttled')} |")
    say()
    verdict("median latency within 5% of torch.utils.benchmark.Timer", (all(lat_ok) if lat_ok else None)
            if cfg.cuda else None,
            f"{sum(lat_ok)}/{len(lat_ok)} configurations")
    verdict("peak allocated within 1% of a separate process's max_memory_allocated", all(mem_ok) if mem_ok else None,
            f"{sum(mem_ok)}/{len(mem_ok)} configurations")
    graphs = [r for r in run["rows"] if r["method"] == "lmf" and r["status"] == "ok"]
    errs = [r.get("graph_error") for r in graphs if r.get("graph_error")]
    verdict("CUDA graphs captured for every LMF row (eager vs graph in the table)",
            (not errs and all(r.get(f"graph_latency_ms_b{cfg.batches[0]}") for r in graphs)) if cfg.cuda else None,
            "; ".join(errs)[:300])
    say()


def part_limits(cfg) -> None:
    say("## Against the device's limits (H200 figures measured earlier: fp32 GEMM 50.7 TFLOP/s, copy 4.15 TB/s)")
    say()
    d, b, out = cfg.limit_dims, cfg.limit_batch, cfg.limit_out
    run = cli_run(cfg, "limits", small_suite(cfg, "gpu_limits", f"num_classes: {out}, n_train: {max(out, 64)}, "
                                             f"n_val: {max(out, 32)}, n_test: {max(out, 32)}", [b], False,
                                             f"dims: [{d}]", "tfn"))
    small = cli_run(cfg, "launch_bound", small_suite(cfg, "gpu_launch", "n_train: 64, n_val: 32, n_test: 32",
                                                     [cfg.small_batch], True, f"dims: [{cfg.small_dims}], rank: [4]",
                                                     "lmf"))
    if run["rows"]:
        r = run["rows"][0]
        ms, peak = r.get(f"fusion_latency_ms_b{b}"), r.get(f"peak_alloc_mib_b{b}")
        say(f"TFN b{b} dims {d}³ out {out} fp32: fusion {_f(ms)} ms, whole model {_f(r.get(f'latency_ms_b{b}'))} ms, "
            f"peak allocated {_f(peak, 1)} MiB ({r['status']} {r['error'][:100]})")
        verdict("TFN b8192 128³ out 64 fp32 fusion ≤ 88 ms (H200)", (ms is not None and ms <= 88) if cfg.cuda else None)
        verdict("TFN b8192 128³ out 64 fp32 peak ≤ 5 GiB", (peak is not None and peak <= 5 * 1024) if cfg.cuda else None)
    if small["rows"]:
        r = small["rows"][0]
        g, e = r.get(f"fusion_graph_latency_ms_b{cfg.small_batch}"), r.get(f"fusion_latency_ms_b{cfg.small_batch}")
        say(f"LMF {cfg.small_dims}³ b{cfg.small_batch}: fusion eager {_f(e)} ms, graph replay {_f(g)} ms "
            f"{r.get('graph_error') or ''}")
        verdict("LMF 32³ b32 graph replay ≤ 0.03 ms (H200)", (g is not None and g <= 0.03) if cfg.cuda else None)
    say()


FAULTY = '''\
import torch
from torch import nn


class DeviceAssert(nn.Module):
    """Forward indexes out of bounds on the GPU: a device-side assert, sticky for the process."""

    def __init__(self, dims, out_dim):
        super().__init__()
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        x = torch.cat(xs, -1)
        if x.is_cuda:
            idx = torch.full((x.shape[0],), 1 << 30, device=x.device, dtype=torch.long)
            x = x[idx]
            torch.cuda.synchronize()
        else:
            raise RuntimeError("CUDA error: device-side assert triggered (simulated on CPU)")
        return self.linear(x)


class HostSync(nn.Module):
    """A host sync in forward (.item()): CUDA-graph capture must fail and keep the eager figures."""

    def __init__(self, dims, out_dim):
        super().__init__()
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        out = self.linear(torch.cat(xs, -1))
        return out * (1.0 + 0.0 * out.sum().item())
'''


def part_defects(cfg) -> None:
    say("## Each defect shown fixed")
    say()
    (cfg.tmp / "gpu_faults.py").write_text(FAULTY)
    lat = latency_spec(cfg, [cfg.small_batch], True, cfg.time_s / 2)
    base = textwrap.dedent("""\
        task: {dataset: synthetic, params: {modalities: 3, dim: 16, n_train: 64, n_val: 32, n_test: 32}}
        train: {epochs: 1, batch_size: 32, seeds: [0]}
        """)
    # 1-2: six compiled trials in the default worker pool, each really compiled.
    comp = cli_run(cfg, "compiled", base + textwrap.dedent(f"""\
        name: gpu_compiled
        measure: {{device: {cfg.device}, accuracy: false, compile: true, latency: {lat}}}
        sweep: {{dims: {cfg.compile_dims}}}
        methods: [{{method: tfn}}, {{method: lmf, params: {{rank: 4}}}}, {{method: early}}]
        """), *cfg.pool_args)
    rows = comp["rows"]
    say("compiled rows: " + "; ".join(f"{r['label']} {r['dims']} {r['status']} graphs={r.get('compile_graphs')} "
                                      f"fallback={r.get('compile_fallback')} compile_s={_f(r.get('compile_s'), 2)}"
                                      for r in rows))
    verdict(f"{3 * len(cfg.compile_dims)} compiled trials, every row compiled (graphs > 0, no fallback)",
            len(rows) == 3 * len(cfg.compile_dims) and all(r["status"] == "ok" and (r.get("compile_graphs") or 0) > 0
                                   and r.get("compile_fallback") is False for r in rows))
    # 3: a device-side assert, then healthy trials in a fresh worker.
    fault = cli_run(cfg, "device_assert", base + textwrap.dedent(f"""\
        name: gpu_assert
        measure: {{device: {cfg.device}, accuracy: false, latency: {lat}}}
        sweep: {{dims: [{cfg.small_dims}]}}
        methods: [{{method: "gpu_faults:DeviceAssert"}}, {{method: lmf, params: {{rank: 4}}}}, {{method: tfn}}]
        """), *cfg.pool_args)
    st = [(r["label"], r["status"], (r.get("cuda_error") or "")[:80]) for r in fault["rows"]]
    say(f"device-side assert run: {st}")
    verdict("device-side assert → cuda_error row, later trials ok",
            len(st) == 3 and st[0][1] == "cuda_error" and all(s == "ok" for _, s, _ in st[1:]))
    # 4: graph capture failing on a host sync keeps eager; bf16 replay equals eager (in its own process).
    sync = cli_run(cfg, "host_sync", base + textwrap.dedent(f"""\
        name: gpu_sync
        measure: {{device: {cfg.device}, accuracy: false, latency: {lat}}}
        sweep: {{dims: [{cfg.small_dims}]}}
        methods: [{{method: "gpu_faults:HostSync"}}]
        """), *cfg.pool_args)
    if sync["rows"]:
        r = sync["rows"][0]
        say(f"host-sync forward: status {r['status']}, eager {_f(r.get(f'latency_ms_b{cfg.small_batch}'))} ms, "
            f"graph_error {r.get('graph_error')!r}")
        verdict("failed capture keeps eager figures and says why",
                (r["status"] == "ok" and r.get(f"latency_ms_b{cfg.small_batch}") is not None
                 and bool(r.get("graph_error"))) if cfg.cuda else None)
    if cfg.cuda:
        eq = subprocess_json(["--graph-check"], {"dims": cfg.small_dims}, timeout=300)
        say(f"bf16 graph replay vs eager (LMF {cfg.small_dims}³, autocast cache off): max |diff| {eq['max_diff']}; "
            f"L2 flush: {eq['flush']}")
        verdict("bf16 graph capture equal to eager outputs", eq["max_diff"] == 0.0)
    else:
        verdict("bf16 graph capture equal to eager outputs", None, "needs CUDA")
    # 5: peak_alloc_mib_b1 with and without a large batch beside it (the lead's memory scoping).
    peaks = []
    for bs in ([1], [1, cfg.limit_batch]):
        one = cli_run(cfg, f"peak_{len(bs)}", base + textwrap.dedent(f"""\
            name: gpu_peak
            measure: {{device: {cfg.device}, accuracy: false, latency: {latency_spec(cfg, bs, False, 0.05)}}}
            sweep: {{dims: [{cfg.small_dims}]}}
            methods: [{{method: lmf, params: {{rank: 4}}}}]
            """), *cfg.pool_args)
        peaks.append(one["rows"][0].get("peak_alloc_mib_b1") if one["rows"] else None)
    say(f"peak_alloc_mib_b1 for batch_sizes [1]: {peaks[0]}; for [1, {cfg.limit_batch}]: {peaks[1]}")
    verdict("peak_alloc_mib_b1 identical for [1] and [1, 8192]",
            (peaks[0] is not None and peaks[0] == peaks[1]) if cfg.cuda else None)
    # 8, 7 and GPU state: from the grid's rows and its nvidia-smi watch.
    grid = getattr(cfg, "grid", None) or {"rows": []}
    ok = [r for r in grid["rows"] if r["status"] == "ok"]
    gpus = {r[0].lower(): r[1] for r in smi("uuid,name")}
    uuids = {r.get("gpu_uuid") for r in ok}
    say(f"rows measured on {sorted(map(str, uuids))}; nvidia-smi GPUs {sorted(gpus)}")
    verdict("NVML device matched by UUID (row gpu_uuid / gpu_name are nvidia-smi's)",
            (bool(ok) and all(r.get("gpu_uuid") in gpus and gpus[r["gpu_uuid"]] == r.get("gpu_name") for r in ok))
            if cfg.cuda else None)
    if cfg.cuda:
        seen, parent, tree = grid.get("seen_pids", set()), grid.get("pid"), grid.get("tree", set())
        say(f"nvidia-smi compute apps during the grid run: {sorted(seen)}; CLI parent {parent}; its children "
            f"{sorted(tree)}")
        if parent in seen:
            ok, why = False, "the CLI parent holds a context"
        elif seen & tree:
            ok, why = True, "only its workers"
        else:  # in a container nvidia-smi may list host PIDs, or none: no evidence either way
            ok, why = None, "nvidia-smi listed no PID of this PID namespace"
        verdict("the parent process holds no CUDA context (only workers in nvidia-smi)", ok, why)
    else:
        verdict("the parent process holds no CUDA context", None, "needs nvidia-smi")
    flags = [r.get("throttled") for r in ok]
    say(f"throttle flags: {flags}; co_tenants: {[r.get('co_tenants') for r in ok]}; lowest SM clock "
        f"{min([r['gpu_sm_clock_min_mhz'] for r in ok if r.get('gpu_sm_clock_min_mhz')], default=None)} MHz")
    verdict("throttle flags read (not None) on every row", (bool(ok) and all(f is not None for f in flags))
            if cfg.cuda else None)
    say()


def graph_check(p: dict) -> dict:
    """In its own process: mmbench's cuda_graph under bf16 (autocast cache off) against eager, and what flush_l2
    changes for a launch-bound and a GPU-bound call."""
    import torch

    from mmbench import measure, methods

    fusion, xs, max_diff = bf16_graph_vs_eager(p["dims"])
    flush = {}
    big = methods.create("tfn", (128, 128, 128), 64).cuda().eval()
    xb = [torch.randn(8192, 128, device="cuda") for _ in range(3)]
    with torch.inference_mode():
        for name, fn in (("lmf32_b64", lambda: fusion(xs)), ("tfn128_b8192", lambda: big(xb))):
            a = measure.latency(fn, device="cuda", max_time_s=0.5).median_ms
            b = measure.latency(fn, device="cuda", max_time_s=0.5, flush_l2=True).median_ms
            flush[name] = f"{a:.4f} ms unflushed, {b:.4f} ms flushed"
    return {"max_diff": max_diff, "flush": flush}


def bf16_graph_vs_eager(d: int):
    """LMF d³ under bf16 (autocast cache off): mmbench's CUDA-graph replay against an eager call. (fusion, inputs,
    max |difference|); 0.0 when the graph computes exactly what eager does, casts included."""
    import torch

    from mmbench import measure, methods
    from mmbench.measure import precision

    torch.manual_seed(0)
    fusion = methods.create("lmf", (d, d, d), 64, rank=4).cuda().eval()
    xs = [torch.randn(64, d, device="cuda") for _ in range(3)]
    out = []
    with precision.region("bf16", "cuda", cache=False), torch.inference_mode():
        replay = measure.cuda_graph(lambda: fusion(xs), outputs=out)
    with torch.no_grad():
        for x in xs:  # new values in the static inputs: the replay must follow them, as eager does
            x.normal_()
    replay()
    torch.cuda.synchronize()
    with precision.region("bf16", "cuda", cache=False), torch.inference_mode():
        eager = fusion(xs)
    return fusion, xs, float((out[0].float() - eager.float()).abs().max())


def _f(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


class Config:
    def __init__(self, quick: bool, dry: bool):
        self.cuda, self.quick = not dry, quick
        self.device = "cuda" if self.cuda else "cpu"
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.cli_timeout = 900
        if dry:  # tiny sizes on the CPU; a worker pool as on CUDA
            self.dims, self.ranks, self.batches, self.precisions = [4], [4], [4, 16], ["fp32", "bf16"]
            self.limit_dims, self.limit_batch, self.limit_out, self.small_dims, self.small_batch = 8, 16, 4, 4, 8
            self.time_s, self.ref_time_s, self.pool_args = 0.02, 0.02, ["--workers", "1"]
            self.compile_dims = [4, 8]
        else:
            quick_or = (lambda q, full: q if quick else full)
            self.dims = quick_or([32, 128], [32, 64, 128])
            self.ranks = quick_or([4], [4, 16])
            self.precisions = quick_or(["fp32", "bf16"], ["fp32", "tf32", "bf16"])
            self.batches = [1024, 8192]
            self.limit_dims, self.limit_batch, self.limit_out, self.small_dims, self.small_batch = 128, 8192, 64, 32, 32
            self.time_s, self.ref_time_s = quick_or(0.15, 0.3), quick_or(0.2, 0.4)
            self.pool_args = []  # the default: one worker per visible GPU
            self.compile_dims = quick_or([32], [32, 64])  # × tfn, lmf, early: six compiled trials in a full run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer configurations, shorter budgets (~2 min)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: suites, CLI, parsing and tables")
    ap.add_argument("--out", type=Path, default=None, help="markdown file [default: benchmarks/gpu_check_<GPU>.md]")
    ap.add_argument("--parts", default="grid,limits,defects")
    args = ap.parse_args()
    cfg = Config(args.quick, args.dry_run)
    gpu = (smi("name") or [["cpu-dry-run" if args.dry_run else "unknown"]])[0][0]
    driver = (smi("driver_version") or [[None]])[0][0]
    t0 = time.perf_counter()
    say(f"# GPU measurement check — {gpu} (driver {driver}), {'quick' if args.quick else 'full'}"
        f"{' DRY RUN on CPU' if args.dry_run else ''}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say()
    say(f"`python benchmarks/gpu_check.py{' --quick' if args.quick else ''}{' --dry-run' if args.dry_run else ''}`; "
        f"temporary folder {cfg.tmp}")
    say()
    for name in args.parts.split(","):
        try:
            globals()[f"part_{name}"](cfg)
        except Exception as exc:  # report and go on: one call of device time must return every part it can
            import traceback

            say(f"**{name} failed**: {type(exc).__name__}: {exc}")
            say("```\n" + traceback.format_exc()[-2500:] + "\n```")
            VERDICTS.append((f"part {name} ran", False))
    failed = [n for n, ok in VERDICTS if ok is False]
    say(f"## Summary: {sum(ok is True for _, ok in VERDICTS)} pass, {len(failed)} fail, "
        f"{sum(ok is None for _, ok in VERDICTS)} n/a; {time.perf_counter() - t0:.0f} s")
    for n in failed:
        say(f"- FAIL: {n}")
    out = args.out or (cfg.tmp / "gpu_check_dry_run.md" if args.dry_run else
                       ROOT / "benchmarks" / f"gpu_check_{re.sub(r'[^A-Za-z0-9]+', '_', gpu).strip('_')}.md")
    out.write_text("\n".join(OUT) + "\n")
    print(f"written: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--ref-timing", "--ref-memory", "--graph-check"):
        payload = json.loads(sys.stdin.read())
        fn = {"--ref-timing": ref_timing, "--ref-memory": ref_memory, "--graph-check": graph_check}[sys.argv[1]]
        print(json.dumps(fn(payload)))
        sys.exit(0)
    sys.exit(main())
