"""Seeds trained together (one vectorised model) give each seed what it gets alone: its own initialisation, batch
order and best epoch; what cannot be vectorised trains one by one and says why."""
import numpy as np
import pytest
import torch
from torch import nn

from mmbench.data.registry import Split
from mmbench.measure import seed_batched
from mmbench.measure.seeds_together import fit_seeds, why_one_by_one
from mmbench.measure.train import NonFiniteLoss, fit
from mmbench.methods import registry
from mmbench.model import FusionModel, build
from mmbench.suite import TrainSpec


def _task(n, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, 5)).astype(np.float32) for _ in range(2)]
    y = ((xs[0][:, 0] > 0) ^ (xs[1][:, 0] > 0)).astype(np.int64) + 2 * (xs[0][:, 1] > 0.5)
    return Split(xs, y.astype(np.int64))


TRAIN, VAL = _task(300, 0), _task(150, 1)
SPEC = TrainSpec(epochs=4, batch_size=64, lr=0.01, seeds=[0, 1, 2])
VECTOR = [m for m in registry.available() if registry.info(m).inputs == "vectors"
          and registry.info(m).min_modalities <= 2 <= (registry.info(m).max_modalities or 2)]


# Methods with a signed square root (gradient 1/(2√|z|), unbounded near 0) amplify float rounding: trained 4 epochs
# alone, inputs one ulp apart move their weights by 0.08-0.11 (lmf, tfn: 1e-7). No implementation can hold them to
# float tolerance over epochs, so they are held to it over one full-batch SGD step (Adam's first step, g/|g|, also
# amplifies rounding where a gradient is near 0).
# Tucker's core has the same near-0 gradients: over 4 epochs the vectorised and sequential runs of one seed part by
# 1.1e-5 in its core in the q0-first order and by 5.6e-5 in the outer-product order (one GEMM over B·mm² products),
# with losses equal to 1e-7.
CHAOTIC = {"mlb", "mfb", "mfh", "mcb", "block", "block_tucker", "tucker"}


def _make(method):
    return lambda: build(method, {}, [5, 5], [6, 6], 4)


def _same(seq, tog):
    for (m1, i1), (m2, i2) in zip(seq, tog):
        assert (i2.best_epoch, i2.epochs_run) == (i1.best_epoch, i1.epochs_run)
        assert i2.val_score == pytest.approx(i1.val_score, abs=1e-9)
        assert i2.trained_loss == pytest.approx(i1.trained_loss, rel=1e-4)
        assert i2.epoch_losses == pytest.approx(i1.epoch_losses, rel=1e-4)
        for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), k


@pytest.mark.parametrize("method", VECTOR)
def test_each_vectorised_method_gives_every_seed_its_own_sequential_result(method):
    spec = SPEC if method not in CHAOTIC else SPEC.model_copy(
        update={"epochs": 1, "batch_size": len(TRAIN.y), "optimizer": "sgd"})
    torch.manual_seed(0)
    why = why_one_by_one(_make(method)(), spec.seeds, TRAIN, "fp32")
    tog, how = fit_seeds(_make(method), TRAIN, VAL, spec, spec.seeds)
    seq = [fit(_make(method), TRAIN, VAL, spec, seed=s) for s in spec.seeds]
    if why:
        assert how == f"one by one: {why}"
    else:
        assert how == ("together (vmap)" if seed_batched.why_not(_make(method)()) else "together (batched)"), how
    _same(seq, tog)


def test_the_main_jobs_methods_are_seed_batched():
    for method in ("tfn", "lmf", "early", "late", "additive", "hybrid", "gmu"):
        assert seed_batched.why_not(_make(method)()) == "", method
    assert seed_batched.why_not(_make("mcb")()).startswith("no seed-batched forward")


# Each seed-batched method's variants (hidden layers, learned weights, three modalities, TFN's whole outer product;
# early fusion with a hidden encoder layer too) under each optimizer with weight decay: each seed's fused update over
# the stacked parameters is its own.
VARIANTS = {"early(mlp)": ("early", {"hidden": 8}, 2), "late(learned)": ("late", {"weighting": "learned"}, 2),
            "tfn 3 modalities": ("tfn", {}, 3), "tfn whole product": ("tfn", {"split": 0}, 3),
            "lmf 3 modalities": ("lmf", {"rank": 3}, 3), "gmu softmax": ("gmu", {"hidden": 6, "gate": "softmax"}, 3),
            "additive relu": ("additive", {"activation": "relu"}, 3), "hybrid": ("hybrid", {}, 3)}
TRAIN3, VAL3 = (Split(s.xs + [s.xs[0][:, ::-1].copy()], s.y) for s in (TRAIN, VAL))


