"""fit's loop at the speed of a hand-written one gives the results of the loop it replaced: the same seed, the same
validation and test accuracy (fused optimizer, losses read once per epoch, best weights copied into buffers)."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmbench.data.registry import Split
from mmbench.measure import train as train_mod
from mmbench.measure.train import NonFiniteLoss, fit, optimizer_impl, outputs, tensors, training_step
from mmbench.model import build
from mmbench.suite import TrainSpec


def _parity(n, seed, d=4):
    """Three modalities whose label is the parity of their first features' signs (synergy), learnable by TFN."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, d)).astype(np.float32) for _ in range(3)]
    y = ((xs[0][:, 0] > 0) ^ (xs[1][:, 0] > 0) ^ (xs[2][:, 0] > 0)).astype(np.int64)
    return Split(xs, y)


def _as_before(make, train, val, spec, seed):
    """The loop fit ran before: torch's default (unfused) optimizer, the loss read with .item() after every step,
    a deep copy of the state at each better epoch."""
    torch.manual_seed(seed)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    (xtr, ytr), (xva, yva) = tensors(train, "cpu"), tensors(val, "cpu")
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    best = (-math.inf, 0, copy.deepcopy(model.state_dict()))
    for epoch in range(1, spec.epochs + 1):
        model.train()
        order = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), spec.batch_size):
            idx = order[i:i + spec.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model([x[idx] for x in xtr]), ytr[idx])
            loss.backward()
            opt.step()
            assert math.isfinite(loss.item())
        score = (outputs(model, xva).argmax(1) == yva).float().mean().item()
        if score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return model, best[0], best[1]


@pytest.mark.parametrize("method,hp", [("tfn", {}), ("lmf", {"rank": 4}), ("early", {})])
def test_the_same_seed_gives_the_results_of_the_loop_it_replaced(method, hp):
    train, val, test = _parity(600, 0), _parity(300, 1), _parity(300, 2)
    make = lambda: build(method, hp, [4, 4, 4], [6, 6, 6], 2)  # noqa: E731
    spec = TrainSpec(epochs=6, batch_size=64, lr=0.01)
    model, info = fit(make, train, val, spec, seed=3)
    ref, ref_val, ref_epoch = _as_before(make, train, val, spec, seed=3)
    assert info.optimizer_impl == "fused"  # this torch has a fused CPU Adam: the test compares fused with unfused
    assert info.best_epoch == ref_epoch and abs(info.val_score - ref_val) <= 1 / len(val.y) + 1e-9
    xte, yte = tensors(test, "cpu")
    acc = (outputs(model, xte).argmax(1) == yte).float().mean().item()
    ref_acc = (outputs(ref, xte).argmax(1) == yte).float().mean().item()
    assert abs(acc - ref_acc) <= 1 / len(test.y) + 1e-9
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), k


class _NanFrom(nn.Module):
    """Finite for its first ``steps`` training forwards, NaN after: the loss turns NaN in the middle of an epoch."""

    def __init__(self, steps):
        super().__init__()
        self.lin, self.steps, self.calls = nn.Linear(12, 2), steps, 0

    def forward(self, xs):
        out = self.lin(torch.cat(xs, -1))
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return out * float("nan")
        return out


def test_a_nan_mid_epoch_stops_training_at_that_epoch():
    train, val = _parity(200, 0), _parity(100, 1)  # 4 steps an epoch: step 10 is in epoch 3
    with pytest.raises(NonFiniteLoss, match="loss became nan at epoch 3"):
        fit(lambda: _NanFrom(9), train, val, TrainSpec(epochs=6, batch_size=50, lr=0.01), seed=0)


def test_the_best_epoch_is_kept_not_the_last():
    train, val = _parity(600, 0), _parity(300, 1)
    make = lambda: build("tfn", {}, [4, 4, 4], [6, 6, 6], 2)  # noqa: E731
    model, info = fit(make, train, val, TrainSpec(epochs=8, batch_size=64, lr=0.05), seed=1)
    xva, yva = tensors(val, "cpu")
    assert (outputs(model, xva).argmax(1) == yva).float().mean().item() == pytest.approx(info.val_score)


def test_an_optimizer_without_a_fused_kernel_falls_back_and_says_so(monkeypatch):
    class Unfused(torch.optim.SGD):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` is not supported here")
            super().__init__(params, **kw)

    monkeypatch.setitem(train_mod.OPTIMIZERS, "sgd", Unfused)
    step = training_step(nn.Linear(3, 2), TrainSpec(optimizer="sgd"), "classification")
    opt = step.optimizer()
    assert type(opt) is Unfused and optimizer_impl(opt) == "for-loop"
    assert optimizer_impl(training_step(nn.Linear(3, 2), TrainSpec(), "classification").optimizer()) == "fused"
