"""Where the time goes: the encoders timed alone beside the fusion and the whole forward, with the same evidence; the
remainder named framework overhead; a switch that is not part of the trial id; old baselines still compare."""
from __future__ import annotations

import json

import pytest

from mmbench import compare as C
from mmbench import stages
from mmbench.report.build import build
from mmbench.report import markdown
from mmbench.run import prepare, run_suite
from mmbench.suite import load_suite

SUITE = """\
name: stages
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, n_train: 60, n_val: 30, n_test: 30}
train: {epochs: 1, batch_size: 32, seeds: [0]}
measure:
  device: cpu
  threads: 1
  accuracy: false
  memory: false
  latency: {batch_sizes: [1, 3], max_time_s: 0.01, min_time_s: 0.0, min_samples: 2, warmup: 1, min_block_ms: 0.1,
            train_step: false%s}
sweep:
  dims: [4]
methods:
  - method: tfn
  - method: early
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    out = {}
    for name, extra in (("on", ""), ("off", ", stages: false")):
        path = tmp / f"{name}.yaml"
        path.write_text(SUITE % extra)
        out[name] = run_suite(prepare(load_suite(path)), tmp / name).path
    return out


def _rows(run):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def test_the_encoders_are_timed_with_the_same_evidence_and_the_rest_is_named(runs):
    rows = _rows(runs["on"])
    samples = [json.loads(line) for line in (runs["on"] / "samples.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"ok"}
    for r, raw in zip(rows, samples):
        for b in (1, 3):
            for what in ("ms", "iqr_ms", "n", "noisy", "contended", "host_slow", "slow_rounds", "cpu_util"):
                key = f"encoder_latency_{what}_b{b}"
                assert key in r and key.replace("encoder", "fusion") in r
            # at least one kept sample (on a loaded host the rounds beside slow host readings are left out)
            assert r[f"encoder_latency_ms_b{b}"] > 0 and r[f"encoder_latency_n_b{b}"] >= 1
            assert raw[f"encoder_latency_rounds_ms_b{b}"] and raw[f"encoder_latency_ms_b{b}"]  # its rounds, samples
            over = r[f"latency_ms_b{b}"] - r[f"encoder_latency_ms_b{b}"] - r[f"fusion_latency_ms_b{b}"]
            assert r[f"framework_overhead_ms_b{b}"] == pytest.approx(over)
            assert r[f"framework_overhead_share_b{b}"] == pytest.approx(over / r[f"latency_ms_b{b}"])
        assert not any(k.startswith("head_latency") for k in r)  # the model has no head: none is invented


def test_the_switch_is_not_part_of_the_trial_id_and_off_adds_nothing(runs):
    on, off = _rows(runs["on"]), _rows(runs["off"])
    assert [r["trial_id"] for r in on] == [r["trial_id"] for r in off]
    assert not any(k.startswith(("encoder_latency", stages.OVERHEAD)) for r in off for k in r)
    assert all("fusion_latency_ms_b1" in r and "latency_ms_b1" in r for r in off)


def test_the_switch_travels_to_workers_and_into_trials(tmp_path):
    from mmbench.plan import Trial

    path = tmp_path / "s.yaml"
    path.write_text(SUITE % ", stages: false")
    trial = prepare(load_suite(path)).trials[0]
    assert trial.measure.latency.stages is False
    back = Trial.from_dict(json.loads(json.dumps(trial.to_dict())))  # what a worker or a Ray task gets
    assert back.measure.latency.stages is False and back.id == trial.id


def test_a_baseline_without_stage_timings_still_compares(runs):
    cmp = C.compare(C.side_from_run(runs["off"]), C.side_from_run(runs["on"]))
    assert cmp.refusal is None
    new = [e for e in cmp.entries if e.metric.startswith("encoder_latency_ms")]
    assert len(new) == 4 and all("current run only" in e.detail for e in new)


def test_the_report_says_where_the_time_goes(runs):
    text = markdown.render(build([runs["on"]]))
    assert "### Where the time goes" in text
    table = text.split("### Where the time goes")[1].split("###")[0]
    rows = [line for line in table.splitlines() if line.startswith("| tfn") or line.startswith("| early")]
    assert len(rows) == 2 and all("| 4x4 | 3 |" in line for line in rows)  # the largest batch size
    assert "### Where the time goes" not in markdown.render(build([runs["off"]]))


def test_split_is_empty_where_a_stage_was_not_measured():
    row = {"latency_ms_b8": 2.0, "encoder_latency_ms_b8": 0.5, "fusion_latency_ms_b8": 1.0}
    assert stages.split(row, 8) == {"encoders": 0.5, "fusion": 1.0, "framework overhead": 0.5, "whole": 2.0}
    assert stages.split({**row, "encoder_latency_ms_b8": None}, 8) is None
    cols = stages.overhead_columns({**row, "fusion_latency_ms_b8": None}, [8])
    assert cols == {"framework_overhead_ms_b8": None, "framework_overhead_share_b8": None}
