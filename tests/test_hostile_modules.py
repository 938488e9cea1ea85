"""Faulty user modules (issue 17): a wrong output shape is the trial's error, before anything is counted; a
module's own SystemExit / KeyboardInterrupt is its trial's error, not the end of the run; a worker's trial timeout
runs from the trial's start, not from the replacement worker's start-up."""
import json

from inproc import cli
from test_runner import FAULT_SUITE


def test_wrong_output_shape_and_a_modules_own_exit_are_that_trials_error(write_suite, tmp_path, capsys,
                                                                         monkeypatch):
    suite = write_suite(FAULT_SUITE.replace("FAULTS", "shape, tuple, sysexit, keyboard, none"))
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "complete"
    rows = {r["hparams"].get("fault", r["method"]): r for r in doc["rows"]}
    assert {k: r["status"] for k, r in rows.items()} == {"early": "ok", "late": "ok", "none": "ok", "shape": "error",
                                                         "tuple": "error", "sysexit": "error", "keyboard": "error"}
    assert "(2, 3)" in rows["shape"]["error"] and "(2, 2)" in rows["shape"]["error"]
    assert "tuple" in rows["tuple"]["error"]
    for bad in ("shape", "tuple"):  # refused before counting and timing: nothing measured is kept
        assert "params" not in rows[bad] and "latency_ms_b4" not in rows[bad] and "acc_mean" not in rows[bad]
    assert rows["sysexit"]["error"].startswith("SystemExit") and "not a signal" in rows["sysexit"]["error"]
    assert rows["keyboard"]["error"].startswith("KeyboardInterrupt")
    assert rows["late"]["acc_mean"] >= 0  # the trials after them ran


def test_a_modules_own_exit_in_a_worker_is_that_trials_error(write_suite, tmp_path, capsys, monkeypatch):
    suite = write_suite(FAULT_SUITE.replace("FAULTS", "sysexit, keyboard"))
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path, "--json", "--isolate")
    assert code == 0, err
    rows = {r["hparams"].get("fault", r["method"]): r for r in json.loads(out)["rows"]}
    assert rows["sysexit"]["status"] == rows["keyboard"]["status"] == "error"
    assert rows["late"]["status"] == "ok"


SLOW_START = """\
import os, time
if os.environ.get("MMBENCH_TEST_SLOW_START"):
    time.sleep(float(os.environ["MMBENCH_TEST_SLOW_START"]))
"""


def test_trial_timeout_runs_from_the_trials_start_on_a_ready_worker(write_suite, tmp_path, capsys, monkeypatch):
    """Every worker takes longer to start than the timeout (sitecustomize sleeps in spawned interpreters only):
    the hung trial times out, and the healthy trial after it, on the replacement worker, does not."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    monkeypatch.setenv("PYTHONPATH", f"{site}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("MMBENCH_TEST_SLOW_START", "6")
    suite = write_suite(FAULT_SUITE.replace("FAULTS", "hang, none").replace(
        "latency: {batch_sizes: [4], max_time_s: 0.01, min_samples: 3, warmup: 1, min_block_ms: 0.1}",
        "latency: null").replace("  - method: early\n", "").replace("  - method: late\n", ""))
    code, out, err = cli(capsys, monkeypatch, "run", suite, "--out", tmp_path / "o", "--json", "--trial-timeout", "4")
    assert code == 0, err
    rows = {r["hparams"]["fault"]: r for r in json.loads(out)["rows"]}
    assert rows["hang"]["status"] == "timeout"
    assert rows["none"]["status"] == "ok", rows["none"]["error"]


def test_a_module_that_exits_on_import_or_construction_is_one_line(write_suite, tmp_path, capsys, monkeypatch):
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "exits_in_init.py").write_text(
        "import sys\nfrom torch import nn\n\nclass Fusion(nn.Module):\n"
        "    def __init__(self, dims, out_dim):\n        super().__init__()\n        sys.exit(0)\n\n"
        "    def forward(self, xs):\n        return xs[0]\n")
    from inproc import one_line_error

    for spec, message in (("exits_on_import:Fusion", "cannot import 'exits_on_import'"),
                          ("exits_in_init:Fusion", "its constructor raised SystemExit")):
        suite = write_suite(FAULT_SUITE.replace("tests.faulty:Faulty", spec).replace("    sweep: {fault: [FAULTS]}\n",
                                                                                      ""), f"{spec[:5]}.yaml")
        code, _, err = cli(capsys, monkeypatch, "validate", suite)
        assert code == 2 and one_line_error(err) and message in err, err


def test_a_keyboard_interrupt_nobody_watches_for_is_taken_for_a_real_one(write_suite):
    """run_trial called directly (a notebook, a benchmark): no handler tells a user's KeyboardInterrupt from Ctrl-C,
    so it ends the caller as Python would; SystemExit is never a signal."""
    import pytest

    from mmbench.plan import task_key
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from mmbench.trial import run_trial

    prepared = prepare(load_suite(write_suite(FAULT_SUITE.replace("FAULTS", "keyboard, sysexit"))))
    by_fault = {t.hparams.get("fault"): t for t in prepared.trials}
    data = prepared.tasks[task_key(by_fault["keyboard"].task)]
    with pytest.raises(KeyboardInterrupt):
        run_trial(by_fault["keyboard"], data)
    assert run_trial(by_fault["sysexit"], data).row["status"] == "error"
