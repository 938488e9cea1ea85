"""A trial that learned nothing is flagged `did_not_learn` (with why), still measured and kept, and counted in the
report's summary."""
import dataclasses

import numpy as np
import torch
from torch import nn

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
    assert did_not_learn(dataclasses.replace(info, val_score=share + 0.5)) == ""


def test_high_validation_accuracy_after_one_short_epoch_is_learning():
    """Three optimizer steps take late fusion from chance to over 0.8: the epoch's mean training loss (which averages
    the steps taken while learning) fell under 1%, but validation says it learned."""
    tr, va = _blobs(300, 0, classes=2), _blobs(200, 1, classes=2)
    make = lambda: build("late", {}, [3, 3], [8, 8], 2)  # noqa: E731
    _, info = fit(make, tr, va, TrainSpec(epochs=1, batch_size=128, lr=0.001), seed=0)
    assert info.val_score > 0.8 and info.val_score > info.val_chance + 2 * info.val_chance_se
    assert info.epoch_losses[0] > 0.99 * info.initial_loss  # what the old rule flagged
    assert did_not_learn(info) == ""
    # validation that cannot tell (no SE): the kept model's loss against the untrained one's, measured alike
    assert info.trained_loss < 0.99 * info.initial_loss
    assert did_not_learn(dataclasses.replace(info, val_chance_se=None)) == ""
    assert "did not fall" in did_not_learn(dataclasses.replace(info, val_chance_se=None,
                                                               trained_loss=info.initial_loss))


class _Constant(nn.Module):
    """Ignores its inputs: one learned bias per class, so every output row is the same."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(2))

    def forward(self, xs):
        return self.b.expand(len(xs[0]), 2)


def test_a_model_whose_outputs_stay_constant_is_flagged():
    tr, va = _blobs(300, 0, classes=2), _blobs(200, 1, classes=2)
    _, info = fit(_Constant, tr, va, TrainSpec(epochs=5, batch_size=64, lr=0.05), seed=0)
    why = did_not_learn(info)
    assert abs(info.val_score - info.val_chance) < 1e-6
    assert why.startswith("best validation accuracy") and "within 2 SE of chance" in why


class _Memoriser(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 2))

    def forward(self, xs):
        return self.net(torch.cat(xs, 1))


def _noise(n, seed):
    """Labels independent of the inputs: nothing to learn, only to memorise."""
    rng = np.random.default_rng(seed)
    return Split([rng.normal(size=(n, 16)).astype(np.float32) for _ in range(2)], rng.integers(0, 2, n))


def test_fitting_train_at_chance_on_validation_is_flagged_with_the_reason():
    _, info = fit(_Memoriser, _noise(100, 0), _noise(400, 1), TrainSpec(epochs=40, batch_size=50, lr=0.01), seed=0)
    assert info.trained_loss < 0.1 * info.initial_loss  # it fit the training labels
    why = did_not_learn(info)
    assert "within 2 SE of chance" in why and "worse than the constant prediction's" in why
    assert "training loss fell" in why
    # at chance on a large split by both measures: did not learn, whatever the training loss did
    level = dataclasses.replace(info, val_loss=info.val_chance_loss, val_rows=1000)
    why = did_not_learn(level)
    assert "within 2 SE of the constant's" in why and "validation did not follow" in why
    # on a small one the band also holds a model that learned a little: the training loss decides
    assert did_not_learn(dataclasses.replace(level, val_rows=100)) == ""


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
