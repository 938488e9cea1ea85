"""The Ray executor on a real (local) Ray cluster: two fake nodes of 2 CPUs each, one with two GPU counters labelled
H100, one with one labelled A100, started once for this file (Ray takes ~15 s and ~700 MB to start). Without ray installed the cluster
tests skip; the error paths that need no cluster still run."""
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import _thread
from pathlib import Path

import pytest

from conftest import ROOT
from inproc import cli, one_line_error

try:
    import ray
except ImportError:  # the extra is not installed: the cluster tests skip
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'mmbench[ray]')")
MiB = 2**20

BASE = """\
name: NAME
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 300, n_val: 100, n_test: 100, noise: 0.3}
train: {epochs: 2, batch_size: 32, seeds: [0, 1]}
measure: {device: cpu, threads: 1, latency: null}
sweep:
  dims: [4, 6, 8]
methods:
  - method: early
  - method: tfn
  - method: lmf
    params: {rank: 2}
"""
TIMED = "latency: {batch_sizes: [4], max_time_s: 0.05, min_samples: 3, warmup: 1, min_block_ms: 0.1}"


@pytest.fixture(scope="module")
def cluster():
    if ray is None:
        pytest.skip("ray is not installed")
    from ray.cluster_utils import Cluster

    from mmbench.ray_executor import JOB_ENV

    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, num_gpus=2, resources={"accelerator_type:H100": 2}, object_store_memory=100 * MiB))
    c.add_node(num_cpus=2, num_gpus=1, resources={"accelerator_type:A100": 1}, object_store_memory=100 * MiB)
    ray.init(address=c.address, runtime_env={"env_vars": JOB_ENV}, log_to_driver=False)
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _prepared(text: str, write_suite, name="suite.yaml"):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    return prepare(load_suite(write_suite(text, name)))


def _scores(rows):
    return {r["trial_id"]: (r["status"], r.get("params"), r.get("flops"), r.get("acc_mean"), r.get("acc_std"))
            for r in rows}


@needs_ray
def test_ray_rows_equal_in_process_rows_and_say_where_they_ran(cluster, write_suite, tmp_path):
    from mmbench.history import row_fingerprint
    from mmbench.ray_executor import RayExecutor
    from mmbench.run import run_suite

    _, nodes = cluster
    prepared = _prepared(BASE.replace("NAME", "same").replace("[4, 6, 8]", "[4]"), write_suite)
    local = run_suite(prepared, tmp_path / "local")
    remote = run_suite(prepared, tmp_path / "ray", executor=RayExecutor())
    a, b = local.rows(), remote.rows()
    assert len(a) == len(b) == 3 and all(r["status"] == "ok" for r in b), [r["error"] for r in b]
    assert _scores(a) == _scores(b)  # CPU, same seeds and threads: where a trial ran changes nothing it measured
    env = remote.read_json("env.json")
    for r in b:
        assert r["node_id"] in nodes and r["node_id"] in env["nodes"] and r["hostname"]
        assert r["cuda_visible_devices"] == ""  # a CPU trial on a GPU node sees no GPU
        assert r["started_at"] <= r["finished_at"]
    # Same machine, same threads: a Ray row's environment fingerprint is the local row's.
    local_env = local.read_json("env.json")
    assert {r["env_fingerprint"] for r in b} == {row_fingerprint(local_env, r) for r in a}
    csv_ids = [x.split(",", 1)[0] for x in (remote.path / "results.csv").read_text().splitlines()[1:]]
    assert csv_ids == [t.id for t in prepared.trials]  # the table in plan order, as a local run writes it
    assert (remote.path / "report.html").exists()


@needs_ray
def test_faults_become_statuses_and_the_rest_is_measured(cluster, write_suite, tmp_path, capsys, monkeypatch):
    c, _ = cluster
    faults = ["raise", "nan", "segfault", "hang", "oom"]
    text = f"""\
name: rayfaults
task:
  dataset: synthetic
  params: {{interaction: redundancy, modalities: 2, dim: 4, n_train: 120, n_val: 60, n_test: 60}}
train: {{epochs: 1, batch_size: 64, seeds: [0]}}
measure: {{device: cpu, threads: 1, {TIMED}}}
sweep: {{dims: [4]}}
methods:
  - method: early
  - method: tests.faulty:Faulty
    sweep: {{fault: [{", ".join(faults)}]}}
  - method: late
execution: {{executor: ray, trial_timeout: 6}}
"""
    code, out, err = cli(capsys, monkeypatch, "run", write_suite(text), "--out", tmp_path, "--json", "--address",
                         c.address)
    assert code == 0, err
    # The last line: this test process's own Ray session (the fixture's) may print a worker's death at any time.
    doc = json.loads(out.strip().splitlines()[-1])
    rows = {r["hparams"].get("fault", r["method"]): r for r in doc["rows"]}
    assert {f: rows[f]["status"] for f in faults} == {"raise": "error", "nan": "nan", "segfault": "crashed",
                                                      "hang": "timeout", "oom": "oom"}, \
        {f: rows[f]["error"] for f in faults}
    assert "injected failure" in rows["raise"]["error"] and "6 s" in rows["hang"]["error"]
    for healthy in ("early", "late"):
        r = rows[healthy]
        assert r["status"] == "ok", r["error"]
        assert r["params"] > 0 and 0 <= r["acc_mean"] <= 1 and r["latency_ms_b4"] > 0
    assert doc["state"] == "complete" and (Path(doc["run_dir"]) / "report.html").exists()