@pytest.mark.parametrize("optimizer,decay", [("adam", 0.01), ("adamw", 0.1), ("sgd", 0.01)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_seed_batched_variants_under_each_optimizer_match_their_sequential_fits(variant, optimizer, decay):
    method, hp, m = VARIANTS[variant]
    hp = dict(hp)
    split = hp.pop("split", None)

    def make():
        model = build(method, hp, [5] * m, [6] * m, 4, [7] if method == "early" else [])
        if split is not None:
            model.fusion.split = split
        return model

    train, val = (TRAIN, VAL) if m == 2 else (TRAIN3, VAL3)
    spec = SPEC.model_copy(update={"optimizer": optimizer, "weight_decay": decay})
    tog, how = fit_seeds(make, train, val, spec, spec.seeds)
    assert how == "together (batched)"
    _same([fit(make, train, val, spec, seed=s) for s in spec.seeds], tog)


def test_without_vmap_a_method_that_is_not_seed_batched_trains_one_by_one():
    tog, how = fit_seeds(_make("mcb"), TRAIN, VAL, SPEC, SPEC.seeds, vmap_too=False)
    assert how == "one by one: no seed-batched forward for MCB"
    _same([fit(_make("mcb"), TRAIN, VAL, SPEC, seed=s) for s in SPEC.seeds], tog)
    assert fit_seeds(_make("mcb"), TRAIN, VAL, SPEC, SPEC.seeds, vmap_too=False, fit_alone=False)[0] == [None] * 3


def test_each_seed_stops_at_its_own_epoch():
    spec = TrainSpec(epochs=12, batch_size=64, lr=0.05, seeds=[0, 1, 2, 3], patience=2)
    tog, how = fit_seeds(_make("lmf"), TRAIN, VAL, spec, spec.seeds)
    seq = [fit(_make("lmf"), TRAIN, VAL, spec, seed=s) for s in spec.seeds]
    assert how == "together (batched)"
    _same(seq, tog)
    assert len({i.epochs_run for _, i in seq}) > 1  # the seeds did stop at different epochs


def test_what_cannot_be_vectorised_trains_one_by_one_and_says_why():
    assert why_one_by_one(_make("lmf")(), [0], TRAIN, "fp32") == "one seed"
    assert "own objective" in why_one_by_one(_make("contrastive")(), [0, 1], TRAIN, "fp32")
    assert "batch normalisation" in why_one_by_one(_make("aff")(), [0, 1], TRAIN, "fp32")
    assert "precision" in why_one_by_one(_make("lmf")(), [0, 1], TRAIN, "bf16")

    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(10, 4)

        def forward(self, xs):
            return self.lin(torch.cat(xs, -1))

    tog, how = fit_seeds(Mine, TRAIN, VAL, SPEC, SPEC.seeds)
    assert how.startswith("one by one: a user's module")
    _same([fit(Mine, TRAIN, VAL, SPEC, seed=s) for s in SPEC.seeds], tog)


def test_a_nan_in_one_seed_ends_the_trial():
    class NanSeed1(FusionModel):  # one seed's initialisation makes the loss NaN: built-in classes, so vectorised
        pass

    def make():
        m = build("early", {}, [5, 5], [6, 6], 4)
        if torch.initial_seed() == 1:
            with torch.no_grad():
                m.fusion.net.bias.fill_(float("nan"))
        return m

    with pytest.raises(NonFiniteLoss, match="seed 1: loss became nan at epoch 1"):
        fit_seeds(make, TRAIN, VAL, SPEC, SPEC.seeds)


def test_a_trial_with_seeds_together_gives_the_row_of_one_by_one_and_keeps_its_id():
    from mmbench.data.registry import TaskData
    from mmbench.plan import Trial, TrialMeasure
    from mmbench.suite import ModelSpec
    from mmbench.trial import run_trial

    task = TaskData("t", TRAIN, VAL, _task(150, 2), ["a", "b"], 4)

    def trial(**train):
        return Trial(method="lmf", hparams={"rank": 2}, dims=(6, 6), task={"dataset": "t", "params": {}},
                     model=ModelSpec(), train=TrainSpec(epochs=3, batch_size=64, lr=0.01, seeds=[0, 1], **train),
                     measure=TrialMeasure(flops=False, memory=False, latency=None), device="cpu", label="lmf",
                     task_label="t")

    alone, together, vmapped = trial(seeds_together=False), trial(), trial(seeds_together=True)
    assert together.id == alone.id == vmapped.id
    a, b, c = run_trial(alone, task).row, run_trial(together, task).row, run_trial(vmapped, task).row
    assert (a["seeds_trained"], b["seeds_trained"], c["seeds_trained"]) == (
        "one by one", "together (batched)", "together (batched)")  # the default: batched where it applies
    for key in ("acc_mean", "acc_std", "f1_mean", "best_epoch_mean", "did_not_learn"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key


def test_the_seeds_times_add_up_to_the_joint_time():
    spec = TrainSpec(epochs=12, batch_size=64, lr=0.05, seeds=[0, 1, 2, 3], patience=2)
    tog, _ = fit_seeds(_make("lmf"), TRAIN, VAL, spec, spec.seeds)
    for _, info in tog:
        assert len(info.epoch_times_s) == info.epochs_run and info.train_time_s == pytest.approx(
            sum(info.epoch_times_s))
    longest = max(i.epochs_run for _, i in tog)
    # each epoch's time is shared by the seeds that ran it: the first epoch, run by all, equally
    assert len({round(i.epoch_times_s[0], 12) for _, i in tog}) == 1 and longest > min(i.epochs_run for _, i in tog)


@pytest.mark.parametrize("loss", ["auto", "l1"])
def test_a_regression_target_trains_seed_batched_as_alone(loss):
    train, val = (Split(s.xs, (s.xs[0][:, 0] * s.xs[1][:, 1]).astype(np.float32)) for s in (TRAIN, VAL))
    make = lambda: build("lmf", {"rank": 2}, [5, 5], [6, 6], 1)  # noqa: E731
    spec = SPEC.model_copy(update={"loss": loss})
    tog, how = fit_seeds(make, train, val, spec, spec.seeds, target="regression")
    assert how == "together (batched)"
    _same([fit(make, train, val, spec, seed=s, target="regression") for s in spec.seeds], tog)


@pytest.mark.parametrize("method,hp,batch", [
    ("mlb", {"mm": 8}, 7), ("linear_sum", {"mm": 8, "normalize": True}, 7), ("mfb", {"mm": 4, "k": 3}, 7),
    ("mfh", {"mm": 4, "k": 3}, 7), ("tucker", {"mm": 6}, 3), ("tucker", {"mm": 6}, 40), ("mutan", {"mm": 8}, 3),
    ("mutan", {"mm": 8, "rank": 3}, 64), ("block", {"mm": 10, "chunks": 4, "rank": 2}, 3),
    ("block", {"mm": 17, "chunks": 2, "rank": 2}, 200), ("block_tucker", {"mm": 10, "chunks": 4}, 3)])
def test_bilinear_methods_are_seed_batched_and_give_each_seed_its_own_forward(method, hp, batch):
    """Each seed's rows through the joint model are its own model's outputs, in training and without gradients
    (where MFB alone pools by bmm; Tucker's and BlockTucker's own orders change with the batch, the joint's is the
    outer product; MUTAN's and BLOCK's sides are composed first from a batch at which that needs a fraction of the
    FLOPs, the joint's alike; BLOCK's mm 10 in 4 chunks is two groups, 3 chunks of 3 and one of 1, its mm 17 in 2
    two groups of one chunk, composed at batch 200)."""
    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(build(method, hp, [5, 5], [6, 6], 4))
    assert seed_batched.why_not(models[0]) == ""
    if method in ("mutan", "block"):  # both of their orders are held: in turn at a small batch, composed at a large
        assert models[0].fusion.compose_first(batch, 6) == (batch > 50)
    joint = seed_batched.SeedBatched(models)
    xs = [torch.randn(3, batch, 5) for _ in range(2)]
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out = joint(xs)
            for j, m in enumerate(models):
                assert torch.allclose(out[j], m([x[j] for x in xs]), rtol=1e-5, atol=1e-6), (grad, j)


class _Stop(Exception):
    pass


def test_a_reported_curve_stops_the_seeds_together_as_it_would_one_by_one():
    """on_epoch (tuning's pruner) sees the first seed's curve, epoch by epoch, the one fit reports; what it raises
    stops every seed and reaches the caller as raised. A later seed that diverges counts only if the first runs to
    its end, as one by one, where it would have been trained after it."""
    def make():
        model = _make("lmf")()
        if torch.initial_seed() == 1:  # seed 1 diverges at its first step
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return model

    def run(together, stop_at=None):
        curve = []

        def on_epoch(epoch, score):
            curve.append((epoch, score))
            if epoch == stop_at:
                raise _Stop()
        spec = SPEC.model_copy(update={"seeds_together": None if together else False})
        try:
            if together:
                fit_seeds(make, TRAIN, VAL, spec, spec.seeds, on_epoch=on_epoch)
            else:
                for i, s in enumerate(spec.seeds):
                    fit(make, TRAIN, VAL, spec, seed=s, on_epoch=on_epoch if i == 0 else None)
        except (_Stop, NonFiniteLoss) as exc:
            return type(exc).__name__, curve
        return "complete", curve

    stopped, alone = run(True, stop_at=2), run(False, stop_at=2)
    assert stopped[0] == "_Stop" and stopped == alone  # seed 1's divergence never counted: seed 0 was stopped first
    assert [e for e, _ in stopped[1]] == [1, 2]
    diverged, alone = run(True), run(False)
    assert diverged[0] == alone[0] == "NonFiniteLoss"  # seed 0's whole curve, then seed 1's divergence
    assert [e for e, _ in diverged[1]] == [e for e, _ in alone[1]]
    assert [v for _, v in diverged[1]] == pytest.approx([v for _, v in alone[1]], abs=1e-9)
    assert len(diverged[1]) == SPEC.epochs
    with pytest.raises(NonFiniteLoss, match="seed 1"):  # with no curve reported, it ends the fits at once
        fit_seeds(make, TRAIN, VAL, SPEC, SPEC.seeds)
