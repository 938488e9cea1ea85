"""The GPU path's device-agnostic mechanisms, on CPU: NVML matched by UUID, GPU-state probes and flags, the parent never
initialising CUDA, one worker per GPU, CUDA-error retire-and-replace, graph-capture failures, compiled trials that
really compile, and precision held through training and evaluation. Tests that need a GPU skip without one."""
import os
import sys
from pathlib import Path

import pytest
import torch

import fake_nvml
from inproc import cli, one_line_error

from mmbench.suite import TrainSpec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

A, B, C = ("GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000",
           "GPU-cccccccc-0000-0000-0000-000000000000")


@pytest.fixture
def nv(monkeypatch):
    """Three fake GPUs in NVML (PCI) order A, B, C; CUDA_VISIBLE_DEVICES unset."""
    mod = fake_nvml.make([fake_nvml.gpu(A, name="GPU A"), fake_nvml.gpu(B, name="GPU B", cap=(7, 0)),
                          fake_nvml.gpu(C, name="GPU C")])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    return mod


@pytest.fixture
def no_cuda_init(monkeypatch):
    """Any CUDA initialisation in this process fails the test (torch.cuda's lazy init is where every path goes)."""
    def refuse(*a, **k):
        raise AssertionError("the parent process initialised CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "init", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


# --- NVML by UUID --------------------------------------------------------------------------------------------------

def test_visible_gpus_follow_cuda_visible_devices_order(nv, monkeypatch):
    from mmbench.measure.nvml import visible_gpus

    assert [g["visible"] for g in visible_gpus()] == [A, B, C]  # unset: every GPU, pinned by UUID
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{C},GPU-aaaa")  # reordered, one by a UUID prefix
    assert [g["name"] for g in visible_gpus()] == ["GPU C", "GPU A"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # indices in CUDA's default order: NVML cannot say which
    assert [g.get("name") for g in visible_gpus()] == [None, None]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # PCI order is NVML's: now they match
    assert [g["name"] for g in visible_gpus()] == ["GPU C", "GPU A"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,0")  # CUDA stops at the first invalid entry
    assert [g["name"] for g in visible_gpus()] == ["GPU B"]


def test_device_row_matches_by_uuid_and_reports_own_process_memory(nv, monkeypatch):
    from mmbench.measure import nvml

    # The worker sees one GPU as cuda:0; it is the third in NVML's order. torch spells UUIDs without 'GPU-'.
    monkeypatch.setattr(nvml, "torch_uuid", lambda device: nvml.norm_uuid(C[4:]))
    nv.gpus[2]["procs"] = [(os.getpid(), 300), (12345, 5000)]
    nv.gpus[2]["used"] = 6000 * 2**20
    row = nvml.device_row("cuda")
    assert row["gpu_name"] == "GPU C" and row["gpu_uuid"] == C.lower() and row["gpu_driver"] == "570.86.15"
    assert row["nvml_process_mib"] == 300 and row["nvml_used_mib"] == 6000
    assert row["gpu_mem_total_mib"] == pytest.approx(143771)


def test_device_row_without_nvml_leaves_columns_empty(monkeypatch):
    from mmbench.measure import nvml

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.setattr(nvml, "torch_uuid", lambda device: "gpu-aaaa")
    assert nvml.device_row("cuda") == {"gpu_uuid": "gpu-aaaa"}


# --- GPU state -----------------------------------------------------------------------------------------------------

def test_gpu_probe_flags_throttling_and_co_tenants(nv):
    from mmbench.measure.gpu_state import GpuProbe, fold

    g = nv.gpus[0]
    g["procs"] = [(4242, 100)]  # this "worker"
    probe = GpuProbe("cuda", uuid=A, pid=4242)
    assert probe.available
    quiet = probe.stop(probe.start())
    assert quiet["throttled"] is False and quiet["co_tenants"] == 0 and quiet["sm_clock_mhz"] == 1980

    started = probe.start()
    g.update(reasons=0x4 | 0x1, sm=1410, temp=83, procs=[(4242, 100), (999, 2000)])  # power cap, another process
    hot = probe.stop(started)
    assert hot["throttled"] is True and hot["co_tenants"] == 1
    assert (hot["sm_clock_mhz_start"], hot["sm_clock_mhz"], hot["temp_c"]) == (1980, 1410, 83)

    g.update(reasons=0x1, procs=[(4242, 100)])
    started = probe.start()
    g["violation"] = {0: 0, 1: 5_000_000}  # thermal slowdown between the readings, gone by the end
    between = probe.stop(started)
    assert between["throttled"] is True and between["violation_ns"]["thermal"] == 5_000_000

    cols = fold({("latency", 8): [quiet, quiet], ("train_step", 8): [quiet, hot], ("latency", 1): [between]})
    assert cols["latency_throttled_b8"] is False and cols["latency_co_tenants_b8"] == 0
    assert cols["train_step_throttled_b8"] is True and cols["train_step_co_tenants_b8"] == 1
    assert cols["latency_throttled_b1"] is True
    assert cols["throttled"] is True and cols["co_tenants"] == 1
    assert cols["gpu_sm_clock_min_mhz"] == 1410 and cols["gpu_temp_max_c"] == 83
    probe.close()


def test_gpu_probe_unknown_is_none_not_false(monkeypatch):
    from mmbench.measure.gpu_state import GpuProbe, fold

    monkeypatch.setitem(sys.modules, "pynvml", None)
    probe = GpuProbe("cuda", uuid=A)
    ev = probe.stop(probe.start())
    assert not probe.available and ev == {"throttled": None, "co_tenants": None}
    cols = fold({("latency", 1): [ev]})
    assert cols["latency_throttled_b1"] is None and cols["throttled"] is None and cols["co_tenants"] is None


def test_env_records_gpu_state_from_nvml_without_cuda(nv, no_cuda_init, monkeypatch):
    from mmbench.measure.env import environment

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{C},{A}")
    nv.gpus[2].update(persistence=0, app_sm=1755)
    env = environment("cuda")
    assert env["driver"] == "570.86.15" and [g["name"] for g in env["gpus"]] == ["GPU C", "GPU A"]
    first = env["gpus"][0]
    assert first["persistence_mode"] is False and first["app_sm_clock_mhz"] == 1755 and first["capability"] == "9.0"
    assert env["gpu_name"] == "GPU C" and env["cuda_visible_devices"] == f"{C},{A}"
    assert not torch.cuda.is_initialized()


# --- the parent never initialises CUDA -----------------------------------------------------------------------------

HEAD = """\
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 64, n_val: 32, n_test: 32}
train: {epochs: 1, batch_size: 32, seeds: [0]}
"""
PREC_SUITE = "name: prec\n" + HEAD + """\
measure: {device: cuda, latency: null}
sweep: {dims: [4], precision: [fp32, tf32, bf16, fp16]}
methods: [{method: early}]
"""


def test_prepare_on_cuda_checks_precision_through_nvml_not_cuda(nv, no_cuda_init, write_suite, monkeypatch):
    from mmbench.errors import UserError
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{A},{C}")  # both Hopper: every precision is fine
    prepared = prepare(load_suite(write_suite(PREC_SUITE)))
    assert prepared.device == "cuda" and len(prepared.trials) == 4
    assert "nvmlDeviceGetCudaComputeCapability" in nv.calls
    compiled = prepare(load_suite(write_suite(PREC_SUITE.replace("latency: null", "latency: null, compile: true"))))
    assert all(t.measure.compile for t in compiled.trials)  # compile checked in a subprocess with no GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{A},{B}")  # B is a Volta: no TF32, no native bf16
    with pytest.raises(UserError, match=r"sweep\.precision: precision 'bf16' needs an Ampere .*GPU B .*7\.0"):
        prepare(load_suite(write_suite(PREC_SUITE)))
    assert not torch.cuda.is_initialized()


def test_one_worker_per_gpu_and_too_many_workers_is_a_user_error(nv, no_cuda_init, monkeypatch):
    from mmbench.errors import UserError
    from mmbench.execute import ExecutorOptions, InProcess, WorkerPool, make_executor

    pool = make_executor("cuda")
    assert isinstance(pool, WorkerPool) and pool.n == 3 and pool.gpus == [A, B, C]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{C},{A}")
    assert make_executor("cuda", options=ExecutorOptions(workers=1)).gpus == [C, A]
    with pytest.raises(UserError, match="--workers 3: one timing worker per GPU, and 2 GPUs are visible"):
        make_executor("cuda", options=ExecutorOptions(workers=3))
    assert isinstance(make_executor("cpu"), InProcess)
    assert not torch.cuda.is_initialized()


def test_cli_workers_above_gpu_count_is_one_line(nv, no_cuda_init, write_suite, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", A)
    code, out, err = cli(capsys, monkeypatch, "run", write_suite(PREC_SUITE), "--workers", "2", "--out",
                         tmp_path / "out")
    assert code == 2 and one_line_error(err) and "1 GPU is visible" in err
    assert not (tmp_path / "out").exists()


# --- workers: GPU pinning, compile threads, CUDA-error retire ------------------------------------------------------

FAULT_SUITE = "name: gpufaults\n" + HEAD + """\
measure: {device: cpu, threads: 1, latency: null}
sweep: {dims: [4]}
methods: [{method: early}, {method: tests.faulty:Faulty, sweep: {fault: [FAULTS]}}, {method: late}]
"""


def _rows(run_dir):
    return {r["hparams"].get("fault", r["method"]) if isinstance(r["hparams"], dict) else r["method"]: r
            for r in run_dir.rows()}


def test_worker_env_pins_its_gpu_and_one_compile_thread(write_suite, tmp_path):
    from mmbench.execute import WorkerPool
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    prepared = prepare(load_suite(write_suite(FAULT_SUITE.replace("FAULTS", "report_env"))))
    run = run_suite(prepared, tmp_path / "r", executor=WorkerPool(workers=1, gpus=[C]))
    err = next(r for r in run.rows() if "Faulty" in r["method"])["error"]
    assert f"CUDA_VISIBLE_DEVICES={C}" in err and "TORCHINDUCTOR_COMPILE_THREADS=1" in err
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != C  # the parent's own environment is untouched


def test_cuda_error_retires_the_worker_and_the_next_trials_run_fresh(write_suite, tmp_path):
    """tests.faulty's cuda_error is sticky like a real one: a worker kept after it would fail every later Faulty."""
    from mmbench.execute import WorkerPool
    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    prepared = prepare(load_suite(write_suite(FAULT_SUITE.replace("FAULTS", "cuda_error, none"))))
    pool = WorkerPool(workers=1)
    run = run_suite(prepared, tmp_path / "r", executor=pool)
    rows = {(r["label"]): r for r in run.rows()}
    status = {k: r["status"] for k, r in rows.items()}
    bad = next(k for k in status if "cuda_error" in k)
    assert status.pop(bad) == "cuda_error" and set(status.values()) == {"ok"} and len(status) == 3
    assert "device-side assert" in rows[bad]["cuda_error"] and rows[bad]["error"] == rows[bad]["cuda_error"]
    assert pool.spawned == 2  # the first worker, and the one that replaced it


def test_classifier_and_run_trial_never_raises_from_cleanup(monkeypatch):
    from mmbench import trial as T

    assert T.is_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert T.is_cuda_error(torch.AcceleratorError("CUDA error: device-side assert triggered"))
    assert not T.is_cuda_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not T.is_cuda_error(ValueError("shapes do not match"))
    assert T._failure(RuntimeError("CUDA error: misaligned address\nmore"))[0] == "cuda_error"

    def poisoned():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "empty_cache", poisoned)
    monkeypatch.setattr(T, "_measure", lambda trial, data, result: None)  # the trial itself "succeeded"

    class FakeTrial:
        id, task_label, method, label, dims, rank, hparams, device = "x", "t", "m", "m", (4,), None, {}, "cuda"

    result = T.run_trial(FakeTrial(), None)
    assert result.row["status"] == "cuda_error" and "illegal memory access" in result.row["cuda_error"]


# --- CUDA-graph capture decisions (fake capture) -------------------------------------------------------------------

def _graph_fns():
    return {("latency", 8): (lambda: "fwd", None), ("fusion_latency", 8): (lambda: "fus", None)}


def test_capture_graphs_adds_replays_inside_the_precision_context():
    import contextlib

    from mmbench.trial import capture_graphs

    entered = []

    @contextlib.contextmanager
    def ctx():
        entered.append(True)
        yield

    def capture(fn):
        assert entered, "captured outside the eager calls' precision region"
        return lambda: ("replay", fn())

    fns = _graph_fns()
    assert capture_graphs(fns, 8, ctx, capture=capture, healthy=lambda: None) is None
    assert fns["graph_latency", 8][0]() == ("replay", "fwd") and fns["fusion_graph_latency", 8][0]() == ("replay", "fus")


@pytest.mark.parametrize("exc, expect", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB"), "oom: CUDA out of memory"),
    (RuntimeError("CUDA error: operation not permitted when stream is capturing"), "RuntimeError: CUDA error: op"),
])
def test_failed_capture_keeps_eager_and_says_why(exc, expect):
    import contextlib

    from mmbench.trial import capture_graphs

    checked = []

    def capture(fn):
        raise exc

    fns = _graph_fns()
    err = capture_graphs(fns, 8, contextlib.nullcontext, capture=capture, healthy=lambda: checked.append(1))
    assert err.startswith(expect) and checked == [1]
    assert set(fns) == {("latency", 8), ("fusion_latency", 8)}  # eager timings untouched, no graph entries


# --- torch.compile: every compiled trial compiles ------------------------------------------------------------------

COMPILE_SUITE = "name: compiled\n" + HEAD + """\
measure:
  device: cpu
  threads: 1
  compile: true
  accuracy: false
  latency: {batch_sizes: [2], max_time_s: 0.005, min_samples: 2, warmup: 1, min_block_ms: 0.05, rounds: 1,
            train_step: false}
sweep:
  dims: [4, 6]
methods:
  - method: early
  - method: tfn
  - method: lmf
    params: {rank: 2}
"""


def _assert_compiled(rows):
    assert len(rows) == 6
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["compile"] is True and r["compile_graphs"] >= 2 and r["compile_fallback"] is False, r
        assert r["compile_s"] > 0 and r["latency_ms_b2"] > 0


def test_six_compiled_trials_in_one_process_all_compile(write_suite, tmp_path):
    import torch._dynamo

    from mmbench.run import prepare, run_suite
    from mmbench.suite import load_suite

    # A small recompile limit shows the old failure fast: without a clean compiler state per trial, the shared
    # forward's cache would fill after two trials and the rest would run eager.
    # (config.patch, not monkeypatch: pytest's undo deletes a module attribute it did not find in __dict__, and a
    # deleted dynamo config is hidden for every later test in the process)
    from mmbench.trial import recompile_limit_name

    with torch._dynamo.config.patch(**{recompile_limit_name(torch._dynamo.config): 2}):
        prepared = prepare(load_suite(write_suite(COMPILE_SUITE)))
        _assert_compiled(run_suite(prepared, tmp_path / "r").rows())


def test_compiled_trials_through_the_cli_in_a_worker(write_suite, tmp_path):
    import json

    from conftest import run_cli

    res = run_cli("run", str(write_suite(COMPILE_SUITE)), "--workers", "1", "--json", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    _assert_compiled(json.loads(res.stdout)["rows"])


# --- precision everywhere ------------------------------------------------------------------------------------------

def test_bf16_evaluation_runs_under_autocast(monkeypatch):
    import numpy as np

    from mmbench.data.registry import Split
    from mmbench.measure import train as T

    seen = {"train": [], "eval": []}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, xs):
            seen["train" if self.training else "eval"].append(torch.is_autocast_enabled("cpu"))
            return self.lin(xs[0]).float()

    rng = np.random.default_rng(0)
    split = lambda n: Split([rng.standard_normal((n, 4)).astype(np.float32)], rng.integers(0, 2, n))  # noqa: E731
    model, info = T.fit(Net, split(64), split(32), TrainSpec(epochs=2, batch_size=32, lr=1e-2), seed=0,
                        precision="bf16")
    assert seen["train"] and all(seen["train"])
    assert len(seen["eval"]) >= 2 and all(seen["eval"])  # validation each epoch (and the untrained loss)
    seen["eval"].clear()
    T.evaluate_seed(model, info, split(32), 0, "classification", 2, "", "cpu", "bf16")
    assert seen["eval"] == [True]  # test
    seen["eval"].clear()
    T.evaluate_seed(model, info, split(32), 0, "classification", 2, "", "cpu", "fp32")
    assert seen["eval"] == [False]


def test_timed_train_step_backward_outside_autocast_tf32_held(monkeypatch):
    from mmbench.measure import train as T

    states = []

    class Loss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.shape = x.shape
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            states.append(("backward", torch.is_autocast_enabled("cpu"), torch.backends.cuda.matmul.allow_tf32))
            return g * torch.ones(ctx.shape)

    model = torch.nn.Linear(3, 3)
    monkeypatch.setattr(T, "loss_with_aux", lambda m, xs, y, fn, masks: (
        states.append(("forward", torch.is_autocast_enabled("cpu"), None)), Loss.apply(m(xs[0]).float()))[1])
    spec = TrainSpec(optimizer="sgd", lr=0.1)
    step = T.TrainStep(model, spec, None, "bf16", "cpu")
    step(step.optimizer(), [torch.randn(2, 3)], None)
    assert states == [("forward", True, None), ("backward", False, torch.backends.cuda.matmul.allow_tf32)]
    saved = torch.backends.cuda.matmul.allow_tf32
    states.clear()
    step = T.TrainStep(model, spec, None, "tf32", "cuda:0")
    with step.flags():  # the flags are plain globals: settable without a GPU
        step(step.optimizer(), [torch.randn(2, 3)], None)
    assert states[-1] == ("backward", False, True) and torch.backends.cuda.matmul.allow_tf32 == saved


# --- on a GPU ------------------------------------------------------------------------------------------------------

@needs_cuda
def test_l2_flush_buffer_is_allocated_once_per_device():
    from mmbench.measure import latency as L

    f1, f2 = L._l2_flusher("cuda"), L._l2_flusher("cuda:0")
    assert f1.__self__.data_ptr() == f2.__self__.data_ptr() and len(L._FLUSH_BUFFERS) == 1


@needs_cuda
def test_bf16_graph_replay_equals_eager():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.gpu_check import bf16_graph_vs_eager

    assert bf16_graph_vs_eager(32)[2] == 0.0
