"""Instructions per call, counted under valgrind's callgrind: a cost that does not move with the host's speed.

Wall time on a shared VM wanders with the host (a co-tenant, a vCPU that switches speed); the number of instructions
a call executes does not: on this project's 2-core VMs the same trial counted in separate processes gives the same
count to the instruction, loaded or quiet (benchmarks/instr_floors.py). So the nightly gate judges these counts, and wall time stays
the evidence a person reads.

How a run counts (``count_trials``, called by run.run_suite before any timing): ONE valgrind process for the run,
``valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no python -m mmbench.measure.instructions JOB``.
Instrumentation starts only once torch is imported and the first model is built (importing torch instrumented costs
~50 s; uninstrumented ~10 s), and collection is switched on around the counted loops only, by valgrind's client
requests issued from Python (``_Requests``: the few machine instructions valgrind.h's macros expand to, placed in an
executable page; natively they do nothing). For each trial, batch size and timed function (the fusion layer's
forward, the whole model's forward, the training step: trial._Bench's, so exactly what is timed):
warm-up calls, then BLOCKS blocks of CALLS calls, each with collection on and a dump, then CALLS calls of an empty
function through the same loop and a dump; per call = the median over blocks of (block − empty) / CALLS. One thread, the CPU capability pinned (ATEN_CPU_CAPABILITY;
valgrind does not emulate AVX-512 in any case), MKL and oneDNN pinned to AVX2 code paths, Python's hash seed fixed.

Columns (vocabulary: the INSTRUCTIONS kind): ``instr_fusion_b{B}``, ``instr_b{B}``, ``instr_train_step_b{B}``;
beside them ``instr_env`` (the fingerprint of what decides the code path: see ``fingerprint``), ``instr_capability``,
``instr_calls``, and ``instr_note`` where a trial that asked was not counted (no valgrind, CUDA, compiled, a
failure): its columns are then empty, never 0.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import mmap
import os
import pickle
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.measure import heap

CALLS = 10          # counted calls per block
BLOCKS = 3          # blocks per function: the figure is their median (a block's count varies ~0.1-0.3% with the
                    # state of the C library's heap, within a process and between processes)
WARMUP = 3          # calls before counting: lazy initialisation, the allocator's first blocks

# Per trial the pass should need far less (a nightly trial: ~5-15 s); a hung valgrind still ends.
START_S, PER_TRIAL_S = 300, 240
INSTALL = "install valgrind (Debian/Ubuntu: apt-get install valgrind)"


def unavailable() -> str | None:
    """Why instruction counts cannot be taken on this machine (one line, with how to get them), or None."""
    if not sys.platform.startswith("linux"):
        return f"instruction counts need valgrind on Linux; this is {platform.system()}"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"instruction counts are implemented for x86-64 (valgrind client requests); this is {platform.machine()}"
    if shutil.which("valgrind") is None:
        return f"valgrind is not installed: {INSTALL}"
    return None


def pinned_capability() -> str:
    """The ATen CPU capability counts are taken at: AVX2 where the CPU has it (valgrind hides AVX-512 anyway, and a
    runner with AVX-512 and one without then count the same kernels), else the portable default."""
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        pass
    return "avx2" if re.search(r"^flags\s*:.*\bavx2\b", flags, re.M) else "default"


def _cpu_vendor() -> str | None:
    try:
        m = re.search(r"^vendor_id\s*:\s*(\S+)", Path("/proc/cpuinfo").read_text(errors="replace"), re.M)
        return m.group(1) if m else None
    except OSError:
        return None


def _valgrind_version() -> str | None:
    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """What decides which instructions a call executes: the code (torch, Python to the patch version, the C library:
    glibc drift changes counts), the pinned capability, valgrind, and the CPU vendor (MKL and oneDNN dispatch on it;
    pinned to AVX2 paths, but an Intel and an AMD runner were not measured side by side, so a vendor change starts a
    new count history). Not the CPU model: hosted runners rotate models within a vendor, and that must not restart
    the gate's history."""
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(), "libc": "-".join(platform.libc_ver()),
            "machine": platform.machine(), "cpu_vendor": _cpu_vendor(), "capability": pinned_capability(),
            "valgrind": _valgrind_version(), "calls": CALLS, "blocks": BLOCKS}


