"""Prediction (predict.py, `mmbench predict SUITE --from RUN`): configurations not run, estimated from the run's
scaling laws, each with its interval, marked predicted; tested by leaving configurations out of a run."""
import json

from mmbench import scaling
from mmbench import vocabulary as V
from mmbench.predict import predict_rows
from mmbench.report.tables import tagged_rows
from mmbench.store import load_runs
from tests.fakerun import make_run, trials
from tests.inproc import cli, one_line_error

DIMS = (4, 6, 8, 12, 16, 24)


def test_leaving_one_size_out_predicts_its_latency_within_the_interval(tmp_path):
    full = make_run(tmp_path, "full", specs=trials(methods=("tfn", "lmf", "late"), dims=DIMS, ranks=(1, 4)))
    rows = tagged_rows(load_runs([full]))
    left_out = [r for r in rows if r["dims"] == "12x12x12"]
    fits = scaling.fit_rows([r for r in rows if r["dims"] != "12x12x12"])
    preds = predict_rows(left_out, fits)
    assert len(preds) == len(left_out) == 4
    close = inside = n = 0
    for p, r in zip(preds, left_out):
        assert p.why_none == "" and p.size == {"tfn": 13 ** 3, "lmf": (r["rank"] or 0) * 39, "late": 36}[p.method]
        for e in p.estimates:
            if V.timing(e.cost):
                n += 1
                close += abs(e.value / r[e.cost] - 1) <= 0.30
                inside += e.low <= r[e.cost] <= e.high
                assert e.low < e.value < e.high and not e.extrapolated
    assert n == 4 * 2  # the four left-out trials, latency at two batch sizes (the fake run times no training step)
    assert close >= 0.8 * n and inside >= 0.8 * n


def test_beyond_the_sizes_fitted_is_marked_extrapolated_and_unknown_methods_say_why(tmp_path):
    run = make_run(tmp_path, "a", specs=trials(methods=("tfn",), dims=(4, 6, 8)))
    fits = scaling.fit_rows(tagged_rows(load_runs([run])))
    (far, other) = predict_rows([{"task": "synthetic-synergy", "method": "tfn", "label": "tfn", "dims": "32x32x32",
                                  "hparams": {}},
                                 {"task": "synthetic-synergy", "method": "mfb", "label": "mfb", "dims": "8x8",
                                  "hparams": {}}], fits)
    assert far.estimates and all(e.extrapolated for e in far.estimates)
    assert other.estimates == [] and "no size variable" in other.why_none


def test_a_run_over_several_places_predicts_with_each_places_law_and_names_it(tmp_path):
    run = make_run(tmp_path, "cluster", specs=trials(methods=("tfn",), dims=DIMS))
    rows = tagged_rows(load_runs([run]))
    # the same trials measured on a second node ten times faster: one run, two places (a cluster's nodes)
    gpu = [{**r, "_env": "b", "device": "cuda", "gpu_name": "H100",
            **{k: v / 10 for k, v in r.items() if V.timing(k) and isinstance(v, float)}} for r in rows]
    rows = [{**r, "_env": "a"} for r in rows] + gpu
    fits = scaling.fit_rows(rows)
    (p,) = predict_rows([{"task": rows[0]["task"], "method": "tfn", "label": "tfn", "dims": "10x10x10", "hparams": {},
                          "_run": rows[0]["_run"]}], fits)
    lat = V.column_of("latency", 16)  # the fake run's larger batch size
    mine = {e.where: e.value for e in p.estimates if e.cost == lat}
    assert len(mine) == 2 and all(mine) and " · H100" in "".join(mine)
    slow, fast = sorted(mine.values())[::-1]
    assert 8 < slow / fast < 12  # each place's own law, not one law through both
    assert {k.split(" @ ")[0] for k in p.to_dict()["estimates"]} >= {lat} and \
        all(" @ " in k for k in p.to_dict()["estimates"])


SUITE = """
name: fake
task:
  dataset: synthetic
  label: synthetic-synergy
  params: {interaction: synergy, modalities: 3, dim: 8, num_classes: 2, n_train: 200, n_val: 100, n_test: 100}
measure: {device: cpu, accuracy: false, latency: {batch_sizes: [1, 16]}}
sweep:
  dims: [4, 8, 12, 16]
  rank: [1, 4]
methods:
  - method: tfn
  - method: lmf
"""


def test_cli_predicts_the_suites_trials_the_run_does_not_hold(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path, "a", specs=trials(methods=("tfn", "lmf"), dims=(4, 8, 16)))
    suite = tmp_path / "fake.yaml"
    suite.write_text(SUITE)
    code, out, err = cli(capsys, monkeypatch, "predict", suite, "--from", run, "--json")
    assert code == 0, err
    doc = json.loads(out)
    got = {(p["label"], p["dims"]) for p in doc["predictions"]}
    assert got == {("tfn", "12x12x12"), ("lmf(rank=1)", "12x12x12"), ("lmf(rank=4)", "12x12x12")}
    for p in doc["predictions"]:
        assert p["predicted"] is True and "latency_ms_b16" in p["estimates"]
        e = p["estimates"]["latency_ms_b16"]
        assert e["low"] < e["value"] < e["high"] and e["extrapolated"] is False
    code, out, err = cli(capsys, monkeypatch, "predict", suite, "--from", run)
    assert code == 0 and "12x12x12" in out and "Π(d_m+1) = 2197" in out
    # --all: the run's own trials too, each estimate beside what was measured
    code, out, err = cli(capsys, monkeypatch, "predict", suite, "--from", run, "--json", "--all")
    doc = json.loads(out)
    assert len(doc["predictions"]) == 12
    measured = {r["label"] + r["dims"]: r for r in load_runs([run])[0].rows}
    for p in doc["predictions"]:
        e = p["estimates"]["latency_ms_b16"]
        if p["dims"] == "12x12x12":
            assert "measured" not in e
        else:
            assert e["measured"] == measured[p["label"] + p["dims"]]["latency_ms_b16"]
    code, _, err = cli(capsys, monkeypatch, "predict", suite, "--from", tmp_path / "nope")
    assert code == 2 and one_line_error(err) and "not a run directory" in err
