"""Training and evaluation: early stopping, regression/affect metrics by hand, retrieval, robustness, NaN status."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from mmbench.data.registry import Split, TaskData
from mmbench.measure import metrics, robustness
from mmbench.measure.train import NonFiniteLoss, evaluate_seed, fit
from mmbench.model import FusionModel, build
from mmbench.plan import Trial, TrialMeasure
from mmbench.suite import ModelSpec, TrainSpec
from mmbench.trial import run_trial


def _blobs(n, seed, shift=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    xs = [(rng.normal(size=(n, 3)) + shift * y[:, None]).astype(np.float32) for _ in range(2)]
    return Split(xs, y.astype(np.int64))


def _make(method="early", out=2, **hp):
    return lambda: build(method, hp, [3, 3], [4, 4], out)


# --- early stopping and selection -----------------------------------------------------------------------------------

def test_patience_stops_after_that_many_epochs_without_improvement():
    train, val = _blobs(200, 0), _blobs(100, 1)
    # lr 0: the validation score never improves after epoch 1, so training stops at 1 + patience.
    _, info = fit(_make(), train, val, TrainSpec(epochs=30, batch_size=50, lr=1e-12, patience=3), seed=0)
    assert info.best_epoch == 1 and info.epochs_run == 4 and len(info.epoch_times_s) == 4
    _, info = fit(_make(), train, val, TrainSpec(epochs=6, batch_size=50, lr=1e-12), seed=0)  # no patience: every epoch
    assert info.epochs_run == 6


def test_kept_checkpoint_is_the_best_validation_epoch(monkeypatch):
    """Validation scores are scripted: the returned model must carry the weights of the epoch that scored best."""
    from mmbench.measure import train as train_mod

    scripted = iter([0.5, 0.9, 0.6, 0.7])
    snapshots = []
    real = train_mod.outputs

    def fake_outputs(model, xs, batch_size=4096, masks=None, precision="fp32"):
        out = real(model, xs, batch_size, masks=masks, precision=precision)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        acc = next(scripted)
        y = torch.as_tensor(val.y)
        k = int(round(acc * len(y)))
        pred = torch.where(torch.arange(len(y)) < k, y, 1 - y)  # exactly acc correct
        return nn.functional.one_hot(pred, 2).float() + 0 * out

    train, val = _blobs(200, 0), _blobs(100, 1)
    monkeypatch.setattr(train_mod, "outputs", fake_outputs)
    model, info = fit(_make(), train, val, TrainSpec(epochs=4, batch_size=50, lr=0.05), seed=0)
    assert info.best_epoch == 2 and info.val_score == pytest.approx(0.9)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


# --- metrics by hand ------------------------------------------------------------------------------------------------

def test_regression_metrics_match_hand_computation():
    pred, y = np.array([1.0, 2.0, 4.0]), np.array([1.5, 1.0, 4.0])
    m = metrics.regression(pred, y)
    assert m["mae"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["mse"] == pytest.approx((0.25 + 1.0) / 3)
    # Pearson by hand: pred mean 7/3, y mean 13/6.
    dp, dy = pred - 7 / 3, y - 13 / 6
    assert m["corr"] == pytest.approx((dp * dy).sum() / math.sqrt((dp ** 2).sum() * (dy ** 2).sum()))
    assert metrics.regression(np.ones(3), y)["corr"] == 0.0  # a constant prediction


def test_f1_scores_equal_sklearns_for_any_labels():
    """The written-out F1 (mmbench/measure/metrics.py) against sklearn's, with absent classes, a class predicted but
    never true, all wrong and all right."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, k, n), rng.integers(0, k, n), k) for k, n in ((2, 50), (5, 40), (7, 9), (10, 300))]
    cases += [(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), 2), (np.array([2, 2, 0]), np.array([2, 2, 0]), 4),
              (np.array([3, 3, 3]), np.array([0, 1, 2]), 4)]
    for pred, y, k in cases:
        assert metrics.macro_f1(pred, y, k) == pytest.approx(
            f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0), abs=1e-12)
        assert metrics.weighted_f1(pred, y, k) == pytest.approx(
            f1_score(y, pred, labels=list(range(k)), average="weighted", zero_division=0), abs=1e-12)


