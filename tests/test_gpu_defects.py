"""Issue 30's GPU-path defects, each held on CPU with CUDA's pieces faked: a failed capture restores the stream and
retires the worker, one capture stream per process, graphs timed one batch size at a time (an out-of-memory there is
a graph_error), static compiled graphs, either name of dynamo's recompile limit, no CUDA init for cuDNN's version,
co-tenants that are unknown when NVML cannot see this process, the launching thread counted once, MIG UUIDs."""
import contextlib
import os
import sys
import types
import weakref

import pytest
import torch

import fake_nvml

from mmbench import measure
from mmbench import trial as T

A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
MIG = "MIG-dddddddd-0000-0000-0000-000000000000"


@pytest.fixture
def nv(monkeypatch):
    mod = fake_nvml.make([fake_nvml.gpu(A, name="GPU A")])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return mod


# --- defect 1 and 9: a failed capture, and the capture stream ------------------------------------------------------

class _FakeCuda:
    """torch.cuda's stream and graph pieces as cuda_graph uses them. Its graph context behaves as torch's does when
    the body throws: capture_end raises again in __exit__, and the stream it switched to is never switched back."""

    def __init__(self, monkeypatch):
        self.streams = []
        fake = self

        class Stream:
            def __init__(self, *a, name=None):
                self.name = name
                if name is None:
                    fake.streams.append(self)

            def wait_stream(self, other):
                pass

        self.default = Stream(name="default")
        self.current = self.default

        @contextlib.contextmanager
        def stream(s):
            before, fake.current = fake.current, s
            yield
            fake.current = before

        class Graph:
            def __init__(self, g, pool=None, stream=None):
                self.stream = stream

            def __enter__(self):
                fake.current = self.stream or Stream(name="torch's capture stream")

            def __exit__(self, *exc):
                if exc[0] is not None:
                    raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
                fake.current = fake.default

        for name, value in {"Stream": Stream, "stream": stream, "graph": Graph, "synchronize": lambda *a: None,
                            "current_stream": lambda *a: fake.current, "current_device": lambda: 0,
                            "CUDAGraph": lambda: types.SimpleNamespace(replay=lambda: None),
                            "set_stream": lambda s: setattr(fake, "current", s)}.items():
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(sys.modules["mmbench.measure.latency"], "_CAPTURE_STREAMS", {})


