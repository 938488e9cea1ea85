"""The run's policy, in the library: where trials run (make_executor, from the suite's execution block and the
command line's overrides), the device resolved once (prepare), where the run goes (check_destination)."""
import pytest

from mmbench.errors import UserError
from mmbench.execute import ExecutorOptions, InProcess, WorkerPool, make_executor
from mmbench.suite import ExecutionSpec
from tests.conftest import TINY_SUITE
from tests.inproc import cli, one_line_error


def _local(execution=None, **options):
    ex = make_executor("cpu", ExecutionSpec(**(execution or {})), ExecutorOptions(**options))
    return ("inprocess", None, None) if isinstance(ex, InProcess) else ("pool", ex.n, ex.timeout)


@pytest.mark.parametrize("execution, options, expected", [
    ({}, {}, ("inprocess", None, None)),                              # CPU: in this process
    ({"workers": 2}, {}, ("pool", 2, None)),                          # the suite's workers
    ({"workers": 2}, {"workers": 0}, ("inprocess", None, None)),      # the command line wins
    ({}, {"isolate": True}, ("pool", 1, None)),                       # --isolate: at least one worker
    ({"workers": 3}, {"isolate": True}, ("pool", 3, None)),           # ... or the suite's, when it asks for more
    ({"workers": 3}, {"isolate": True, "workers": 2}, ("pool", 2, None)),
    ({"trial_timeout": 5.0}, {}, ("pool", 1, 5.0)),                   # a timeout needs a worker
    ({"trial_timeout": 5.0}, {"trial_timeout": 2.0}, ("pool", 1, 2.0)),
    ({"workers": 0}, {"trial_timeout": 2.0}, ("pool", 1, 2.0)),
])
def test_local_executor_from_suite_and_overrides(execution, options, expected):
    assert _local(execution, **options) == expected


def test_cuda_defaults_to_one_pinned_worker_per_gpu_and_the_suite_can_say_otherwise():
    pool = make_executor("cuda", gpus=["GPU-a", "GPU-b"])
    assert isinstance(pool, WorkerPool) and pool.n == 2 and pool.gpus == ["GPU-a", "GPU-b"]
    assert isinstance(make_executor("cuda", ExecutionSpec(workers=0), gpus=["GPU-a"]), InProcess)
    assert make_executor("cuda", ExecutionSpec(workers=0, trial_timeout=1.0), gpus=["GPU-a"]).n == 1


@pytest.mark.parametrize("execution, options, message", [
    ({}, {"executor": "ray", "workers": 2}, "--workers and --isolate are for the local executor"),
    ({"executor": "ray"}, {"isolate": True}, "--workers and --isolate are for the local executor"),
    ({}, {"address": "auto"}, r"--address needs --executor ray \(or execution: \{executor: ray\} in the suite\)"),
    ({"executor": "ray"}, {"executor": "local", "address": "auto"}, "--address needs --executor ray"),
])
def test_contradicting_options_are_user_errors(execution, options, message):
    with pytest.raises(UserError, match=message):
        make_executor("cpu", ExecutionSpec(**execution), ExecutorOptions(**options))


def test_ray_takes_the_suite_block_and_the_command_line_address(monkeypatch):
    from mmbench.ray_executor import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    execution = ExecutionSpec(executor="ray", address="head:6379", timing_slots=2, retries=1, trial_timeout=9.0)
    ex = make_executor("cpu", execution)  # constructing connects to nothing (start does)
    assert isinstance(ex, RayExecutor) and ex.address == "head:6379" and ex.timeout == 9.0
    assert ex.timing_slots == 2 and ex.retries == 1
    assert make_executor("cpu", execution, ExecutorOptions(address="other:1")).address == "other:1"


class _Recording:
    def __init__(self):
        self.calls = []

    def start(self):
        self.calls.append("start")

    def close(self):
        self.calls.append("close")


def test_prepare_resolves_the_device_and_starts_the_executor_it_asks_for(write_suite, monkeypatch):
    from mmbench import run
    from mmbench.suite import load_suite

    made = []

    def fake(device, execution, options):
        made.append((device, options))
        return _Recording()

    monkeypatch.setattr(run, "make_executor", fake)
    prepared = run.prepare(load_suite(write_suite(TINY_SUITE)), executor=ExecutorOptions(workers=2))
    assert prepared.device == "cpu" and made == [("cpu", ExecutorOptions(workers=2))]
    assert prepared.executor.calls == ["start"]
    assert run.prepare(load_suite(write_suite(TINY_SUITE))).executor is None  # validate: nothing started


