"""A trial that learned nothing is flagged `did_not_learn` (with why), still measured and kept, and counted in the
report's summary."""
import dataclasses

import numpy as np

from mmbench.data.registry import Split, TaskData
from mmbench.measure.train import did_not_learn, fit
from mmbench.model import build
from mmbench.plan import Trial, TrialMeasure
from mmbench.suite import ModelSpec, TrainSpec
from mmbench.trial import run_trial


def _blobs(n, seed, classes=4, shift=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, 3)) * 0 + np.eye(classes, 3) * shift * 2
    xs = [(rng.normal(size=(n, 3)) + centres[y]).astype(np.float32) for _ in range(2)]
    return Split(xs, y.astype(np.int64))


def _task(target="classification"):
    tr, va, te = _blobs(400, 0), _blobs(200, 1), _blobs(200, 2)
    if target == "regression":
        for s in (tr, va, te):
            s.y = (s.xs[0][:, 0] + s.xs[1][:, 1]).astype(np.float32)
    return TaskData("t", tr, va, te, ["a", "b"], 4 if target == "classification" else 1, target=target)


def _trial(**train):
    t = TrainSpec(**{"epochs": 8, "batch_size": 64, "lr": 0.01, "seeds": [0, 1], **train})
    m = TrialMeasure(flops=False, memory=False, latency=None)
    return Trial(method="lmf", hparams={"rank": 2}, dims=(4, 4), task={"dataset": "t", "params": {}},
                 model=ModelSpec(), train=t, measure=m, device="cpu", label="lmf", task_label="t")


def test_a_trial_that_learns_is_not_flagged():
    row = run_trial(_trial(), _task()).row
    assert row["status"] == "ok" and row["acc_mean"] > 0.8
    assert row["did_not_learn"] is False and row["did_not_learn_why"] == ""


def test_weight_decay_collapse_is_flagged_but_measured_and_kept():
    """As LMF with too much weight decay: the weights are pulled to zero, every prediction is one class."""
    result = run_trial(_trial(weight_decay=50.0), _task())
    row = result.row
    assert row["status"] == "ok" and "acc_mean" in row and row["acc_mean"] < 0.45  # measured, kept
    assert row["did_not_learn"] is True
    flagged = [s for s in result.raw["seeds"] if s["did_not_learn"]]
    assert flagged and all(f"seed {s['seed']}: {s['did_not_learn']}" in row["did_not_learn_why"] for s in flagged)
    assert "of chance" in row["did_not_learn_why"] and flagged[0]["val_chance"] > 0.2


def test_a_training_loss_that_does_not_fall_is_flagged():
    row = run_trial(_trial(lr=1e-9, seeds=[0]), _task()).row
    assert row["did_not_learn"] is True and "training loss did not fall" in row["did_not_learn_why"]


def test_regression_that_never_beats_the_mean_is_flagged():
    task = _task("regression")
    learned = run_trial(_trial(seeds=[0]), task).row
    assert learned["status"] == "ok" and learned["did_not_learn"] is False, learned["did_not_learn_why"]
    stuck = run_trial(_trial(lr=1e-9, seeds=[0]), task).row
    assert stuck["did_not_learn"] is True and "chance" in stuck["did_not_learn_why"]


def test_chance_is_the_majority_share_and_its_standard_error():
    task = _task()
    make = lambda: build("early", {}, [3, 3], [4, 4], 4)  # noqa: E731
    _, info = fit(make, task.train, task.val, TrainSpec(epochs=1, batch_size=64, lr=1e-9), seed=0)
    share = np.bincount(task.val.y).max() / len(task.val.y)
    assert abs(info.val_chance - share) < 1e-12
    assert abs(info.val_chance_se - np.sqrt(share * (1 - share) / len(task.val.y))) < 1e-12
    assert did_not_learn(dataclasses.replace(info, val_score=share + 0.5, epoch_losses=[0.0])) == ""


def test_report_summary_counts_trials_that_did_not_learn(tmp_path):
    import json

    from tests.fakerun import make_run
    from mmbench.store import load_run
    from mmbench.report.summary import run_summary

    path = make_run(tmp_path, "r1")
    lines = (path / "results.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    for i, r in enumerate(rows):
        r["did_not_learn"] = i < 2
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cols, table = run_summary([load_run(path)])
    cell = table[0][cols.index("trials (ok / failed)")]
    assert cell == f"{len(rows)} / 0 (2 did not learn)"
