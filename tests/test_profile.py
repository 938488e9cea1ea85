"""`mmbench run --profile`: a Chrome trace per trial in RUN_DIR/profiles, the top operators in its samples; opt-in,
and the same trial ids and rows' figures as a run without it."""
import json

from tests.conftest import run_cli

SUITE = """\
name: prof
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 60, n_val: 30, n_test: 30}
train: {epochs: 1, batch_size: 32, seeds: [0]}
measure:
  device: cpu
  threads: 1
  accuracy: false
  memory: false
  latency: {batch_sizes: [1, 5], max_time_s: 0.01, min_time_s: 0.0, min_samples: 2, warmup: 1, min_block_ms: 0.1}
sweep:
  dims: [4]
methods:
  - method: tfn
  - method: lmf
"""


def _run(write_suite, tmp_path, *extra):
    r = run_cli("run", str(write_suite(SUITE)), "--out", str(tmp_path / "res"), "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_profile_writes_a_trace_per_trial_and_the_top_operators(write_suite, tmp_path):
    doc = _run(write_suite, tmp_path, "--profile")
    run_dir = tmp_path / "res" / "prof" / doc["run_dir"].rsplit("/", 1)[1]
    samples = {s["trial_id"]: s for s in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}
    assert len(doc["rows"]) == 2
    for row in doc["rows"]:
        s = samples[row["trial_id"]]
        assert s["profile_trace"] == f"profiles/{row['trial_id']}.json" and "_profile_trace" not in s
        trace = json.loads((run_dir / s["profile_trace"]).read_text())
        names = {e.get("name") for e in trace["traceEvents"]}
        # each timed function of the largest batch size, labelled, and the operators they ran
        assert {"latency b5", "fusion_latency b5", "encoder_latency b5", "train_step b5"} <= names
        assert any(str(n).startswith("aten::") for n in names)
        top = s["profile_top_ops"]
        assert 1 <= len(top) <= 10 and s["profile_batch"] == 5
        assert all(set(op) == {"name", "self_cpu_us", "calls"} and op["calls"] >= 1 for op in top)
        assert [op["self_cpu_us"] for op in top] == sorted((op["self_cpu_us"] for op in top), reverse=True)
        assert not any(op["name"].endswith(" b5") for op in top)  # the labels are not operators


def test_without_profile_there_is_no_trace_and_the_ids_are_the_same(write_suite, tmp_path):
    plain = _run(write_suite, tmp_path)
    run_dir = tmp_path / "res" / "prof" / plain["run_dir"].rsplit("/", 1)[1]
    assert not (run_dir / "profiles").exists()
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    assert lines and not any("profile_top_ops" in json.loads(line) for line in lines)
    profiled = _run(write_suite, tmp_path, "--profile")
    assert sorted(r["trial_id"] for r in plain["rows"]) == sorted(r["trial_id"] for r in profiled["rows"])
