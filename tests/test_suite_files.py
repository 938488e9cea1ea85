"""The shipped suites validate (datasets load, every module builds); an affect suite runs end to end."""
import json
import pickle
from pathlib import Path

import pytest

from mmbench.errors import UserError
from mmbench.run import prepare
from mmbench.suite import load_suite
from tests.conftest import ROOT, run_cli
from tests.test_datasets import _affect_doc

SUITES = sorted((ROOT / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suite_validates(path: Path):
    for quick in (False, True):
        assert prepare(load_suite(path, quick=quick)).trials


def test_affect_suite_runs_with_affect_metrics(write_suite, tmp_path):
    with open(tmp_path / "mosi.pkl", "wb") as f:
        pickle.dump(_affect_doc("mmsa", n=(60, 20, 20)), f)
    suite = write_suite("""\
        name: aff
        task: {dataset: affect, params: {path: mosi.pkl, allow_pickle: true}}
        train: {epochs: 2, batch_size: 32, seeds: [0], loss: l1}
        measure: {device: cpu, latency: null, flops: false, memory: false,
                  robustness: {levels: [0.0, 0.5, 1.0]}}
        sweep: {dims: [4]}
        methods: [{method: lmf, params: {rank: 2}}]
        """)
    r = run_cli("run", str(suite), "--out", str(tmp_path / "res"), "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["rows"][0]
    assert row["status"] == "ok", row["error"]
    for col in ("acc2_mean", "acc7_mean", "f1_mean", "mae_mean", "corr_mean", "rob_text_auc_mean"):
        assert col in row, col
    assert row["rob_metric"] == "acc2"
    bad = write_suite(Path(suite).read_text().replace("loss: l1", "loss: cross_entropy"), "bad.yaml")
    with pytest.raises(UserError) as exc:  # caught at validation, before any training
        prepare(load_suite(bad))
    assert "train.loss" in exc.value.render() and "regression" in exc.value.render()