def test_affect_metrics_match_hand_computation():
    y = np.array([2.4, -1.2, 0.0, 0.6, -2.8])
    pred = np.array([1.6, 0.4, -0.2, 0.3, -3.7])
    m = metrics.affect(pred, y)
    # Non-zero truths: 2.4, -1.2, 0.6, -2.8 → signs +,-,+,- ; predicted +,+,+,- → 3 of 4.
    assert m["acc2"] == pytest.approx(0.75)
    # 7 classes: round(clip): truth 2,-1,0,1,-3 ; pred 2,0,-0,0,-3 → matches at 0, 2, 4 → 3/5.
    assert m["acc7"] == pytest.approx(0.6)
    assert m["mae"] == pytest.approx(np.abs(pred - y).mean())
    # Weighted F1 on the non-zero binary task: positives (2 true, F1 = 2·2/(2·2+1+0) = 0.8), negatives
    # (2 true, 1 predicted correctly: F1 = 2·1/(2·1+0+1) = 2/3); weights 2/4 each.
    assert m["f1"] == pytest.approx(0.5 * 0.8 + 0.5 * 2 / 3)


def test_recall_at_k_by_hand():
    q = np.eye(3)
    g = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])  # query 0 → item 0 first; 1 and 2 swapped
    r = metrics.recall_at_k(q, g, ks=(1, 2))
    assert r[1] == pytest.approx(1 / 3) and r[2] == pytest.approx(1.0)


# --- a coordinated method: retrieval through the trainer and the trial -----------------------------------------------

class Coordinated(nn.Module):
    """A tiny dual encoder: per-modality L2-normalised projections, scores from the first modality."""

    def __init__(self, dims, out_dim):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, 4) for d in dims)
        self.head = nn.Linear(dims[0], out_dim)

    def embeddings(self, xs):
        return [nn.functional.normalize(p(x), dim=-1) for p, x in zip(self.proj, xs)]

    def forward(self, xs):
        return self.head(xs[0])


class Broken(nn.Module):
    """Outputs NaN once trained a step: the trial must end as status nan, not crash the suite."""

    def __init__(self, dims, out_dim):
        super().__init__()
        self.lin = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        return self.lin(torch.cat(xs, -1)) * float("nan")


def _task(n_train=200, target="classification"):
    tr, va, te = _blobs(n_train, 0), _blobs(100, 1), _blobs(120, 2)
    # Paired views: view 1 is view 0 plus small noise, so row i of one view retrieves row i of the other.
    rng = np.random.default_rng(5)
    for s in (tr, va, te):
        s.xs[1] = (s.xs[0] + 0.01 * rng.normal(size=s.xs[0].shape)).astype(np.float32)
    return TaskData("t", tr, va, te, ["a", "b"], 2, info={"chance_accuracy": 0.5})


def _trial(method, **measure):
    m = TrialMeasure(**{"flops": False, "memory": False, "latency": None, **measure})
    return Trial(method=method, hparams={}, dims=(4, 4), task={"dataset": "t", "params": {}}, model=ModelSpec(),
                 train=TrainSpec(epochs=3, batch_size=64, lr=0.01, seeds=[0, 1]), measure=m, device="cpu",
                 label=method, task_label="t")


def test_retrieval_columns_for_a_method_with_embeddings():
    result = run_trial(_trial("tests.test_training:Coordinated"), _task())
    row = result.row
    assert row["status"] == "ok", row["error"]
    for k in (1, 5, 10):
        for d in ("fwd", "bwd"):
            assert 0.0 <= row[f"recall{k}_{d}_mean"] <= 1.0
        assert row[f"recall{k}_fwd_mean"] <= row[f"recall{min(k * 5, 10)}_fwd_mean"] + 1e-12
    assert "recall1_0to1" in result.raw["seeds"][0]["test"]
    assert "recall1_fwd_mean" not in run_trial(_trial("early"), _task()).row  # no embeddings, no retrieval


def test_nan_loss_is_a_trial_status():
    with pytest.raises(NonFiniteLoss):
        fit(lambda: FusionModel([3, 3], Broken([4, 4], 2), [4, 4]), _blobs(64, 0), _blobs(32, 1),
            TrainSpec(epochs=2, batch_size=32, lr=0.01), seed=0)
    row = run_trial(_trial("tests.test_training:Broken"), _task()).row
    assert row["status"] == "nan" and "loss became nan" in row["error"]


