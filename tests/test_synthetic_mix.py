"""The mixed-interaction synthetic task: its stated ceilings agree with the exact posterior on fresh samples."""
import numpy as np
import pytest

from mmbench import data
from mmbench.data.synthetic_mix import MixedTask


@pytest.mark.parametrize("weights", [{"redundancy": 1.0, "uniqueness": 0.5, "synergy": 1.5}, {"synergy": 1.0}])
def test_bayes_accuracy_is_the_accuracy_of_the_posterior_argmax(weights):
    task = MixedTask(weights, 2, 4, 0.6, "classification", 0.0, seed=0)
    xs, y = task.sample(20_000, np.random.default_rng(9))
    post = task.posterior(xs)
    assert np.allclose(post.sum(1), 1)
    empirical = (post.argmax(1) == y).mean()  # the Bayes classifier's accuracy on fresh data
    ceiling = task.ceiling(seed=0, n=20_000)["bayes_accuracy"]
    assert abs(empirical - ceiling) < 0.015  # ~3 standard errors of two 20k-sample estimates
    # Calibration: among samples with P(y=1|x) ≈ p, the rate of y=1 is p.
    p1 = post[:, 1]
    for lo in (0.1, 0.4, 0.7):
        sel = (p1 > lo) & (p1 < lo + 0.2)
        assert abs(y[sel].mean() - p1[sel].mean()) < 0.05


def test_synergy_only_each_modality_alone_is_at_chance():
    t = data.load("synthetic_mix", weights={"synergy": 1.0}, n_train=4000, n_val=10, n_test=10)
    from sklearn.linear_model import LogisticRegression

    for m in range(2):  # a linear model on one modality cannot beat chance
        clf = LogisticRegression().fit(t.train.xs[m][:3000], t.train.y[:3000])
        assert abs(clf.score(t.train.xs[m][3000:], t.train.y[3000:]) - 0.5) < 0.06


def test_regression_ceiling_matches_the_conditional_mean_on_fresh_samples():
    task = MixedTask({"redundancy": 1.0, "uniqueness": 1.0, "synergy": 0.5}, 3, 3, 0.7, "regression", 0.3, seed=1)
    xs, y = task.sample(30_000, np.random.default_rng(4))
    mean, var = task.conditional(xs)
    mse = ((mean - y) ** 2).mean()
    c = task.ceiling(seed=1, n=30_000)
    assert abs(mse - c["bayes_mse"]) < 0.03 and abs(var.mean() - mse) < 0.03
    assert c["bayes_corr"] == pytest.approx(np.corrcoef(mean, y)[0, 1], abs=0.01)
    assert c["chance_mse"] == pytest.approx(y.var(), rel=0.05) and c["bayes_mae"] is None


def test_dataset_states_target_and_dims():
    t = data.load("synthetic_mix", weights={"redundancy": 1, "synergy": 1}, modalities=3, part_dim=5,
                  target="regression", n_train=50, n_val=20, n_test=20)
    assert t.target == "regression" and t.num_classes == 1 and t.input_dims == [10, 10, 10]
    assert t.train.y.dtype == np.float32 and "bayes_mse" in t.info and "bayes_mse_mc" in t.info
    task = MixedTask({"redundancy": 1, "synergy": 1}, 3, 5, 0.4, "regression", 0.0, seed=0)
    mean, _ = task.conditional(t.test.xs)  # the test split's own Bayes MSE and correlation
    assert t.info["bayes_mse"] == pytest.approx(((mean - t.test.y) ** 2).mean(), rel=1e-6)
    assert t.info["bayes_corr"] == pytest.approx(np.corrcoef(mean, t.test.y)[0, 1], rel=1e-6)
    c = data.load("synthetic_mix", n_test=500)
    task = MixedTask({p: 1.0 for p in ("redundancy", "uniqueness", "synergy")}, 2, 4, 0.4, "classification", 0, 0)
    acc = (task.posterior(c.test.xs).argmax(1) == c.test.y).mean()
    assert c.info["bayes_accuracy"] == pytest.approx(acc) and abs(c.info["bayes_accuracy_mc"] - acc) < 0.06
    assert c.info["bayes_accuracy_se"] == pytest.approx(np.sqrt(acc * (1 - acc) / 500))
    with pytest.raises(Exception, match="unknown part"):
        data.load("synthetic_mix", weights={"synergie": 1})
