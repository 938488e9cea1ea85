"""Instruction counts: the callgrind pass's parsing and arithmetic, what happens where valgrind is missing, and one
real count under valgrind (skipped where it is absent). Judging them is in tests/test_gate.py."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmbench.measure import instructions as I

DUMP = """version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  python -m mmbench.measure.instructions job.pkl
part: 3

desc: I1 cache: 
desc: D1 cache: 
desc: LL cache: 

desc: Timerange: Basic block 188640 - 505080
desc: Trigger: Client Request: abc123def456 train_step 64 fn

positions: line
events: Ir
summary: 1419748

fn=(1) _PyEval_EvalFrameDefault
0 1419748

totals: 1419748
"""


def test_a_labelled_dump_gives_its_label_and_totals():
    label, events = I.parse_dump(DUMP)
    assert label == "abc123def456 train_step 64 fn" and events == {"Ir": 1419748}
    exit_dump = DUMP.replace("Client Request: abc123def456 train_step 64 fn", "Program termination")
    assert I.parse_dump(exit_dump) is None


def test_a_dump_with_the_cache_simulation_keeps_every_event():
    text = DUMP.replace("events: Ir", "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw").replace(
        "summary: 1419748", "summary: 100 40 20 3 2 1 1 0 0")
    assert I.parse_dump(text)[1] == {"Ir": 100, "Dr": 40, "Dw": 20, "I1mr": 3, "D1mr": 2, "D1mw": 1, "ILmr": 1,
                                     "DLmr": 0, "DLmw": 0}
    # the cycle estimate: instructions + 10 per L1 miss + 100 per last-level miss
    assert I.cycles(I.parse_dump(text)[1]) == 100 + 10 * (3 + 2 + 1) + 100 * (1 + 0 + 0)


class _Trial:
    def __init__(self, tid="t1", batch_sizes=(1, 8), device="cpu", compile=False, instructions=True):
        from types import SimpleNamespace as NS

        self.id, self.device = tid, device
        self.measure = NS(latency=NS(batch_sizes=list(batch_sizes)), compile=compile, instructions=instructions)


def test_per_call_count_is_the_median_block_minus_the_empty_loop_over_the_calls():
    dumps = {I.label("t1", "latency", 1, "fn0"): {"Ir": 20_000 + 20 * 5_000},
             I.label("t1", "latency", 1, "fn1"): {"Ir": 20_000 + 20 * 5_010},
             I.label("t1", "latency", 1, "fn2"): {"Ir": 20_000 + 20 * 4_000},   # an odd block: not the figure
             I.label("t1", "latency", 1, "empty"): {"Ir": 20_000 + 20 * 100},
             I.label("t1", "train_step", 8, "fn0"): {"Ir": 3_000_000},
             I.label("t1", "train_step", 8, "fn1"): {"Ir": 3_000_000},
             I.label("t1", "train_step", 8, "fn2"): {"Ir": 500},                 # below the empty loop: no count
             I.label("t1", "train_step", 8, "empty"): {"Ir": 1_000}}
    cols, raw = I._columns(_Trial(), dumps, 20, 3)
    assert cols == {"instr_b1": 4_900.0}
    assert raw["instr_b1"] == [120_000, 120_200, 100_000, 22_000, 20]  # the figure can be derived again
    assert "instr_fusion_b1" not in cols and "instr_train_step_b8" not in cols  # not counted: empty, never 0


def test_without_valgrind_the_columns_are_empty_with_one_note_and_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(I.shutil, "which", lambda name: None)
    why = I.unavailable()
    assert "apt-get install valgrind" in why
    counts = I.count_trials([_Trial("a"), _Trial("b", device="cuda"), _Trial("c", instructions=False)], {}, tmp_path)
    assert counts.note == why and not counts.raw
    assert counts.columns["a"] == {"instr_note": why}
    assert "CPU measure" in counts.columns["b"]["instr_note"]  # CUDA: empty for its own reason
    assert "c" not in counts.columns                            # did not ask
    assert not list(tmp_path.iterdir())                         # nothing was started


def test_compiled_and_tuned_trials_are_skipped_and_say_so():
    assert "compiled" in I.skip_reason(_Trial(compile=True))
    tuned = _Trial()
    tuned.tune = object()
    assert "tuned" in I.skip_reason(tuned)
    assert I.skip_reason(_Trial()) is None


def test_the_fingerprint_leaves_the_cpu_model_out_and_the_code_path_in():
    env = {"torch": "2.13.0", "python": "3.11.7", "libc": "glibc-2.36", "machine": "x86_64",
           "cpu_vendor": "AuthenticAMD", "capability": "avx2", "valgrind": "valgrind-3.19.0"}
    fp = I.fingerprint(env)
    assert I.fingerprint({**env, "cpu_model": "AMD EPYC 7763"}) == fp
    for k, v in (("torch", "2.13.1"), ("python", "3.11.8"), ("libc", "glibc-2.39"), ("capability", "default"),
                 ("cpu_vendor", "GenuineIntel")):
        assert I.fingerprint({**env, k: v}) != fp, k


def test_instructions_change_no_trial_id_and_need_latency(tmp_path):
    from mmbench.errors import UserError
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    text = Path("suites/nightly.yaml").read_text()
    assert "  instructions: true" in text  # the nightly gate counts
    base = tmp_path / "a.yaml"
    base.write_text(text.replace("  instructions: true", "  instructions: false"))
    on = tmp_path / "b.yaml"
    on.write_text(text)
    ids = [t.id for t in prepare(load_suite(base)).trials]
    with_counts = prepare(load_suite(on)).trials
    assert [t.id for t in with_counts] == ids and all(t.measure.instructions for t in with_counts)
    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\ntask: {dataset: synthetic}\nmeasure:\n  instructions: true\n  latency: null\n"
                   "methods: [{method: early}]\n")
    with pytest.raises(UserError) as e:
        load_suite(bad)
    assert "measure" in e.value.render() and "needs measure.latency" in e.value.render()


@pytest.mark.skipif(I.unavailable() is not None, reason=f"needs valgrind on x86-64 Linux: {I.unavailable()}")
def test_a_real_run_counts_instructions_under_valgrind(tmp_path):
    """The whole path: `mmbench run` on a two-trial suite, one valgrind process, columns in every row, the counts'
    environment in env.json; the instruction count grows with the work (batch 8 over batch 1)."""
    suite = tmp_path / "s.yaml"
    suite.write_text("""name: counted
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, num_classes: 2, n_train: 64, n_val: 32, n_test: 32}
measure:
  device: cpu
  threads: 1
  accuracy: false
  instructions: true
  latency: {batch_sizes: [1, 8], warmup: 1, min_samples: 2, max_samples: 5, min_time_s: 0, max_time_s: 0.02,
            rounds: 1, min_block_ms: 0.1}
sweep: {dims: [4]}
methods:
  - method: early
  - method: lmf
    sweep: {rank: [2]}
""")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mmbench", "run", str(suite), "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    rows = doc["rows"]
    assert len(rows) == 2
    env = json.loads((Path(doc["run_dir"]) / "env.json").read_text())["instructions"]
    assert env["capability"] in ("avx2", "default") and env["fingerprint"]
    for r in rows:
        assert r["instr_env"] == env["fingerprint"] and r["instr_calls"] == I.CALLS
        for b in (1, 8):
            for col in (f"instr_fusion_b{b}", f"instr_b{b}", f"instr_train_step_b{b}"):
                assert r[col] > 1000, (col, r[col])
        assert r["instr_fusion_b1"] < r["instr_b1"] < r["instr_train_step_b1"]  # a part, the whole, and backward
        assert r["instr_b8"] > r["instr_b1"]
