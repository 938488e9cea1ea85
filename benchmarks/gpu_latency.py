"""Issue 4's GPU floors, in one call on a CUDA machine:

- TFN and LMF (rank 4, 16) at batch 1024 and 8192, dims 32³ to 128³: mmbench's latency next to a raw CUDA-event
  loop written here, and mmbench's peak memory next to torch.cuda.max_memory_allocated (agreement within 5%);
- eager versus CUDA-graph replay for LMF;
- every precision (fp32, tf32, bf16, fp16) on one config;
- the whole run path on CUDA: a tiny suite with a precision sweep, CUDA graphs, L2 flush and torch.compile,
  and a real out-of-memory trial followed by a clean one whose peak memory must equal a clean run's.

    python benchmarks/gpu_latency.py [--out FILE.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmbench import measure, methods  # noqa: E402
from mmbench.measure import precision  # noqa: E402

OUT: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def raw_event_loop(fn, calls: int = 100, repeats: int = 10, warmup_s: float = 0.2) -> float:
    """An independent timer, written here: `calls` back-to-back calls between one CUDA event pair, `repeats` times,
    median of the per-call times (ms). (An event pair around every single call would add the events' own launch cost
    to these launch-bound calls.)"""
    end = time.perf_counter() + warmup_s  # long enough for the GPU clocks to leave idle
    while time.perf_counter() < end:
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(calls):
            fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / calls)
    return statistics.median(times)


def raw_peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def latency_table() -> None:
    say("## Latency and memory: mmbench vs an independent CUDA-event loop and torch.cuda.max_memory_allocated")
    say()
    say("| method | dims | batch | mmbench ms (IQR, n) | raw event loop ms | ratio | mmbench peak MiB | "
        "max_memory_allocated MiB | ratio | CUDA graph ms |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    configs = [("tfn", {}), ("lmf", {"rank": 4}), ("lmf", {"rank": 16})]
    for name, hp in configs:
        for d in (32, 64, 128):
            for batch in (1024, 8192):
                torch.manual_seed(0)
                module = methods.create(name, [d, d, d], 2, **hp).cuda().eval()
                xs = [torch.randn(batch, d, device="cuda") for _ in range(3)]
                with torch.inference_mode():
                    fn = lambda: module(xs)  # noqa: E731
                    raw_event_loop(fn, repeats=1)  # both timers then start from the same warm clocks
                    # Interleaved rounds, so clock or neighbour drift hits both timers alike.
                    ours, raws = [], []
                    for _ in range(3):
                        stats = measure.latency(fn, device="cuda", warmup=10, min_samples=20, max_time_s=0.5)
                        ours.append(stats.median_ms)
                        raws.append(raw_event_loop(fn))
                    ours_ms, raw = statistics.median(ours), statistics.median(raws)
                    mem = measure.peak_memory(fn, "cuda")["peak_alloc_mib"]
                    ref_mem = raw_peak_mib(fn)
                    graph = ""
                    if name == "lmf":
                        g = measure.latency(measure.cuda_graph(fn), device="cuda", warmup=10, min_samples=20,
                                            max_time_s=1.0)
                        graph = f"{g.median_ms:.4f}"
                label = name + (f" r{hp['rank']}" if hp else "")
                say(f"| {label} | {d}³ | {batch} | {ours_ms:.4f} ({stats.iqr_ms:.4f}, {stats.n}) | "
                    f"{raw:.4f} | {ours_ms / raw:.3f} | {mem:.1f} | {ref_mem:.1f} | {mem / ref_mem:.3f} | "
                    f"{graph} |")
                del module, xs
                torch.cuda.empty_cache()
    say()


def precision_table() -> None:
    say("## Precisions (LMF rank 16, 128³, batch 8192, forward)")
    say()
    say("| precision | mmbench ms | raw event loop ms |")
    say("|---|---|---|")
    module = methods.create("lmf", [128] * 3, 2, rank=16).cuda().eval()
    xs = [torch.randn(8192, 128, device="cuda") for _ in range(3)]
    for p in precision.PRECISIONS:
        precision.check(p, "cuda")
        with precision.region(p, "cuda"), torch.inference_mode():
            fn = lambda: module(xs)  # noqa: E731
            ours = measure.latency(fn, device="cuda", warmup=10, min_samples=20, max_time_s=1.0).median_ms
            say(f"| {p} | {ours:.4f} | {raw_event_loop(fn):.4f} |")
    say()


def run_path() -> None:
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    say("## The run path on CUDA")
    say()
    suite = textwrap.dedent("""\
        name: gpu_smoke
        task: {dataset: synthetic, params: {n_train: 512, n_val: 256, n_test: 256}}
        train: {epochs: 2, batch_size: 128, seeds: [0]}
        measure:
          device: cuda
          latency: {batch_sizes: [1, 1024], max_time_s: 0.2, cuda_graph: true, flush_l2: true}
        sweep:
          dims: [16]
          rank: [4]
          precision: [fp32, tf32, bf16, fp16]
        methods: [{method: tfn}, {method: lmf}, {method: early}, {method: late}]
        """)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(suite)
        t0 = time.perf_counter()
        run = run_suite(prepare(load_suite(path)), Path(tmp) / "out")
        rows = run.rows()
        say(f"precision sweep with CUDA graphs and L2 flush: {len(rows)} trials in {time.perf_counter() - t0:.1f} s; "
            f"statuses {sorted({r['status'] for r in rows})}; errors {[r['error'] for r in rows if r['error']]}")
        for r in rows:
            say(f"  {r['label']:22} acc {r.get('acc_mean', float('nan')):.3f}  fwd b1024 {r['latency_ms_b1024']:.4f} ms"
                f"  graph {r.get('graph_latency_ms_b1024', float('nan')):.4f} ms  train step "
                f"{r['train_step_ms_b1024']:.4f} ms  peak {r['peak_mem_mib_b1024']:.2f} MiB  "
                f"reserved {r['peak_reserved_mib_b1024']:.1f}  nvml {r.get('nvml_used_mib')}")
        # torch.compile, and a real OOM between two identical clean trials.
        comp = suite.replace("precision: [fp32, tf32, bf16, fp16]", "compile: [true]").replace(
            "methods: [{method: tfn}, {method: lmf}, {method: early}, {method: late}]", "methods: [{method: lmf}]")
        path.write_text(comp)
        t0 = time.perf_counter()
        rows = run_suite(prepare(load_suite(path)), Path(tmp) / "out").rows()
        say(f"torch.compile: {[(r['label'], r['status'], r['error'][:80]) for r in rows]} "
            f"fwd b1024 {rows[0].get('latency_ms_b1024')} ms ({time.perf_counter() - t0:.1f} s with compilation)")
        clean = suite.replace("  precision: [fp32, tf32, bf16, fp16]\n", "").replace(
            "methods: [{method: tfn}, {method: lmf}, {method: early}, {method: late}]", "methods: [{method: lmf}]")
        path.write_text(clean)
        first = run_suite(prepare(load_suite(path)), Path(tmp) / "out").rows()[0]
        path.write_text(clean.replace("methods: [{method: lmf}]",
                                      "methods: [{method: 'tests.oom_module:OutOfMemory'}, {method: lmf}]"))
        rows = run_suite(prepare(load_suite(path)), Path(tmp) / "out").rows()
        say("OOM isolation: " + "; ".join(f"{r['label']} {r['status']} peak b1024 {r.get('peak_mem_mib_b1024')}"
                                          for r in rows))
        keys = [k for k in first if k.startswith(("peak_mem_mib", "peak_alloc", "train_peak_mem", "train_peak_alloc"))]
        say(f"peak memory of the trial after the OOM equals a clean run's: "
            f"{all(first[k] == rows[1][k] for k in keys)} ({', '.join(f'{k}={first[k]:.3f}/{rows[1][k]:.3f}' for k in keys)})")
    say()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--parts", default="latency_table,precision_table,run_path")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    say(f"# GPU measurement check — {props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{props.multi_processor_count} SMs, L2 {props.L2_cache_size // 2**20} MiB")
    say()
    for part in (globals()[p] for p in args.parts.split(",")):
        try:
            part()
        except Exception as exc:  # report and go on: one call of device time must return every part it can
            import traceback

            say(f"**{part.__name__} failed**: {type(exc).__name__}: {exc}")
            say("```\n" + traceback.format_exc()[-3000:] + "\n```")
        if args.out:
            Path(args.out).write_text("\n".join(OUT) + "\n")