def test_ray_failures_map_to_the_statuses_users_know():
    if ray is None:
        pytest.skip("ray is not installed")
    import ray.exceptions as rx

    from mmbench.ray_executor import ray_failure

    assert ray_failure(rx.OutOfMemoryError("Task was killed due to the node running low on memory."))[0] == "oom"
    assert ray_failure(rx.WorkerCrashedError())[0] == "crashed"
    assert ray_failure(rx.RayTaskError("f", "tb", MemoryError("no room")))[0] == "oom"
    status, error = ray_failure(rx.RayTaskError("f", "tb", ImportError("no module named x")))
    assert status == "error" and "ImportError" in error


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmbench", "run", *map(str, args)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_rows(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        runs = list(folder.glob("*/*/results.jsonl"))
        if runs and runs[0].read_text().count("\n") >= n:
            return runs[0].parent
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{n} rows did not appear")


def _interrupt_when(path: Path, rows: int) -> threading.Thread:
    """Ctrl-C for this process (SIGINT to the main thread) once ``path`` holds ``rows`` rows."""
    def watch():
        while not (path.exists() and path.read_text().count("\n") >= rows):
            time.sleep(0.02)
        _thread.interrupt_main(signal.SIGINT)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@needs_ray
def test_ctrl_c_then_kill_9_of_the_driver_then_resume_completes_the_run(cluster, write_suite, tmp_path, capsys,
                                                                          monkeypatch):
    from mmbench.run import run_suite

    c, _ = cluster
    text = BASE.replace("NAME", "rayresume")
    suite = write_suite(text)
    prepared = _prepared(text, write_suite)
    plan = [t.id for t in prepared.trials]
    fresh = run_suite(prepared, tmp_path / "fresh").rows()

    # Ctrl-C (here: this process's main thread, running the CLI): in-flight tasks cancelled, the resume command printed.
    monkeypatch.setattr("mmbench.run.RunDir.create", _interrupting_create())
    code, _, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path / "out", "--executor", "ray",
                       "--address", c.address)
    assert code == 130, err
    run_dir = next((tmp_path / "out" / "rayresume").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["state"] == "interrupted"
    command = shlex.split(err.strip().splitlines()[-1].strip())
    assert command[:2] == ["mmbench", "run"] and command[command.index("--resume") + 1] == str(run_dir)
    assert command[command.index("--executor") + 1] == "ray" and command[command.index("--address") + 1] == c.address
    n = (run_dir / "results.jsonl").read_text().count("\n")
    assert 1 <= n < len(plan)

    # The printed command in a driver of its own, killed with kill -9 once it recorded a row more.
    proc = subprocess.Popen([sys.executable, "-m", "mmbench", *command[1:]], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_rows(tmp_path / "out", n + 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "running"

    code, out, err = cli(capsys, monkeypatch, "run", suite, "--resume", run_dir, "--executor", "ray", "--json")
    assert code == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    ids = [r["trial_id"] for r in doc["rows"]]
    assert doc["state"] == "complete" and sorted(ids) == sorted(plan) and len(set(ids)) == len(ids)
    assert _scores(doc["rows"]) == _scores(fresh)  # no duplicate, none missing, scores as one uninterrupted run
    assert len(json.loads((run_dir / "run.json").read_text())["resumed"]) == 2


def _interrupting_create():
    """RunDir.create that also starts the Ctrl-C watcher on the new run's results file."""
    from mmbench.store import RunDir

    create = RunDir.create.__func__

    def wrapped(cls, out, suite_name):
        run = create(cls, out, suite_name)
        _interrupt_when(run.path / "results.jsonl", 1)
        return run

    return classmethod(wrapped)


def _overlap(a, b) -> bool:
    return a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


@needs_ray
def test_two_timed_trials_never_overlap_on_a_node(cluster, write_suite, tmp_path):
    from mmbench.ray_executor import RayExecutor
    from mmbench.run import run_suite

    _, nodes = cluster
    text = BASE.replace("NAME", "raytimed").replace("latency: null", TIMED).replace("[4, 6, 8]", "[4, 6]") \
        .replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 2", "epochs: 1")
    text += "  - method: tests.ray_probe:Slow\n    params: {delay: 0.3}\n"
    rows = run_suite(_prepared(text, write_suite), tmp_path, executor=RayExecutor()).rows()
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert {r["node_id"] for r in rows} == set(nodes)  # both nodes measured …
    for i, a in enumerate(rows):  # … but never two at once on one node (the task's own start and end times)
        for b in rows[i + 1:]:
            assert not (a["node_id"] == b["node_id"] and _overlap(a, b)), (a["label"], b["label"])


@needs_ray
def test_a_suite_pins_trials_to_a_gpu_model(cluster, write_suite, tmp_path):
    from mmbench.ray_executor import RayExecutor
    from mmbench.run import run_suite

    _, nodes = cluster
    a100 = next(nid for nid, res in nodes.items() if "accelerator_type:A100" in res)
    text = BASE.replace("NAME", "raypin").replace("latency: null", "latency: null, accuracy: false")
    rows = run_suite(_prepared(text, write_suite), tmp_path, executor=RayExecutor(accelerator="A100")).rows()
    assert len(rows) == 9 and {r["node_id"] for r in rows} == {a100}
    with pytest.raises(Exception, match="accelerator_type V100"):  # no such node: refused before anything runs
        run_suite(_prepared(text, write_suite), tmp_path / "none", executor=RayExecutor(accelerator="V100"))
    assert not (tmp_path / "none").exists()


@needs_ray
def test_gpu_trials_get_one_whole_gpu_each_and_cpu_trials_none(cluster, write_suite):
    """GPUs here are counters (no CUDA): a CUDA trial fails to build on this machine, but inside its task it has
    already been given its device, which is what this checks."""
    from mmbench.plan import task_key
    from mmbench.ray_executor import RayExecutor

    text = BASE.replace("NAME", "raygpu").replace("latency: null", "latency: null, accuracy: false, flops: false") \
        .replace("  - method: tfn\n  - method: lmf\n    params: {rank: 2}\n",
                 "  - method: tests.ray_probe:Slow\n    params: {delay: 2.0}\n")
    prepared = _prepared(text, write_suite)
    gpu = [dataclasses.replace(t, device="cuda") for t in prepared.trials if t.method != "early"]
    ex = RayExecutor(accelerator="H100")  # the node with two GPUs: both trials on it at once
    assert all(ex.options(t)["num_gpus"] == 1 and ex.options(t)["max_calls"] == 1 for t in gpu)
    assert all(ex.options(t)["num_gpus"] == 0 for t in prepared.trials if t.method == "early")
    gpu = gpu[:1] * 2  # a fresh process each
    results = [r.row for _, r in ex.run(gpu + [t for t in prepared.trials if t.method == "early"][:1],
                                        prepared.tasks)]
    ex.close()
    gpu_rows = [r for r in results if r["device"] == "cuda"]
    assert len(gpu_rows) == 2 and len({r["node_id"] for r in results}) == 1
    for r in gpu_rows:
        assert r["cuda_visible_devices"] in ("0", "1"), r  # exactly one whole device
    for i, a in enumerate(gpu_rows):  # running at once on one node: never the same device
        for b in gpu_rows[i + 1:]:
            if a["node_id"] == b["node_id"] and _overlap(a, b):
                assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    assert [r["cuda_visible_devices"] for r in results if r["device"] == "cpu"] == [""]
    with pytest.raises(Exception, match="whole GPUs"):
        RayExecutor(gpus=0.5)


def test_a_fractional_gpu_in_the_suite_is_refused(write_suite, tmp_path, capsys, monkeypatch):
    text = BASE.replace("NAME", "frac") + "execution: {executor: ray, gpus: 0.5}\n"
    code, _, err = cli(capsys, monkeypatch, "run", write_suite(text), "--out", tmp_path)
    assert code == 2 and one_line_error(err) and "execution.gpus" in err, err
    assert not (tmp_path / "frac").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["no_ray", "nothing_answers"])
def test_no_ray_or_no_cluster_is_one_line_exit_2_and_nothing_written(case, write_suite, tmp_path):
    if case == "nothing_answers" and ray is None:
        pytest.skip("ray is not installed")
    suite = write_suite(BASE.replace("NAME", "nocluster"))
    args = ["run", str(suite), "--out", str(tmp_path), "--executor", "ray"]
    if case == "nothing_answers":
        args += ["--address", f"127.0.0.1:{_free_port()}"]
    block = "sys.modules['ray'] = None; " if case == "no_ray" else ""  # what an environment without ray sees
    code = f"import sys; {block}sys.argv = ['mmbench'] + {args!r}; from mmbench.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code], env={**_env(), "RAY_ADDRESS": ""}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and one_line_error(r.stderr), r.stderr
    assert ("pip install 'mmbench[ray]'" if case == "no_ray" else "no Ray cluster answers") in r.stderr
    assert not (tmp_path / "nocluster").exists() and not (tmp_path / "history.sqlite").exists()