def test_trial_row_has_metrics_over_seeds_and_times():
    row = run_trial(_trial("tfn"), _task()).row
    assert row["status"] == "ok" and row["n_seeds"] == 2
    for col in ("acc_mean", "acc_std", "f1_mean", "train_time_s", "epoch_time_s", "epochs_run_mean"):
        assert col in row
    assert row["epochs_run_mean"] == 3 and row["epoch_time_s"] > 0 and row["chance_accuracy"] == 0.5
    # the test split's binomial standard error beside the accuracy (120 test samples)
    assert row["acc_se"] == pytest.approx(np.sqrt(row["acc_mean"] * (1 - row["acc_mean"]) / 120))
    t1 = _trial("early")
    one = run_trial(replace(t1, train=t1.train.model_copy(update={"seeds": [0]})), _task()).row
    assert one["n_seeds"] == 1 and one["acc_std"] is None  # one seed has no spread: empty, not 0


def test_regression_training_reports_mae_and_correlation():
    rng = np.random.default_rng(0)

    def split(n):
        xs = [rng.normal(size=(n, 3)).astype(np.float32) for _ in range(2)]
        return Split(xs, (xs[0][:, 0] + xs[1][:, 1]).astype(np.float32))

    model, info = fit(_make(out=1), split(400), split(100), TrainSpec(epochs=30, batch_size=50, lr=0.02, loss="mse"),
                      seed=0, target="regression")
    score = evaluate_seed(model, info, split(100), 0, "regression", 1, "", "cpu")
    assert set(score.test) == {"mae", "mse", "corr"}
    assert score.test["corr"] > 0.9 and score.test["mae"] < 0.5


# --- robustness -----------------------------------------------------------------------------------------------------

def test_robustness_curve_at_noise_zero_is_clean_accuracy_and_falls_with_noise():
    from mmbench.measure.train import fit as fit_, outputs, tensors

    task = _task(400)
    model, _ = fit_(_make(), task.train, task.val, TrainSpec(epochs=10, batch_size=50, lr=0.02), seed=0)
    xte, yte = tensors(task.test, "cpu")

    def acc(xs):
        return (outputs(model, xs).argmax(1) == yte).float().mean().item()

    scales = [robustness.feature_scale(x) for x in task.train.xs]
    levels = [0.0, 0.5, 1.0, 4.0, 16.0]
    curve = robustness.curves(acc, xte, scales, levels, missing=True, seed=0)
    clean = acc(xte)
    for m in ("0", "1"):
        c = curve[m]
        assert c["levels"] == levels and len(c["noise"]) == len(levels)
        assert c["noise"][0] == clean  # noise level 0 is the clean input
        assert c["noise"][-1] < clean - 0.05  # heavy noise hurts
    both = robustness.curves(acc, xte, scales, levels, seed=0)
    assert both["0"]["noise"] == curve["0"]["noise"]  # seeded: the same draws every time
    row = robustness.summarise(curve, ["a", "b"])
    s = np.array(curve["0"]["noise"])
    by_hand = sum((s[i] + s[i + 1]) / 2 * (levels[i + 1] - levels[i]) for i in range(4)) / 16.0
    assert row["rob_a_auc"] == pytest.approx(by_hand) and row["rob_a_rel"] == pytest.approx(by_hand / clean)
    assert row["rob_a_missing"] == curve["0"]["missing"]


def test_robustness_columns_in_a_trial_row():
    rob = {"levels": [0.0, 0.5, 1.0], "missing": True, "seed": 0}
    result = run_trial(_trial("late", robustness=rob), _task())
    row = result.row
    assert row["status"] == "ok", row["error"]
    assert row["rob_metric"] == "acc"
    for name in ("a", "b"):
        for part in ("auc", "rel", "missing"):
            assert f"rob_{name}_{part}_mean" in row
    series = result.raw["robustness"]
    assert len(series) == 2 and series[0]["modalities"] == ["a", "b"] and len(series[0]["0"]["noise"]) == 3
    # At noise 0 the curve is the clean test accuracy of that seed.
    assert series[0]["0"]["noise"][0] == pytest.approx(result.raw["seeds"][0]["test"]["acc"])