def test_a_failing_prepare_closes_its_executor(write_suite, monkeypatch):
    from mmbench import run
    from mmbench.suite import load_suite

    ex = _Recording()
    monkeypatch.setattr(run, "make_executor", lambda *a: ex)
    bad = write_suite(TINY_SUITE.replace("dataset: synthetic", "dataset: no_such_dataset"))
    with pytest.raises(UserError, match="no_such_dataset"):
        run.prepare(load_suite(bad), executor=ExecutorOptions())
    assert ex.calls == ["start", "close"]


def test_a_bad_device_fails_before_any_executor_is_made(write_suite, monkeypatch):
    import torch

    from mmbench import run
    from mmbench.suite import load_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run, "make_executor", lambda *a: pytest.fail("an executor for a run that cannot start"))
    with pytest.raises(UserError, match=r"measure\.device: device 'cuda' requested but CUDA is not available"):
        run.prepare(load_suite(write_suite(TINY_SUITE)), "cuda", executor=ExecutorOptions(isolate=True))


def test_contradicting_options_are_refused_before_the_device_is_checked(write_suite, monkeypatch):
    import torch

    from mmbench import run
    from mmbench.suite import load_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--workers and --isolate are for the local executor"):
        run.prepare(load_suite(write_suite(TINY_SUITE)), "cuda", executor=ExecutorOptions(executor="ray", workers=1))


def test_contention_note_only_for_several_cpu_workers_that_time(write_suite):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    p = prepare(load_suite(write_suite(TINY_SUITE)))
    assert p.contention_note is None  # in this process
    p.executor = WorkerPool(2)  # not started: only its shape matters
    assert p.contention_note == ("2 workers time their trials at the same time: latencies contend for the "
                                 "machine's cores")
    p.executor = WorkerPool(1)
    assert p.contention_note is None
    p.executor = WorkerPool(2, gpus=["GPU-a", "GPU-b"])  # one GPU each: nothing shared
    assert p.contention_note is None
    timed = "  latency: {batch_sizes: [1, 8], max_time_s: 0.01, min_samples: 3, warmup: 1, min_block_ms: 0.1}\n"
    assert timed in TINY_SUITE
    untimed = prepare(load_suite(write_suite(TINY_SUITE.replace(timed, "  latency: null\n"), "untimed.yaml")))
    untimed.executor = WorkerPool(2)
    assert untimed.contention_note is None


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray", "--workers", "2"], "--workers and --isolate are for the local executor"),
    (["--address", "auto"], "--address needs --executor ray"),
])
def test_cli_conflicts_are_one_line_exit_2_and_nothing_written(args, message, write_suite, capsys, monkeypatch,
                                                               tmp_path):
    code, out, err = cli(capsys, monkeypatch, "run", write_suite(TINY_SUITE), "--out", tmp_path / "out", *args)
    assert code == 2 and one_line_error(err) and message in err, err
    assert not (tmp_path / "out" / "tiny").exists()


def test_destination_of_a_new_and_a_resumed_run(write_suite, tmp_path):
    from mmbench.run import check_destination, prepare, run_suite
    from mmbench.suite import load_suite

    suite = load_suite(write_suite(TINY_SUITE.replace("rank: [1, 2]", "rank: [1]").replace("[4, [4, 4, 6]]", "[4]")))
    out, db = check_destination(suite, tmp_path / "res")
    assert (out, db) == (tmp_path / "res", tmp_path / "res" / "history.sqlite")
    assert check_destination(suite, tmp_path / "res", tmp_path / "h.sqlite")[1] == tmp_path / "h.sqlite"
    run = run_suite(prepare(suite), out, db=db)
    # resuming: back into the run's own results folder (its history database), whatever --out says
    home = out.resolve()
    assert check_destination(suite, tmp_path / "elsewhere", resume=run.path) == (home, home / "history.sqlite")
    with pytest.raises(UserError, match="cannot resume: this run was started without --quick"):
        check_destination(suite, out, resume=run.path, quick=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError):
        check_destination(suite, tmp_path / "file")
