"""The synthetic generator: determinism, its Bayes accuracy, and the interaction it promises."""
import numpy as np
import pytest
import torch
from scipy.stats import norm

from mmbench.data import load
from mmbench.data.synthetic import SyntheticTask


def _linear_probe_accuracy(train, test, modalities) -> float:
    """Logistic regression on the concatenation of the chosen modalities' raw features."""
    torch.manual_seed(0)
    xtr = torch.as_tensor(np.concatenate([train.xs[m] for m in modalities], 1))
    xte = torch.as_tensor(np.concatenate([test.xs[m] for m in modalities], 1))
    k = int(train.y.max()) + 1
    lin = torch.nn.Linear(xtr.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)
    ytr = torch.as_tensor(train.y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr), ytr)
        loss.backward()
        return loss

    opt.step(closure)
    return (lin(xte).argmax(1).numpy() == test.y).mean()


def test_deterministic_by_seed():
    a, b = load("synthetic", seed=3, n_train=50), load("synthetic", seed=3, n_train=50)
    c = load("synthetic", seed=4, n_train=50)
    assert all(np.array_equal(x, y) for x, y in zip(a.train.xs, b.train.xs))
    assert np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.xs[0], c.train.xs[0])


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("noise", [0.3, 0.5])
def test_synergy_bayes_accuracy_matches_closed_form_for_parity(m, noise):
    """K = 2: each bit is misread with p = Φ(-√2/(2σ)); parity of M bits is right with (1 + (1-2p)^M)/2."""
    task = SyntheticTask("synergy", [8] * m, 2, noise, seed=0)
    got, se = task.bayes_accuracy(seed=0, n=100_000)
    p = norm.cdf(-np.sqrt(2) / (2 * noise))
    assert abs(got - (1 + (1 - 2 * p) ** m) / 2) < 4 * se + 1e-3


@pytest.mark.parametrize("interaction", ["redundancy", "uniqueness", "synergy"])
def test_the_ceiling_is_the_bayes_classifier_on_the_scored_test_split(interaction):
    d = load("synthetic", interaction=interaction, num_classes=3, n_test=4000)
    task = SyntheticTask(interaction, d.input_dims, 3, 0.4, 0)
    acc = (task.posterior(d.test.xs).argmax(1) == d.test.y).mean()
    assert d.info["bayes_accuracy"] == pytest.approx(acc, abs=1e-12)  # the very split that is scored
    assert d.info["bayes_accuracy_se"] == pytest.approx(np.sqrt(acc * (1 - acc) / 4000))
    # its expectation, by Monte Carlo on fresh samples, beside it: within the split's sampling error
    assert abs(d.info["bayes_accuracy_mc"] - acc) < 4 * d.info["bayes_accuracy_se"]
    assert d.info["bayes_accuracy_mc_se"] < d.info["bayes_accuracy_se"] / 5
    assert d.info["bayes_accuracy"] > d.info["chance_accuracy"] + 0.2
    small = load("synthetic", interaction=interaction, num_classes=3, n_test=200)  # another split, another figure
    b = small.info["bayes_accuracy"]
    assert small.info["bayes_accuracy_mc"] == d.info["bayes_accuracy_mc"]
    assert small.info["bayes_accuracy_se"] == pytest.approx(np.sqrt(b * (1 - b) / 200))


def test_synergy_defeats_linear_models_redundancy_needs_one_modality():
    syn = load("synthetic", interaction="synergy", n_train=3000)
    assert abs(_linear_probe_accuracy(syn.train, syn.test, [0, 1, 2]) - 0.5) < 0.05   # concatenation: chance
    assert abs(_linear_probe_accuracy(syn.train, syn.test, [0]) - 0.5) < 0.05         # one modality: chance
    red = load("synthetic", interaction="redundancy", noise=0.4)
    assert _linear_probe_accuracy(red.train, red.test, [0]) > 0.9                     # one modality suffices
    uni = load("synthetic", interaction="uniqueness")
    one = _linear_probe_accuracy(uni.train, uni.test, [0])
    allm = _linear_probe_accuracy(uni.train, uni.test, [0, 1, 2])
    assert allm > one + 0.1 and abs(allm - uni.info["bayes_accuracy"]) < 0.03         # additive parts


def test_classes_balanced_and_labels_in_range():
    d = load("synthetic", interaction="uniqueness", num_classes=4, n_train=4000)
    counts = np.bincount(d.train.y, minlength=4)
    assert counts.min() > 800 and d.train.y.max() == 3
