"""The GPU path against independent references, in one call that cannot hang and leaves its table if cut short:

    python benchmarks/gpu_check.py --quick --out DIR   # CUDA, ~4.5 min estimated on one H100 (--estimate: per part)
    python benchmarks/gpu_check.py --out DIR           # the full check, ~9 min estimated
    python benchmarks/gpu_check.py --dry-run           # CPU, tiny sizes: every part that can run without a GPU

Offline on a GPU machine without pydantic: README, "GPU check". Each judged check (and each table row) is appended to
DIR/gpu_check_<GPU>.md and DIR/gpu_check_<GPU>.jsonl the moment it is judged, flushed to disk: a run cut at any
second keeps every finished row. The whole call keeps to --budget-s (default 290 s with --quick, 590 s without): a
part whose estimate no longer fits is a row saying so, and every subprocess is killed at the budget's end.

Everything mmbench measures goes through the real CLI (`python -m mmbench run ... --json`, default worker pool: one
worker per GPU), its output written to files (never a pipe that can fill). Every floor compares mmbench with a
reference computed the same way in a separate process that shares no measure code with mmbench: eager latency
against torch.utils.benchmark.Timer (same autocast placement: cache off, around the call), fusion alone and batch 1
the same way, graph replay against a graph captured by hand, peak memory against max_memory_allocated with one
definition on both sides (the call's peak above what was allocated before it, plus the weights' and inputs' bytes:
workspaces that exist before the call, such as cuBLAS's, count on neither side), the training step (time and memory,
fp16 with a GradScaler, bf16) against a hand-written step, a compiled trial against a hand-compiled module, and a
failed capture followed by a second trial in the same worker pool. Ceilings come from closed forms (FLOPs, bytes)
and this GPU's own measured GEMM peak, not from constants for one GPU model. This process never touches CUDA.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATENCY_FLOOR, MEMORY_FLOOR, CEILING_FACTOR = 0.05, 0.01, 1.5


def _env(extra: dict | None = None) -> dict:
    """The children's environment: this checkout first on the path, then whatever PYTHONPATH this call was given
    (the offline recipe's folder of wheels)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **(extra or {})}


def _f(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


# --- results, written as they come -----------------------------------------------------------------------------------

class Report:
    """Markdown and JSON lines, appended and flushed to disk line by line."""

    def __init__(self, out_dir: Path, gpu: str):
        slug = re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_") or "unknown"
        out_dir.mkdir(parents=True, exist_ok=True)
        self.md, self.jsonl = out_dir / f"gpu_check_{slug}.md", out_dir / f"gpu_check_{slug}.jsonl"
        # appended, never truncated: a second call after a cut one keeps the first one's rows (each JSON line says
        # which call wrote it)
        self.run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.verdicts: list[tuple[str, bool | None]] = []
        self._header: tuple | None = None

    @staticmethod
    def _append(path: Path, text: str) -> None:
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self._append(self.md, line + "\n")
        self._header = None if not line.startswith("|") else self._header

    def record(self, **doc) -> None:
        self._append(self.jsonl, json.dumps({"run": self.run, **doc}, default=str) + "\n")

    def verdict(self, part: str, name: str, ok: bool | None, detail: str = "", **data) -> None:
        self.verdicts.append((name, ok))
        self.say(f"- {'PASS' if ok else ('n/a' if ok is None else 'FAIL')}: {name}{' — ' + detail if detail else ''}")
        self.record(kind="verdict", part=part, check=name, ok=ok, detail=detail, **data)

    def row(self, part: str, cells: dict, **data) -> None:
        """One table row: the header first if this table has none yet; ``data``: its numbers, for the JSON line."""
        cols = tuple(cells)
        if self._header != cols:
            self.say("| " + " | ".join(cols) + " |")
            self.say("|" + "---|" * len(cols))
            self._header = cols
        self.say("| " + " | ".join("" if v is None else str(v) for v in cells.values()) + " |")
        self._header = cols
        self.record(kind="row", part=part, **cells, **data)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def timeout(self, want: float | None = None) -> float:
        """A subprocess's limit: what it asks for, never past the budget's end."""
        left = max(1.0, self.left() - 3)
        return min(want, left) if want else left


# --- subprocesses that cannot hang -----------------------------------------------------------------------------------

def run_proc(cmd: list[str], cwd: Path, timeout: float, stdin: str | None = None, env: dict | None = None,
             poll=None) -> tuple[int | None, str, str]:
    """Run cmd with stdout and stderr in files (a pipe nobody reads fills at 64 KiB and blocks the child), its own
    process group killed at ``timeout``; ``poll()`` is called every 0.3 s meanwhile. (exit code or None when killed,
    stdout, stderr)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.TemporaryFile("w+") as inp:
        inp.write(stdin or "")
        inp.seek(0)
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or _env(), stdin=inp, stdout=out, stderr=err, text=True,
                                start_new_session=True)
        end, code = time.monotonic() + timeout, None
        try:
            while True:
                code = proc.poll()
                if code is not None or time.monotonic() >= end:
                    break
                if poll is not None:
                    poll(proc.pid)
                time.sleep(0.3)
        finally:
            if code is None:  # past the limit (or interrupted): the child and everything it started
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


def smi(query: str, kind: str = "gpu") -> list[list[str]]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{kind}={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def cli_run(cfg, name: str, suite: str, *extra: str, watch: bool = False) -> dict:
    """Write the suite, run `python -m mmbench run SUITE --json` in cfg.tmp (user modules import from there); with
    ``watch``, record nvidia-smi's compute apps and the CLI's process tree meanwhile."""
    import psutil

    path = cfg.tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(suite))
    cmd = [sys.executable, "-m", "mmbench", "run", str(path), "--json", "--out", str(cfg.tmp / "results"), *extra]
    seen: set[int] = set()
    tree: set[int] = set()
    cli: list[int] = []

    def poll(pid: int) -> None:
        cli[:] = [pid]
        try:
            tree.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass
        seen.update(int(r[0]) for r in smi("pid,used_memory", "compute-apps") if r and r[0].isdigit())

    t0 = time.perf_counter()
    code, out, err = run_proc(cmd, cfg.tmp, cfg.budget.timeout(cfg.cli_timeout), poll=poll if watch else None)
    secs = time.perf_counter() - t0
    if code != 0:
        why = "killed at the budget's end" if code is None else f"exit {code}"
        cfg.rep.say(f"**{name}: the CLI failed ({why})**: {err.strip()[-1200:]}")
        return {"rows": [], "seconds": secs, "ok": False}
    doc = json.loads(out)
    run_dir = Path(doc["run_dir"])
    resolved = json.loads((run_dir / "resolved.json").read_text())
    cfg.rep.say(f"{name}: {len(doc['rows'])} trials through the CLI in {secs:.1f} s "
                f"(statuses {sorted({r['status'] for r in doc['rows']})})")
    cfg.rep.record(kind="mmbench_rows", run=name, rows=doc["rows"])  # kept even if the references never come back
    return {"rows": doc["rows"], "seconds": secs, "ok": True, "pid": cli[0] if cli else None, "seen_pids": seen,
            "tree": tree,
            "trials": {t["id"]: t for t in resolved["trials"]},
            "tasks": json.loads((run_dir / "tasks.json").read_text())}


def refs_or_none(cfg, mode: str, payload, want_s: float):
    """subprocess_json, or None (said in the report) when the reference process fails: mmbench's figures then stand
    unjudged (n/a), not failed."""
    try:
        return subprocess_json(cfg, mode, payload, want_s)
    except Exception as exc:
        cfg.rep.say(f"**reference {mode} failed**: {exc}")
        return None


def subprocess_json(cfg, mode: str, payload, want_s: float) -> object:
    code, out, err = run_proc([sys.executable, str(Path(__file__).resolve()), mode], ROOT,
                              cfg.budget.timeout(want_s), stdin=json.dumps(payload))
    if code != 0:
        raise RuntimeError(f"{mode} {'killed at its time limit' if code is None else 'failed'}: {err.strip()[-800:]}")
    return json.loads(out.strip().splitlines()[-1])


# --- suites ----------------------------------------------------------------------------------------------------------

def latency_spec(batches, graph: bool, time_s: float, train: bool = False) -> str:
    return (f"{{batch_sizes: {list(batches)}, max_time_s: {time_s}, min_time_s: {time_s / 2}, rounds: 3, "
            f"warmup: 10, min_samples: 10, train_step: {str(train).lower()}, cuda_graph: {str(graph).lower()}}}")


TASK = ("task: {dataset: synthetic, params: {modalities: 3, dim: 16, num_classes: NC, n_train: 64, n_val: 32, "
        "n_test: 32}}\ntrain: {epochs: 1, batch_size: 32, seeds: [0]}\n")


def suite(cfg, name: str, methods: str, sweep: str, latency: str, classes: int = 2, extra: str = "") -> str:
    return (f"name: {name}\n" + TASK.replace("NC", str(classes)) +
            f"measure: {{device: {cfg.device}, accuracy: false, flops: false, latency: {latency}{extra}}}\n"
            f"sweep: {{{sweep}}}\nmethods: {methods}\n")


# --- references: separate processes, no mmbench measure code ---------------------------------------------------------

def _ref_model(c):
    """The trial's model as mmbench builds it (the model is not a measure), random inputs of its shapes, and the
    precision context written out here: TF32 flags for tf32, autocast for bf16/fp16 (``ctx(cache)``: its weight-cast
    cache off for inference, as a request runs; on for a training step, autocast's default)."""
    import contextlib

    import torch

    from mmbench.model import build

    torch.manual_seed(0)
    model = build(c["method"], c["hparams"], c["input_dims"], c["dims"], c["num_classes"],
                  c["encoder_hidden"]).to(c["device"]).eval()
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(c["batch"], d, generator=g).to(c["device"]) for d in c["input_dims"]]
    fs = [torch.randn(c["batch"], d, generator=g).to(c["device"]) for d in c["dims"]]
    y = torch.randint(0, c["num_classes"], (c["batch"],), generator=g).to(c["device"])
    if c["device"].startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = c["precision"] == "tf32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c["precision"])
    def ctx(cache: bool = False):
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(c["device"].split(":")[0], dtype=dtype, cache_enabled=cache)

    return model, xs, fs, y, ctx


def _hand_step(model, xs, y, c, ctx):
    """A training step written out: the suite's optimizer, cross-entropy under autocast, backward outside it, a
    GradScaler for fp16. Returns (step(opt), new optimizer)."""
    import torch

    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[c["optimizer"]]
    scaler = torch.amp.GradScaler("cuda") if c["precision"] == "fp16" and c["device"].startswith("cuda") else None

    def new_opt():
        return opt_cls(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])

    def step(opt):
        opt.zero_grad(set_to_none=True)
        with ctx(cache=True):
            loss = torch.nn.functional.cross_entropy(model(xs), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return step, new_opt


def _hand_graph(fn):
    """A CUDA graph captured by hand, as PyTorch's documentation does it."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def ref_timing(configs: list[dict]) -> list[dict]:
    """Per configuration: the forward, the fusion alone, a hand-captured graph of the forward and a hand-written
    training step, each timed by torch.utils.benchmark.Timer after a warm-up of the clocks."""
    import torch
    from torch.utils.benchmark import Timer

    out = []
    for c in configs:
        model, xs, fs, y, ctx = _ref_model(c)

        def fwd():
            with ctx():
                model(xs)

        def fusion():
            with ctx():
                model.fusion(fs)

        def timed(fn):
            end = time.perf_counter() + c.get("warm_s", 0.3)
            while time.perf_counter() < end:
                fn()
            return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=c["min_run_time"]).median * 1e3

        res = dict(c)
        with torch.inference_mode():
            res["timer_ms"], res["fusion_timer_ms"] = timed(fwd), timed(fusion)
            if c["device"].startswith("cuda") and c.get("graph"):
                res["graph_timer_ms"] = timed(_hand_graph(fwd))
        if c.get("train"):
            model.train()
            step, new_opt = _hand_step(model, xs, y, c, ctx)
            opt = new_opt()
            res["train_timer_ms"] = timed(lambda: step(opt))
        out.append(res)
        del model, xs, fs
    return out


def ref_compiled(configs: list[dict]) -> list[dict]:
    """The forward of a module compiled by hand (torch.compile, dynamic=False, as mmbench compiles), timed by Timer."""
    import torch
    from torch.utils.benchmark import Timer

    out = []
    for c in configs:
        model, xs, _, _, ctx = _ref_model(c)
        compiled = torch.compile(model, dynamic=False)

        def fwd():
            with ctx():
                compiled(xs)

        with torch.inference_mode():
            for _ in range(3):
                fwd()
            ms = Timer("fn()", globals={"fn": fwd}).blocked_autorange(min_run_time=c["min_run_time"]).median * 1e3
        out.append({**c, "compiled_timer_ms": ms})
    return out


def _scope_bytes(tensors) -> int:
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def _peak_above(fn, scope) -> float:
    """MiB: the call's max_memory_allocated above what was allocated before it, plus the scope's tensors."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before + _scope_bytes(scope)) / 2**20


def ref_memory(configs: list[dict]) -> list[dict]:
    """One trial's configurations in this fresh process: per batch the forward's and a training step's peak, each
    after a warm call (workspaces exist then, as after mmbench's timing), with the definition above."""
    import gc

    import torch

    out = []
    for c in configs:
        model, xs, _, y, ctx = _ref_model(c)
        weights = [*model.parameters(), *model.buffers()]
        res = dict(c)

        def fwd():
            with torch.inference_mode(), ctx():
                model(xs)

        fwd()
        res["peak_alloc_mib"] = _peak_above(fwd, weights + xs)
        if c.get("train"):
            model.train()
            step, new_opt = _hand_step(model, xs, y, c, ctx)
            step(new_opt())  # warm: backward's workspaces, the scaler's state
            model.zero_grad(set_to_none=True)
            gc.collect()
            opt = new_opt()  # fresh, no state until its first step (created inside the measured call)
            res["train_peak_alloc_mib"] = _peak_above(lambda: step(opt), weights + xs + [y])
            model.zero_grad(set_to_none=True)
            del opt
        out.append(res)
        del model, xs, weights
        gc.collect()
    return out


def ref_limits(p: dict) -> dict:
    """This GPU's fp32 GEMM peak (TF32 off) and copy bandwidth, measured; and TFN's fusion alone at the limits shape:
    its peak memory (definition above) beside the closed form (weights, inputs, x̃ and peak_values of its split)."""
    import torch
    from torch.utils.benchmark import Timer

    from mmbench import methods

    torch.backends.cuda.matmul.allow_tf32 = False
    n = p["gemm_n"]
    a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    t = Timer("a @ b", globals={"a": a, "b": b}).blocked_autorange(min_run_time=0.5).median
    gemm_tflops = 2 * n ** 3 / t / 1e12
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = Timer("d.copy_(s)", globals={"d": dst, "s": src}).blocked_autorange(min_run_time=0.3).median
    copy_gbps = 2 * src.numel() / t / 1e9
    del a, b, src, dst
    d, out, batch = p["dims"], p["out"], p["batch"]
    tfn = methods.create("tfn", [d] * 3, out).cuda().eval()
    xs = [torch.randn(batch, d, device="cuda") for _ in range(3)]
    with torch.inference_mode():
        tfn(xs)
        peak = _peak_above(lambda: tfn(xs), [*tfn.parameters(), *xs])
    closed = (_scope_bytes([*tfn.parameters(), *xs]) + 4 * batch * (3 * (d + 1) + tfn.peak_values(tfn.split))) / 2**20
    return {"gemm_tflops": gemm_tflops, "copy_gbps": copy_gbps, "tfn_peak_mib": peak, "tfn_closed_mib": closed,
            "tfn_split": tfn.split, "tfn_flops": tfn.expected_flops(batch)}


def graph_check(p: dict) -> dict:
    """mmbench's cuda_graph under bf16 against eager (bf16_graph_vs_eager), and what flush_l2 changes for a
    launch-bound and a GPU-bound call (printed, not judged)."""
    import torch

    from mmbench import measure, methods

    fusion, xs, max_diff = bf16_graph_vs_eager(p["dims"])
    big = methods.create("tfn", (128, 128, 128), 64).cuda().eval()
    xb = [torch.randn(8192, 128, device="cuda") for _ in range(3)]
    flush = {}
    with torch.inference_mode():
        for name, fn in (("lmf32_b64", lambda: fusion(xs)), ("tfn128_b8192", lambda: big(xb))):
            a = measure.latency(fn, device="cuda", max_time_s=0.3).median_ms
            b = measure.latency(fn, device="cuda", max_time_s=0.3, flush_l2=True).median_ms
            flush[name] = f"{a:.4f} ms unflushed, {b:.4f} ms flushed"
    return {"max_diff": max_diff, "flush": flush}


def bf16_graph_vs_eager(d: int):
    """LMF d³ under bf16 (autocast cache off): mmbench's CUDA-graph replay against an eager call, after new values in
    the static inputs. (fusion, inputs, max |difference|); 0.0 when the graph computes exactly what eager does."""
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
        for x in xs:
            x.normal_()
    replay()
    torch.cuda.synchronize()
    with precision.region("bf16", "cuda", cache=False), torch.inference_mode():
        eager = fusion(xs)
    return fusion, xs, float((out[0].float() - eager.float()).abs().max())


REFS = {"--ref-timing": ref_timing, "--ref-memory": ref_memory, "--ref-compiled": ref_compiled,
        "--ref-limits": ref_limits, "--graph-check": graph_check}


def ref_configs(run: dict, batches, cfg, **extra) -> list[dict]:
    """One reference configuration per (trial, batch size), from the run's own resolved trials."""
    task = run["tasks"][0]
    out = []
    for r in run["rows"]:
        t = run["trials"][r["trial_id"]]
        for b in batches:
            out.append({"key": [r["trial_id"], b], "method": t["method"], "hparams": t["hparams"],
                        "input_dims": task["input_dims"], "dims": list(t["dims"]), "num_classes": task["num_classes"],
                        "encoder_hidden": t["model"]["encoder_hidden"], "batch": b,
                        "precision": t["measure"]["precision"], "device": cfg.device, "min_run_time": cfg.ref_time_s,
                        "optimizer": t["train"]["optimizer"], "lr": t["train"]["lr"],
                        "weight_decay": t["train"]["weight_decay"], **extra})
    return out


def _ratio(ours, ref):
    return ours / ref if ours is not None and ref else None


def _within(ratio, floor):
    return None if ratio is None else abs(ratio - 1) <= floor


# --- the parts -------------------------------------------------------------------------------------------------------

def part_grid(cfg) -> None:
    """TFN and LMF over dims × precisions × batch sizes (batch 1 included): forward, fusion alone, graph replay and
    training step against their references; forward and training-step peaks against a fresh process's."""
    rep = cfg.rep
    rep.say("## Grid: mmbench against independent references")
    rep.say()
    ranks = ", ".join(map(str, cfg.ranks))
    run = cli_run(cfg, "grid", suite(cfg, "gpu_grid", f"[{{method: tfn}}, {{method: lmf, sweep: {{rank: [{ranks}]}}}}]",
                                     f"dims: {cfg.dims}, precision: {cfg.precisions}",
                                     latency_spec(cfg.batches, True, cfg.time_s, train=True)), *cfg.pool_args,
                  watch=cfg.cuda)
    cfg.grid = run
    if not run["ok"]:
        rep.verdict("grid", "grid ran", False)
        return
    configs = ref_configs(run, cfg.batches, cfg, graph=True, train=True)
    by = {tuple(t["key"]): t for t in refs_or_none(cfg, "--ref-timing", configs, want_s=cfg.cli_timeout) or []}
    mems: dict = {}
    if cfg.cuda:
        from concurrent.futures import ThreadPoolExecutor

        per_trial: dict[str, list] = {}
        for c in configs:
            per_trial.setdefault(c["key"][0], []).append(c)
        with ThreadPoolExecutor(4) as ex:  # memory needs no quiet GPU: four fresh processes at a time
            for ms in ex.map(lambda cs: refs_or_none(cfg, "--ref-memory", cs, want_s=300), per_trial.values()):
                mems.update({tuple(m["key"]): m for m in ms or []})
    checks: dict[str, list] = {k: [] for k in ("latency", "fusion", "graph", "train", "memory", "train_memory")}
    for r in run["rows"]:
        for b in cfg.batches:
            ref, mem = by.get((r["trial_id"], b), {}), mems.get((r["trial_id"], b), {})
            pairs = {"latency": (r.get(f"latency_ms_b{b}"), ref.get("timer_ms")),
                     "fusion": (r.get(f"fusion_latency_ms_b{b}"), ref.get("fusion_timer_ms")),
                     "graph": (r.get(f"graph_latency_ms_b{b}"), ref.get("graph_timer_ms")),
                     "train": (r.get(f"train_step_ms_b{b}"), ref.get("train_timer_ms")),
                     "memory": (r.get(f"peak_alloc_mib_b{b}"), mem.get("peak_alloc_mib")),
                     "train_memory": (r.get(f"train_peak_alloc_mib_b{b}"), mem.get("train_peak_alloc_mib"))}
            cells = {"method": r["label"], "dims": r["dims"], "prec": r.get("precision"), "batch": b,
                     "status": r["status"]}
            data = {k: {"ours": ours, "ref": theirs} for k, (ours, theirs) in pairs.items()}
            for k, (ours, theirs) in pairs.items():
                ratio = _ratio(ours, theirs)
                cells[f"{k} ours / ref"] = f"{_f(ours, 3)} / {_f(theirs, 3)} = {_f(ratio, 3)}"
                floor = MEMORY_FLOOR if k.endswith("memory") else LATENCY_FLOOR
                if r["status"] != "ok" or (ours is None and theirs is not None):  # the reference could measure it
                    checks[k].append(False)
                elif ratio is not None:
                    checks[k].append(_within(ratio, floor))
            cells["graph_error"] = (r.get("graph_error") or "")[:80]
            cells["throttled"] = r.get("throttled")
            rep.row("grid", cells, values=data)
    rep.say()
    names = {"latency": "forward median within 5% of Timer", "fusion": "fusion-alone median within 5% of Timer",
             "graph": "graph replay within 5% of a hand-captured graph's (Timer)",
             "train": "training step within 5% of a hand-written step's (fp16: GradScaler)",
             "memory": "forward peak within 1% of a fresh process's (one definition)",
             "train_memory": "training-step peak within 1% of a fresh process's (one definition)"}
    for k, name in names.items():
        got = checks[k]
        rep.verdict("grid", name, (all(got) if got else None) if cfg.cuda else None,
                    f"{sum(bool(x) for x in got)}/{len(got)} configurations" + ("" if cfg.cuda else " (dry run)"))
    rep.say()


def part_limits(cfg) -> None:
    """TFN at the shape whose old contraction order needed 32.5 GiB: its fusion time against the closed-form FLOPs
    at this GPU's measured fp32 GEMM peak, and its fusion-alone peak against the closed form of its split."""
    rep = cfg.rep
    d, b, out = cfg.limit_dims, cfg.limit_batch, cfg.limit_out
    rep.say(f"## Limits: TFN {d}³ out {out} batch {b} fp32 against closed forms and this GPU's measured peaks")
    rep.say()
    run = cli_run(cfg, "limits", suite(cfg, "gpu_limits", "[{method: tfn}]", f"dims: [{d}]",
                                       latency_spec([b], False, cfg.time_s), classes=out))
    if not cfg.cuda:
        rep.verdict("limits", "TFN fusion within 1.5x of FLOPs / measured GEMM peak", None, "needs CUDA")
        rep.verdict("limits", "TFN fusion-alone peak within 1% of its closed form", None, "needs CUDA")
        return
    lim = subprocess_json(cfg, "--ref-limits", {"dims": d, "out": out, "batch": b, "gemm_n": 8192}, want_s=240)
    r = run["rows"][0] if run["rows"] else {}
    ms = r.get(f"fusion_latency_ms_b{b}")
    bound_ms = lim["tfn_flops"] / (lim["gemm_tflops"] * 1e12) * 1e3
    rep.row("limits", {"fp32 GEMM TFLOP/s (measured)": _f(lim["gemm_tflops"], 1),
                       "copy GB/s (measured)": _f(lim["copy_gbps"], 0), "split": lim["tfn_split"],
                       "FLOPs": lim["tfn_flops"], "bound ms": _f(bound_ms, 2), "mmbench fusion ms": _f(ms, 2),
                       "peak MiB (fresh process)": _f(lim["tfn_peak_mib"], 1),
                       "closed form MiB": _f(lim["tfn_closed_mib"], 1), "status": r.get("status")})
    rep.verdict("limits", "TFN fusion within 1.5x of FLOPs / measured GEMM peak",
                ms is not None and ms <= CEILING_FACTOR * bound_ms, f"{_f(ms, 2)} ms vs bound {_f(bound_ms, 2)} ms")
    rep.verdict("limits", "TFN fusion-alone peak within 1% of its closed form",
                _within(_ratio(lim["tfn_peak_mib"], lim["tfn_closed_mib"]), MEMORY_FLOOR))
    rep.say()


def part_compiled(cfg) -> None:
    """Compiled trials (fresh compiler state each): every row compiled, static graphs per batch size, timed against
    the same module compiled by hand."""
    rep = cfg.rep
    rep.say("## Compiled trials against hand-compiled modules")
    rep.say()
    batches, hp = cfg.compile_batches, {"lmf": ", params: {rank: 4}"}
    methods = "[" + ", ".join(f"{{method: {m}{hp.get(m, '')}}}" for m in cfg.compile_methods) + "]"
    run = cli_run(cfg, "compiled", suite(cfg, "gpu_compiled", methods, f"dims: {cfg.compile_dims}",
                                         latency_spec(batches, False, cfg.time_s), extra=", compile: true"),
                  *cfg.pool_args)
    rows, want = run["rows"], len(cfg.compile_methods) * len(cfg.compile_dims)
    rep.verdict("compiled", f"{want} compiled trials, every row compiled (graphs > 0, no fallback)",
                len(rows) == want and all(
                    r["status"] == "ok" and (r.get("compile_graphs") or 0) > 0 and r.get("compile_fallback") is False
                    for r in rows))
    if not cfg.cuda or not rows:
        rep.verdict("compiled", "compiled forward within 5% of a hand-compiled module's (Timer)", None,
                    "needs CUDA" if not cfg.cuda else "no rows")
        return
    refs = subprocess_json(cfg, "--ref-compiled", ref_configs(run, batches, cfg), want_s=300)
    ok = []
    for c in refs:
        r = next(x for x in rows if x["trial_id"] == c["key"][0])
        ours, ratio = r.get(f"latency_ms_b{c['batch']}"), _ratio(r.get(f"latency_ms_b{c['batch']}"),
                                                                c["compiled_timer_ms"])
        ok.append(_within(ratio, LATENCY_FLOOR))
        rep.row("compiled", {"method": r["label"], "dims": r["dims"], "batch": c["batch"], "mmbench ms": _f(ours),
                             "hand-compiled ms": _f(c["compiled_timer_ms"]), "ratio": _f(ratio, 3),
                             "graphs": r.get("compile_graphs"), "compile_s": _f(r.get("compile_s"), 1)})
    rep.verdict("compiled", "compiled forward within 5% of a hand-compiled module's (Timer)",
                all(x is True for x in ok), f"{sum(x is True for x in ok)}/{len(ok)}")
    rep.say()


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


def part_faults(cfg) -> None:
    """A device-side assert, then healthy trials; a failed capture, then a second trial in the same worker pool (one
    worker: it must be replaced); bf16 graph replay equal to eager; batch-1 peak alone and beside a large batch; NVML
    by UUID; no CUDA context in the parent; throttle flags read."""
    rep = cfg.rep
    rep.say("## Faults and GPU facts")
    rep.say()
    (cfg.tmp / "gpu_faults.py").write_text(FAULTY)
    lat = latency_spec([cfg.small_batch], True, cfg.time_s / 2)
    fault = cli_run(cfg, "device_assert", suite(cfg, "gpu_assert", '[{method: "gpu_faults:DeviceAssert"}, '
                                                "{method: lmf, params: {rank: 4}}, {method: tfn}]",
                                                f"dims: [{cfg.small_dims}]", lat), "--workers", "1")
    st = [(r["label"], r["status"]) for r in fault["rows"]]
    rep.verdict("faults", "device-side assert → cuda_error row, later trials ok",
                len(st) == 3 and st[0][1] == "cuda_error" and all(s == "ok" for _, s in st[1:]), str(st))
    sync = cli_run(cfg, "host_sync", suite(cfg, "gpu_sync", '[{method: "gpu_faults:HostSync"}, '
                                           "{method: lmf, params: {rank: 4}}]", f"dims: [{cfg.small_dims}]", lat),
                   "--workers", "1")
    b = cfg.small_batch
    rows = sync["rows"]
    for r in rows:
        rep.row("faults", {"trial": r["label"], "status": r["status"], "eager ms": _f(r.get(f"latency_ms_b{b}")),
                           "graph ms": _f(r.get(f"graph_latency_ms_b{b}")),
                           "graph_error": (r.get("graph_error") or "")[:120], "error": r["error"][:80]})
    first_ok = len(rows) == 2 and rows[0]["status"] == "ok" and rows[0].get(f"latency_ms_b{b}") is not None \
        and bool(rows[0].get("graph_error"))
    second_ok = len(rows) == 2 and rows[1]["status"] == "ok" and rows[1].get(f"graph_latency_ms_b{b}") is not None \
        and not rows[1].get("graph_error")
    rep.verdict("faults", "failed capture keeps eager figures and says why", first_ok if cfg.cuda else None)
    rep.verdict("faults", "the next trial in the same pool (one worker) is ok with its graphs (worker replaced)",
                second_ok if cfg.cuda else None)
    if cfg.cuda:
        eq = subprocess_json(cfg, "--graph-check", {"dims": cfg.small_dims}, want_s=120)
        rep.verdict("faults", "bf16 graph replay equal to eager outputs", eq["max_diff"] == 0.0,
                    f"max |diff| {eq['max_diff']}; L2 flush (not judged): {eq['flush']}")
    else:
        rep.verdict("faults", "bf16 graph replay equal to eager outputs", None, "needs CUDA")
    peaks = []
    for bs in ([1], [1, cfg.limit_batch]) if cfg.peak_check else ():
        one = cli_run(cfg, f"peak_{len(bs)}", suite(cfg, "gpu_peak", "[{method: lmf, params: {rank: 4}}]",
                                                    f"dims: [{cfg.small_dims}]", latency_spec(bs, False, 0.05)),
                      *cfg.pool_args)
        peaks.append(one["rows"][0].get("peak_alloc_mib_b1") if one["rows"] else None)
    if cfg.peak_check:
        rep.verdict("faults", f"peak_alloc_mib_b1 identical for [1] and [1, {cfg.limit_batch}]",
                    (peaks[0] is not None and peaks[0] == peaks[1]) if cfg.cuda else None, f"{peaks}")
    grid = getattr(cfg, "grid", None) or {"rows": []}
    ok = [r for r in grid["rows"] if r["status"] == "ok"]
    gpus = {r[0].lower(): r[1] for r in smi("uuid,name")}
    rep.verdict("faults", "NVML device matched by UUID (row gpu_uuid / gpu_name are nvidia-smi's)",
                (bool(ok) and all(r.get("gpu_uuid") in gpus and gpus[r["gpu_uuid"]] == r.get("gpu_name")
                                  for r in ok)) if cfg.cuda else None,
                f"{sorted(map(str, {r.get('gpu_uuid') for r in ok}))}")
    if cfg.cuda:
        seen, tree, parent = grid.get("seen_pids", set()), grid.get("tree", set()), grid.get("pid")
        why = f"compute apps {sorted(seen)}, CLI {parent}, its children {sorted(tree)}"
        if parent in seen:
            parent_ok = False
        elif seen & tree:
            parent_ok = True
        else:  # in a container nvidia-smi may list host PIDs, or none: no evidence either way
            parent_ok, why = None, "nvidia-smi listed no PID of this PID namespace"
        rep.verdict("faults", "the parent process holds no CUDA context (only workers in nvidia-smi)", parent_ok, why)
    else:
        rep.verdict("faults", "the parent process holds no CUDA context", None, "needs nvidia-smi")
    flags = [r.get("throttled") for r in ok]
    rep.verdict("faults", "throttle flags read (not None) on every row",
                (bool(ok) and all(f is not None for f in flags)) if cfg.cuda else None,
                f"co_tenants {[r.get('co_tenants') for r in ok]}")
    rep.say()


PARTS = {"grid": part_grid, "limits": part_limits, "compiled": part_compiled, "faults": part_faults}


class Config:
    def __init__(self, quick: bool, dry: bool):
        self.cuda, self.quick = not dry, quick
        self.device = "cuda" if self.cuda else "cpu"
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.cli_timeout = 600
        self.compile_methods = ["tfn", "lmf", "early"]
        self.peak_check = True  # batch-1 peak alone and beside a large batch: two more CLI runs
        if dry:  # tiny sizes on the CPU; a worker pool as on CUDA
            self.dims, self.ranks, self.batches, self.precisions = [4], [4], [1, 16], ["fp32", "bf16"]
            self.limit_dims, self.limit_batch, self.limit_out, self.small_dims, self.small_batch = 8, 16, 4, 4, 8
            self.time_s, self.ref_time_s, self.pool_args = 0.02, 0.02, ["--workers", "1"]
            self.compile_dims, self.compile_batches = [4], [8]
        else:
            self.dims = [64] if quick else [32, 128]
            self.ranks = [4]
            self.precisions = ["fp32", "bf16", "fp16"] if quick else ["fp32", "tf32", "bf16", "fp16"]
            self.batches = [1, 8192]
            self.limit_dims, self.limit_batch, self.limit_out, self.small_dims, self.small_batch = 128, 8192, 64, 32, 32
            self.time_s, self.ref_time_s = (0.15, 0.2) if quick else (0.3, 0.4)
            self.pool_args = []  # the default: one worker per visible GPU
            self.compile_dims, self.compile_batches = [32], [32]
            if quick:
                self.compile_methods, self.peak_check = ["tfn"], False

    # Assumed costs on one H100, none measured on a GPU yet: a CLI run's start (the parent's imports and suite
    # preparation, a worker's torch import, CUDA context and warm-up imports), a trial's fixed work (build, counts,
    # memory scopes), compiling one module pair (forward and fusion) at one batch size, a reference process's start.
    CLI_S, TRIAL_S, COMPILE_S, PROCESS_S, WARM_S = 15.0, 3.0, 15.0, 10.0, 0.25

    def estimate(self) -> dict[str, float]:
        """Seconds per part, from this configuration and the costs above: a timed function takes at most its
        max_time_s plus the clocks' warm-up, a reference its min_run_time plus its warm-up (blocked_autorange stops
        soon after min_run_time)."""
        n, nb, fn_s = len(self.dims) * len(self.precisions) * (1 + len(self.ranks)), len(self.batches), \
            self.time_s + self.WARM_S
        nc, nbc = len(self.compile_methods) * len(self.compile_dims), len(self.compile_batches)
        return {"grid": self.CLI_S + n * (self.TRIAL_S + nb * 5 * fn_s)  # 3 eager functions + 2 graphs per batch
                + self.PROCESS_S + n * nb * 4 * (self.ref_time_s + 0.3)  # forward, fusion, graph, step
                + math.ceil(n / 4) * self.PROCESS_S,  # memory: a fresh process per trial, four at a time
                "limits": self.CLI_S + self.TRIAL_S + 2 * fn_s + self.PROCESS_S + 5,
                "compiled": self.CLI_S + nc * (self.TRIAL_S + nbc * (self.COMPILE_S + 2 * fn_s))
                + self.PROCESS_S + nc * nbc * (self.COMPILE_S + self.ref_time_s + 0.3),
                "faults": (2 + 2 * self.peak_check) * self.CLI_S + (5 + 2 * self.peak_check) * self.TRIAL_S
                + self.PROCESS_S}


def _versions() -> dict[str, str]:
    """Python, torch and pydantic (and where pydantic was found: the offline recipe's folder or site-packages), read in
    a child so that this process never imports torch (nor touches CUDA)."""
    code = ("import sys, json, torch, pydantic; print(json.dumps({'python': sys.version.split()[0], "
            "'torch': torch.__version__, 'pydantic': pydantic.VERSION + ' from ' + pydantic.__file__}))")
    status, out, err = run_proc([sys.executable, "-c", code], ROOT, 120)
    return json.loads(out) if status == 0 else {"error": err.strip()[-300:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer configurations, shorter budgets")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: suites, CLI, references and tables")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for gpu_check_<GPU>.md and .jsonl [default: benchmarks/; a temporary one with "
                         "--dry-run]")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-time budget [290 with --quick, 590 without]")
    ap.add_argument("--estimate", action="store_true", help="print the time estimate per part and exit")
    args = ap.parse_args(argv)
    cfg = Config(args.quick, args.dry_run)
    est = cfg.estimate()
    budget_s = args.budget_s or (900.0 if args.dry_run else 290.0 if args.quick else 590.0)  # a loaded CPU is slow
    if args.estimate:
        print(json.dumps({**{k: round(v) for k, v in est.items()}, "total": round(sum(est.values())),
                          "budget": budget_s}))
        return 0
    gpu = (smi("name") or [["cpu-dry-run" if args.dry_run else "unknown"]])[0][0]
    driver = (smi("driver_version") or [[None]])[0][0]
    out_dir = args.out or (cfg.tmp if args.dry_run else ROOT / "benchmarks")
    cfg.rep, cfg.budget = Report(out_dir, gpu), Budget(budget_s)
    rep, t0 = cfg.rep, time.perf_counter()
    rep.say(f"# GPU measurement check — {gpu} (driver {driver}), {'quick' if args.quick else 'full'}"
            f"{' DRY RUN on CPU' if args.dry_run else ''}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    rep.say()
    rep.say(f"`python benchmarks/gpu_check.py {' '.join(sys.argv[1:] if argv is None else argv)}`; budget "
            f"{budget_s:.0f} s; estimate {sum(est.values()):.0f} s ({', '.join(f'{k} {v:.0f}' for k, v in est.items())}"
            "; from the configuration and assumed per-worker, per-trial and compile costs: Config.estimate)")
    rep.say()
    rep.record(kind="env", **_versions())
    rep.say("versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    rep.say()
    for name in args.parts.split(","):
        if est[name] > cfg.budget.left():
            rep.verdict(name, f"part {name} run", None, f"not run: its estimate {est[name]:.0f} s exceeds the "
                        f"{cfg.budget.left():.0f} s left of the budget")
            continue
        try:
            PARTS[name](cfg)
        except Exception as exc:  # report and go on: one call of device time must return every part it can
            import traceback

            rep.say(f"**{name} failed**: {type(exc).__name__}: {exc}")
            rep.say("```\n" + traceback.format_exc()[-2500:] + "\n```")
            rep.verdict(name, f"part {name} ran", False, f"{type(exc).__name__}")
    failed = [n for n, ok in rep.verdicts if ok is False]
    rep.say(f"## Summary: {sum(ok is True for _, ok in rep.verdicts)} pass, {len(failed)} fail, "
            f"{sum(ok is None for _, ok in rep.verdicts)} n/a; {time.perf_counter() - t0:.0f} s")
    for n in failed:
        rep.say(f"- FAIL: {n}")
    print(f"written: {rep.md} and {rep.jsonl}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in REFS:
        print(json.dumps(REFS[sys.argv[1]](json.loads(sys.stdin.read()))))
        sys.exit(0)
    sys.exit(main())