def fingerprint(env: dict[str, Any]) -> str:
    keys = ("torch", "python", "libc", "machine", "cpu_vendor", "capability", "valgrind")
    return hashlib.sha256(json.dumps({k: env.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:12]


def wanted(trial) -> bool:
    return bool(getattr(trial.measure, "instructions", False))


def skip_reason(trial) -> str | None:
    """Why a trial that asks for counts is not counted (its columns stay empty), or None."""
    if not trial.device.startswith("cpu"):
        return "instruction counts are a CPU measure: not taken for a CUDA trial"
    if trial.measure.compile:
        return "compiled trials are not counted (inductor's generated code would be compiled under valgrind)"
    if getattr(trial, "tune", None) is not None:
        return "tuned trials are not counted (the configuration is chosen inside the trial, after the valgrind pass)"
    return None


@dataclass
class Counts:
    """What a pass gives the run: per trial id its columns (or its note), the counts' environment, and the pass's
    own cost."""
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    note: str | None = None      # why nothing was counted (the whole pass), said once

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "raw": self.raw, "env": self.env, "seconds": self.seconds,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Counts":
        return cls(d.get("columns", {}), d.get("raw", {}), d.get("env", {}), d.get("seconds"), d.get("note"))


def count_trials(trials, tasks: dict, workdir: Path, on_line=None, cache_sim: bool = False) -> Counts:
    """Count every trial that asks for it, in one valgrind process. Never raises for a failure of the pass: the
    trials' columns are then empty with the reason in ``instr_note`` (a run still measures everything else).
    ``tasks``: task key → TaskData. ``on_line``: called with each progress line of the pass. ``cache_sim``: also
    simulate the caches and put a cycle estimate per call in the raw samples (``{column}_cycles``; benchmarks only:
    it doubles the pass's cost)."""
    from mmbench.plan import task_key

    asked = [t for t in trials if wanted(t)]
    out = Counts()
    if not asked:
        return out
    todo = []
    for t in asked:
        why = skip_reason(t)
        if why:
            out.columns[t.id] = {"instr_note": why}
        else:
            todo.append(t)
    if not todo:
        return out
    why = unavailable()
    if why:
        out.note = why
        out.columns.update({t.id: {"instr_note": why} for t in todo})
        return out
    out.env = environment()
    fp = fingerprint(out.env)
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("cg.out*"):
        old.unlink()
    job = workdir / "job.pkl"
    needed = {task_key(t.task) for t in todo}
    with open(job, "wb") as f:
        pickle.dump({"trials": [t.to_dict() for t in todo], "tasks": {k: v for k, v in tasks.items() if k in needed},
                     "calls": CALLS, "blocks": BLOCKS, "warmup": WARMUP}, f)
    t0 = time.perf_counter()
    failed = _run_valgrind(job, workdir, START_S + PER_TRIAL_S * len(todo), on_line, cache_sim)
    out.seconds = time.perf_counter() - t0
    dumps = parse_dumps(workdir)
    for t in todo:
        cols, raw = _columns(t, dumps, CALLS, BLOCKS)
        if cols:
            out.columns[t.id] = {**cols, "instr_env": fp, "instr_capability": out.env["capability"],
                                 "instr_calls": CALLS}
            out.raw[t.id] = raw
        else:
            out.columns[t.id] = {"instr_note": _trial_failure(workdir, t.id) or failed or "not counted"}
    if failed and not out.raw:
        out.note = failed
    return out


def _run_valgrind(job: Path, workdir: Path, timeout: float, on_line, cache_sim: bool = False) -> str | None:
    """Run the pass; None when it exited cleanly, else why not (one line)."""
    cap = pinned_capability()
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0", **heap.COUNT_ENV, "MKL_CBWR": "AVX2" if cap == "avx2" else "COMPATIBLE",
           "ONEDNN_MAX_CPU_ISA": "AVX2" if cap == "avx2" else "DEFAULT",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH")]))}
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
           f"--callgrind-out-file={workdir / 'cg.out'}", "--dump-instr=no", "--dump-line=no",
           *(["--cache-sim=yes"] if cache_sim else []),
           f"--log-file={workdir / 'valgrind.log'}", sys.executable, "-m", "mmbench.measure.instructions", str(job)]
    log = workdir / "pass.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            with open(log, "a") as f:
                f.write(line)
            if on_line:
                on_line(line.rstrip())
            if time.monotonic() > deadline:
                break
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return f"the valgrind pass ran past its {timeout:.0f} s limit and was ended"
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): no stray valgrind left behind
            proc.kill()
            proc.wait()
    if rc != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        return f"the valgrind pass failed (exit {rc}): {tail[0][:200] if tail else 'no output'} (see {log})"
    return None


