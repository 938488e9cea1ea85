"""The suite's typed specs reach the trial whole (ids unchanged, serialised and back), and the step a trial times is
the step fit trains with: the suite's loss and optimizer, weight decay included."""
import json
import pickle

import pytest
import torch

from mmbench import plan
from mmbench.errors import UserError
from mmbench.measure import train as train_mod
from mmbench.plan import Trial, TrialMeasure
from mmbench.run import prepare
from mmbench.suite import LatencySpec, ModelSpec, TrainSpec, load_suite
from mmbench.trial import run_trial

SWEPT = """\
name: specs
task:
  dataset: synthetic
  params: {modalities: 2, dim: 4, n_train: 40, n_val: 20, n_test: 20}
model: {encoder_hidden: [8]}
train: {epochs: 1, batch_size: 16, seeds: [0], loss: cross_entropy, optimizer: adamw, weight_decay: 0.1}
measure:
  device: cpu
  latency: {batch_sizes: [1, 4], warmup_s: 0.0}
  robustness: {levels: [0.0, 1.0]}
sweep:
  dims: [4]
  compile: [false]
methods:
  - method: late
    sweep: {precision: [fp32, bf16]}
"""


def test_trials_carry_the_suites_specs_and_round_trip(write_suite):
    suite = load_suite(write_suite(SWEPT))
    trials = prepare(suite, "cpu").trials
    assert [t.measure.precision for t in trials] == ["fp32", "bf16"]
    for t in trials:
        assert t.model is suite.model and t.train is suite.train  # the suite's own frozen objects
        assert isinstance(t.measure, TrialMeasure) and t.measure.latency == suite.measure.latency
        assert t.measure.device is None and t.device == "cpu"  # one home for the device: Trial.device
        # the id hashes today's canonical dict: the specs dumped, the measure block without its device (and without
        # instructions, which changes no figure)
        legacy = {**t.config(), "model": suite.model.model_dump(), "train": suite.train.model_dump(),
                  "measure": {**suite.measure.model_dump(exclude={"device", "instructions"}),
                              "precision": t.measure.precision,
                              "compile": False}}
        assert t.id == plan.trial_id(legacy)
        assert "device" not in t.to_dict()["measure"]
        for back in (Trial.from_dict(json.loads(json.dumps(t.to_dict()))), pickle.loads(pickle.dumps(t))):
            assert back == t and back.id == t.id
            assert isinstance(back.train, TrainSpec) and isinstance(back.model, ModelSpec)
            assert isinstance(back.measure.latency, LatencySpec) and back.measure.latency.batch_sizes == [1, 4]


@pytest.mark.parametrize("where", ["suite", "method"])
def test_a_swept_measure_value_the_schema_refuses_names_its_place(write_suite, where):
    text = SWEPT.replace("compile: [false]", "compile: [false, 1]") if where == "suite" else \
        SWEPT.replace("precision: [fp32, bf16]", "precision: [fp32, fp8]")
    with pytest.raises(UserError) as err:
        prepare(load_suite(write_suite(text)), "cpu")
    key = "sweep.compile" if where == "suite" else "methods.0.sweep.precision"
    assert err.value.key == key and err.value.line is not None
    assert ("got 1" if where == "suite" else "got 'fp8'") in err.value.message


REGRESSION = """\
name: l1
task:
  dataset: synthetic_mix
  params: {target: regression, n_train: 40, n_val: 20, n_test: 20}
train: {epochs: 1, batch_size: 16, seeds: [0], loss: LOSS, optimizer: adamw, weight_decay: 0.25}
measure:
  device: cpu
  threads: 1
  accuracy: false
  flops: false
  memory: false
  latency: {batch_sizes: [2], max_time_s: 0.01, min_time_s: 0.0, min_samples: 2, warmup: 1, min_block_ms: 0.1,
            rounds: 1}
sweep: {dims: [4]}
methods: [{method: late}]
"""


@pytest.mark.parametrize("loss, used, unused", [("l1", torch.nn.L1Loss, torch.nn.MSELoss),
                                                 ("auto", torch.nn.MSELoss, torch.nn.L1Loss)])
def test_the_timed_training_step_is_fits_step(write_suite, monkeypatch, loss, used, unused):
    """A regression suite with `loss: l1` times its training step with L1 on output column 0 (fit's loss), and with
    the suite's optimizer and weight decay (only timing runs here: no accuracy, FLOPs or memory)."""
    calls = {used: [], unused: []}
    for cls in calls:
        real = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, out, y, real=real, cls=cls: (
            calls[cls].append((tuple(out.shape), tuple(y.shape))), real(self, out, y))[1])
    made = []

    def adamw(params, **kw):
        made.append(kw)
        return torch.optim.AdamW(params, **kw)

    monkeypatch.setitem(train_mod.OPTIMIZERS, "adamw", adamw)
    prepared = prepare(load_suite(write_suite(REGRESSION.replace("LOSS", loss))), "cpu")
    (trial,) = prepared.trials
    row = run_trial(trial, next(iter(prepared.tasks.values()))).row
    assert row["status"] == "ok", row["error"]
    assert "train_step_ms_b2" in row
    assert calls[used] and not calls[unused]
    assert set(calls[used]) == {((2,), (2,))}  # column 0 of the (B, 1) output against (B,) targets, as fit does
    assert made == [{"lr": trial.train.lr, "weight_decay": 0.25, "fused": True}]  # one optimizer for the timed steps


def test_fit_takes_the_specs_optimizer_and_loss(monkeypatch):
    """fit builds its step with training_step too: the spec's optimizer settings and loss."""
    import numpy as np

    from mmbench.data.registry import Split
    from mmbench.model import build

    made = []
    monkeypatch.setitem(train_mod.OPTIMIZERS, "sgd",
                        lambda params, **kw: made.append(kw) or torch.optim.SGD(params, **kw))
    rng = np.random.default_rng(0)
    split = lambda n: Split([rng.normal(size=(n, 3)).astype(np.float32)] * 2,  # noqa: E731
                            rng.normal(size=n).astype(np.float32))
    spec = TrainSpec(epochs=1, batch_size=8, lr=0.01, optimizer="sgd", weight_decay=0.5, loss="l1")
    train_mod.fit(lambda: build("late", {}, [3, 3], [4, 4], 1), split(16), split(8), spec, seed=0,
                  target="regression")
    assert made == [{"lr": 0.01, "weight_decay": 0.5, "fused": True}]
    step = train_mod.training_step(torch.nn.Linear(1, 1), spec, "regression")
    assert step.loss_fn(torch.zeros(2, 1), torch.tensor([1.0, -3.0])).item() == pytest.approx(2.0)  # L1, not MSE 5