def test_failed_capture_restores_the_callers_stream(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    calls = []

    def host_sync():
        calls.append(cuda.current)
        if cuda.current is not cuda.streams[0] or len(calls) > 3:
            raise RuntimeError("a host sync during capture")

    with pytest.raises(RuntimeError, match="capturing"):
        measure.cuda_graph(host_sync)
    assert cuda.current is cuda.default  # later calls queue where they did before, not on the capture stream
    assert len(calls) == 4


def test_every_warm_up_and_capture_of_a_process_shares_one_side_stream(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    seen = []
    for _ in range(3):
        measure.cuda_graph(lambda: seen.append(cuda.current))
    assert len(cuda.streams) == 1 and set(seen) == {cuda.streams[0]}  # one cuBLAS workspace, not one per capture
    assert cuda.current is cuda.default


def test_a_failed_capture_retires_the_worker():
    assert T.retires_worker({"status": "ok", "graph_error": "batch 8: RuntimeError: operation not permitted"})
    assert T.retires_worker({"status": "cuda_error"})
    assert not T.retires_worker({"status": "ok", "graph_error": None})
    assert not T.retires_worker({"status": "error"})


def test_the_worker_exits_after_a_failed_capture(monkeypatch):
    """The worker's own side: after sending a row with a graph_error it takes no other trial."""
    from mmbench import execute

    class Conn:
        def __init__(self, msgs):
            self.msgs, self.sent = list(msgs), []

        def recv(self):
            return self.msgs.pop(0)

        def send(self, m):
            self.sent.append(m)

    monkeypatch.setattr(execute.signal, "signal", lambda *a: None)
    monkeypatch.setattr(execute, "_die_with_parent", lambda: None)
    monkeypatch.setattr(T, "warm_up", lambda: None)
    monkeypatch.setattr("mmbench.interrupt.install", lambda: None)
    monkeypatch.setattr(execute.Trial, "from_dict", staticmethod(lambda d: types.SimpleNamespace(**d)))
    monkeypatch.setattr(execute, "task_key", lambda task: "t")
    failed = {"status": "ok", "graph_error": "batch 8: RuntimeError: operation not permitted when stream is capturing"}
    monkeypatch.setattr(execute, "run_trial", lambda trial, data: T.TrialResult(
        dict(failed) if trial.n == 1 else {"status": "ok"}))
    conn = Conn([{"t": None}, {"task": None, "n": 1}, {"task": None, "n": 2}, None])
    execute._worker_main(conn)
    assert [m for m in conn.sent if m not in (execute.READY, execute.STARTED)] == [(failed, {})]
    assert conn.msgs == [{"task": None, "n": 2}, None]  # the next trial is left for a fresh worker


def test_run_trial_leaves_the_allocator_alone_after_a_failed_capture(monkeypatch):
    """torch ≤ 2.11: empty_cache after a failed capture raises an internal assert, which ended the trial 'error'."""
    def broken():
        raise RuntimeError("INTERNAL ASSERT FAILED at CUDACachingAllocator.cpp: captures_underway.empty()")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    monkeypatch.setattr(T, "_measure", lambda trial, data, result: result.row.update(graph_error="batch 8: x"))

    class FakeTrial:
        id, task_label, method, label, dims, rank, hparams, device = "x", "t", "m", "m", (4,), None, {}, "cuda"

    row = T.run_trial(FakeTrial(), None).row
    assert row["status"] == "ok" and row["graph_error"] == "batch 8: x"


# --- defect 8: graphs timed one batch size at a time ---------------------------------------------------------------

class _Replay:
    live: "weakref.WeakSet" = weakref.WeakSet()

    def __init__(self, fn):
        self.fn = fn
        _Replay.live.add(self)

    def __call__(self):
        return self.fn()


def _graph_setup(monkeypatch, oom_batch=None, breaks_allocator=False):
    monkeypatch.setattr(measure, "cuda_graph", _Replay)
    monkeypatch.setattr(T, "_CAPTURE_FAILURE_BREAKS_ALLOCATOR", breaks_allocator)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    timed = []

    def rounds(fns, trial, lat, host=None):
        b = next(iter(fns))[1]
        timed.append((sorted(k for k, _ in fns), b, len(_Replay.live)))
        if b == oom_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 30 GiB")
        return {k: f"stats {k}" for k in fns}

    monkeypatch.setattr(T, "_rounds", rounds)

    class Bench(T._Bench):
        def __init__(self):
            self.graph_error = None

        @contextlib.contextmanager
        def inference(self):
            yield

    fns = {(m, b): (lambda: None, None) for b in (8, 64, 8192) for m in ("latency", "fusion_latency")}
    lat = types.SimpleNamespace(batch_sizes=[8, 64, 8192])
    return Bench(), fns, lat, timed, emptied


def test_graphs_are_timed_and_freed_one_batch_size_at_a_time(monkeypatch):
    bench, fns, lat, timed, emptied = _graph_setup(monkeypatch, oom_batch=64)
    stats = T._graph_timing(bench, fns, types.SimpleNamespace(device="cuda"), lat)
    pair = ["fusion_graph_latency", "graph_latency"]
    assert [(keys, b) for keys, b, _ in timed] == [(pair, b) for b in (8, 64, 8192)]
    assert all(alive <= 2 for _, _, alive in timed)  # the two graphs of the batch timed, none of another batch's
    assert set(stats) == {(m, b) for b in (8, 8192) for m in ("graph_latency", "fusion_graph_latency")}
    assert bench.graph_error.startswith("batch 64: oom: CUDA out of memory")  # a graph_error, not a failed row
    assert len(emptied) == 3
    assert set(fns) == {(m, b) for b in (8, 64, 8192) for m in ("latency", "fusion_latency")}  # eager untouched


def test_after_a_failed_capture_old_torch_tries_no_other_capture(monkeypatch):
    bench, fns, lat, timed, emptied = _graph_setup(monkeypatch, breaks_allocator=True)

    def failing(fn):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(measure, "cuda_graph", failing)
    monkeypatch.setattr(T, "_cuda_healthy", lambda: None)
    monkeypatch.setattr(T.capture_graphs, "__defaults__", (None, lambda: None))
    assert T._graph_timing(bench, fns, types.SimpleNamespace(device="cuda"), lat) == {}
    assert bench.graph_error.startswith("batch 8: RuntimeError") and timed == [] and emptied == []


# --- defects 6, 7, 11: compile, recompile limit, the launching thread ----------------------------------------------

def test_compiled_trials_compile_static_graphs(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: seen.append(kw) or module)
    T.Compiled(True)(torch.nn.Linear(2, 2))
    assert seen == [{"dynamic": False}]


def test_recompile_limit_under_either_name():
    assert T.recompile_limit_name(types.SimpleNamespace(recompile_limit=8, cache_size_limit=8)) == "recompile_limit"
    assert T.recompile_limit_name(types.SimpleNamespace(cache_size_limit=8)) == "cache_size_limit"  # torch < 2.7
    import torch._dynamo

    with T.compile_scope(True):  # this torch's name, raised to at least 64
        assert getattr(torch._dynamo.config, T.recompile_limit_name(torch._dynamo.config)) >= 64


@pytest.mark.parametrize("device, threads", [("cuda", 1), ("cpu", None)])
def test_cuda_timing_counts_the_one_launching_thread(monkeypatch, device, threads):
    seen = {}
    monkeypatch.setattr(measure, "latency_rounds", lambda fns, **kw: seen.update(kw) or {})
    monkeypatch.setattr(T.gpu_state, "GpuProbe", lambda device: types.SimpleNamespace(close=lambda: None))
    lat = types.SimpleNamespace(warmup_s=None, rounds=1, warmup=1, min_samples=1, max_samples=1, min_time_s=0,
                                max_time_s=0, target_rel_ci=0.1, min_block_ms=0, flush_l2=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        T._rounds({}, types.SimpleNamespace(device=device), lat)
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == (threads or 2)


# --- defect 5: cuDNN's version without CUDA ------------------------------------------------------------------------

def test_env_reads_cudnn_version_without_initialising_cuda(nv, monkeypatch):
    from mmbench.measure import env

    def refuse(*a, **k):
        raise AssertionError("the parent process initialised CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # what torch.backends.cudnn.version() does on a CUDA build the first time: check every device's capability
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: (torch.cuda.get_device_capability(0), 91002)[1])
    monkeypatch.setattr(torch._C, "_cudnn", types.SimpleNamespace(getVersionInt=lambda: 91002), raising=False)
    assert env._gpu("cuda")["cudnn"] == 91002
    monkeypatch.delattr(torch._C, "_cudnn")
    assert env._gpu("cuda")["cudnn"] is None  # a build without cuDNN


# --- defect 10: co-tenants when NVML lists other PIDs, or none -----------------------------------------------------

@pytest.mark.parametrize("procs, expect", [
    ([(4242, 100)], 0),                          # NVML lists this process: nobody else
    ([(4242, 100), (99, 50)], 1),
    ([(1001, 100)], 0),                          # a container: NVML lists host PIDs; the one listed is this process
    ([(1001, 100), (1002, 50)], 1),
    ([], None),                                  # NVML cannot see this namespace's processes: unknown, not 0
])
def test_co_tenants_where_nvml_lists_host_pids(nv, procs, expect):
    from mmbench.measure.gpu_state import GpuProbe

    nv.gpus[0]["procs"] = procs
    probe = GpuProbe("cuda", uuid=A, pid=4242)
    assert probe.stop(probe.start())["co_tenants"] == expect
    probe.close()


# --- defect 12: MIG ------------------------------------------------------------------------------------------------

def test_mig_instance_found_by_torchs_bare_uuid(nv, monkeypatch):
    from mmbench.measure import nvml
    from mmbench.measure.gpu_state import GpuProbe

    nv.gpus[0]["migs"] = [fake_nvml.gpu(MIG, name="NVIDIA H100 MIG 1g.10gb", total_mib=9984,
                                        procs=[(os.getpid(), 200)])]
    bare = MIG[4:]  # torch spells a MIG instance's UUID without a prefix, as it does a GPU's
    monkeypatch.setattr(nvml, "torch_uuid", lambda device: nvml.norm_uuid(bare))
    row = nvml.device_row("cuda")
    assert row["gpu_name"] == "NVIDIA H100 MIG 1g.10gb" and row["gpu_uuid"] == MIG.lower()
    assert row["nvml_process_mib"] == 200
    assert GpuProbe("cuda", uuid=nvml.norm_uuid(bare)).available
    # bindings without lookup by UUID: found by walking every GPU's MIG instances
    monkeypatch.setattr(nv, "nvmlDeviceGetHandleByUUID", lambda u: (_ for _ in ()).throw(fake_nvml.NVMLError()))
    assert nvml.handle_by_uuid(nv, bare)["name"] == "NVIDIA H100 MIG 1g.10gb"