def _trial_failure(workdir: Path, tid: str) -> str | None:
    log = workdir / "pass.log"
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(f"failed {tid}: "):
            return "not counted: " + line.split(": ", 1)[1]
    return None


# --- the callgrind output ----------------------------------------------------------------------------------------
_DESC = re.compile(r"^desc: Trigger: Client Request: (.*)$", re.M)
_EVENTS = re.compile(r"^events: (.*)$", re.M)
_TOTALS = re.compile(r"^(?:summary|totals): (.*)$", re.M)


def parse_dump(text: str) -> tuple[str, dict[str, int]] | None:
    """(label, {event: count}) of one callgrind dump triggered by a labelled client request; None for any other
    (the dump at program exit)."""
    label, events, totals = _DESC.search(text), _EVENTS.search(text), _TOTALS.search(text)
    if not (label and events and totals):
        return None
    names, values = events.group(1).split(), totals.group(1).split()
    return label.group(1).strip(), {n: int(v) for n, v in zip(names, values)}


def parse_dumps(workdir: Path) -> dict[str, dict[str, int]]:
    out = {}
    for p in workdir.glob("cg.out.*"):
        hit = parse_dump(p.read_text(errors="replace"))
        if hit:
            out[hit[0]] = hit[1]
    return out


def cycles(ev: dict[str, int]) -> int:
    """Callgrind's cycle estimate (KCachegrind's): instructions + 10 × L1 misses + 100 × last-level misses. It sees a
    change that adds memory traffic without instructions, which the count alone cannot."""
    l1 = ev.get("I1mr", 0) + ev.get("D1mr", 0) + ev.get("D1mw", 0)
    ll = ev.get("ILmr", 0) + ev.get("DLmr", 0) + ev.get("DLmw", 0)
    return ev["Ir"] + 10 * l1 + 100 * ll


def label(tid: str, name: str, b: int, what: str) -> str:
    return f"{tid} {name} {b} {what}"


# The timed functions' names (trial._Bench) and the column each count goes to (vocabulary's INSTRUCTIONS terms).
COLUMN = {"fusion_latency": "instr_fusion_b{b}", "latency": "instr_b{b}", "train_step": "instr_train_step_b{b}"}


def _columns(trial, dumps: dict[str, dict[str, int]], calls: int, blocks: int = 1
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    import statistics

    cols, raw = {}, {}
    for b in trial.measure.latency.batch_sizes:
        for name, pattern in COLUMN.items():
            fns = [dumps.get(label(trial.id, name, b, f"fn{k}")) for k in range(blocks)]
            empty = dumps.get(label(trial.id, name, b, "empty"))
            if empty is None or any(f is None or f["Ir"] <= empty["Ir"] for f in fns):
                continue  # not counted (or not a count of the calls): left empty
            col = pattern.format(b=b)
            cols[col] = round(statistics.median((f["Ir"] - empty["Ir"]) / calls for f in fns), 1)
            # each block's total, the empty loop's and the calls: the figure can be derived again
            raw[col] = [*(f["Ir"] for f in fns), empty["Ir"], calls]
            if "D1mr" in empty:
                raw[f"{col}_cycles"] = round(statistics.median((cycles(f) - cycles(empty)) / calls for f in fns), 1)
    return cols, raw


# --- the counting process (runs under valgrind) --------------------------------------------------------------------
class _Requests:
    """valgrind's client requests from Python: valgrind.h's amd64 sequence (four rotations of rdi by 3, 13, 61 and 51
    bits, a no-op, then xchg rbx,rbx; the argument block's address in rax, the result in rdx) placed in an executable
    page and called through ctypes. Natively the sequence does nothing and returns 0."""
    _CODE = bytes.fromhex("53" "4889f8" "31d2" "48c1c703" "48c1c70d" "48c1c73d" "48c1c733" "4887db" "4889d0" "5b"
                          "c3")
    _BASE = (ord("C") << 24) | (ord("T") << 16)   # VG_USERREQ_TOOL_BASE('C', 'T'): callgrind's requests
    RUNNING_ON_VALGRIND, DUMP_AT, TOGGLE, START = 0x1001, _BASE + 3, _BASE + 2, _BASE + 4

    def __init__(self):
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(self._CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._fn = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong))(addr)

    def _req(self, code: int, arg: int = 0) -> int:
        return self._fn((ctypes.c_ulong * 6)(code, arg, 0, 0, 0, 0))

    def running(self) -> bool:
        return self._req(self.RUNNING_ON_VALGRIND) > 0

    def start_instrumentation(self) -> None:
        self._req(self.START)

    def toggle(self) -> None:
        self._req(self.TOGGLE)

    def dump(self, text: str) -> None:
        s = ctypes.c_char_p(text.encode())
        self._req(self.DUMP_AT, ctypes.cast(s, ctypes.c_void_p).value)


def _loop(fn, n: int) -> None:  # the one loop both the function and the empty call run through
    for _ in range(n):
        fn()


def _empty() -> None:
    return None


def count_one(cg: _Requests, fn, context, calls: int, warmup: int, tag: str, blocks: int = 1) -> None:
    """Warm-up, then blocks of the function's calls and one of empty calls, each between a collection toggle and a
    labelled dump (a dump zeroes the counters). The collector is off, as in the timed region."""
    with context() if context else _null():
        _loop(fn, warmup)
        gc.collect()
        gc.disable()
        try:
            for k in range(blocks):
                cg.toggle()
                _loop(fn, calls)
                cg.toggle()
                cg.dump(f"{tag} fn{k}")
            cg.toggle()
            _loop(_empty, calls)
            cg.toggle()
            cg.dump(f"{tag} empty")
        finally:
            gc.enable()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _child(job_path: str) -> int:
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    import torch

    from mmbench.model import build
    from mmbench.plan import Trial, task_key
    from mmbench.trial import _Bench

    torch.set_num_threads(1)
    cg = _Requests()
    if not cg.running():
        print("error: not running under valgrind", flush=True)
        return 3
    print(f"capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    started = False
    for d in job["trials"]:
        trial = Trial.from_dict(d)
        data = job["tasks"][task_key(trial.task)]
        try:
            torch.manual_seed(0)  # the model trial.py builds: same seed, same weights
            model = build(trial.method, trial.hparams, data.input_dims, trial.dims, data.num_classes,
                          trial.model.encoder_hidden).eval()
            bench = _Bench(trial, data, model)
            opt = bench.step.optimizer() if bench.step is not None else None
            for b in trial.measure.latency.batch_sizes:
                fns = bench.build(b, opt)
                if not started:  # instrument from here on: the imports and the first build ran at native speed
                    cg.start_instrumentation()
                    started = True
                for (name, bb), (fn, ctx) in fns.items():
                    if name in COLUMN:
                        count_one(cg, fn, ctx, job["calls"], job["warmup"], f"{trial.id} {name} {bb}", job["blocks"])
            print(f"counted {trial.id}", flush=True)  # no timings printed: the heap a count sees is the same
        except Exception as exc:  # one trial's failure is its note; the others are still counted
            print(f"failed {trial.id}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
