"""Synthetic sequence tasks, and sequence methods through the model, trainer and trial measurement path."""
import numpy as np
import pytest
import torch

from mmbench import methods
from mmbench.data import load
from mmbench.data.synthetic import SyntheticTask, envelope
from mmbench.errors import UserError
from mmbench.measure.train import evaluate_seed, fit
from mmbench.model import FusionModel, build, masks_from_lengths
from mmbench.run import prepare
from mmbench.suite import TrainSpec, load_suite
from mmbench.trial import run_trial
from tests.conftest import ROOT

SEQ = dict(seq_len=[9, 4, 6], dim=5, n_train=300, n_val=100, n_test=100)


def test_sequence_task_shapes_lengths_and_padding():
    d = load("synthetic", variable_length=True, **SEQ)
    assert d.kind == "sequences" and d.input_dims == [5, 5, 5]
    assert [x.shape for x in d.train.xs] == [(300, 9, 5), (300, 4, 5), (300, 6, 5)]
    for x, n, t in zip(d.train.xs, d.train.lengths, [9, 4, 6]):
        assert n.min() >= (t + 1) // 2 and n.max() == t and len(np.unique(n)) > 1
        steps = np.arange(t)[None, :]
        assert np.all(x[steps >= n[:, None]] == 0) and np.all(np.abs(x[steps < n[:, None]]).sum(-1) > 0)
    assert d.info["seq_len"] == [9, 4, 6]
    fixed = load("synthetic", **SEQ)
    assert fixed.train.lengths is None and fixed.kind == "sequences"
    assert load("synthetic", n_train=10).kind == "vectors"


def test_envelope_has_unit_energy_on_the_valid_steps():
    a = envelope(np.array([1, 3, 8]), 8)
    np.testing.assert_allclose((a ** 2).sum(1), 1.0)
    assert np.all(a[1, 3:] == 0) and np.all(a[1, :3] > 0)


@pytest.mark.parametrize("interaction", ["redundancy", "uniqueness", "synergy"])
def test_sequence_bayes_classifier_reaches_stated_ceiling(interaction):
    """The exact posterior from the sequences reaches the stated ceiling, which equals the vector task's."""
    d = load("synthetic", interaction=interaction, num_classes=3, seq_len=[12, 5, 8], variable_length=True,
             n_train=10, n_val=10, n_test=4000)
    task = SyntheticTask(interaction, d.input_dims, 3, 0.4, 0)
    acc = (task.sequence_posterior(d.test.xs, d.test.lengths).argmax(1) == d.test.y).mean()
    assert d.info["bayes_accuracy"] == pytest.approx(acc, abs=1e-12)  # on the very test split that is scored
    assert abs(acc - d.info["bayes_accuracy_mc"]) < 4 * d.info["bayes_accuracy_se"]
    assert d.info["bayes_accuracy_mc"] == load("synthetic", interaction=interaction, num_classes=3,
                                               n_train=10, n_val=10, n_test=10).info["bayes_accuracy_mc"]


def test_no_single_step_carries_the_label():
    """Per step the signal is a_t·μ with Σa_t² = 1: one step of a 16-step redundancy sequence is far below the
    posterior from the whole sequence."""
    d = load("synthetic", interaction="redundancy", seq_len=16, n_train=10, n_val=10, n_test=3000, noise=0.6)
    task = SyntheticTask("redundancy", d.input_dims, 2, 0.6, 0)
    whole = (task.sequence_posterior(d.test.xs).argmax(1) == d.test.y).mean()
    one_step = [x[:, 8:9] * np.sqrt(16) for x in d.test.xs]  # the middle step, rescaled: still one step's noise
    single = (task.posterior([x[:, 0] for x in one_step]).argmax(1) == d.test.y).mean()
    assert whole > single + 0.1


@pytest.mark.parametrize("bad,words", [({"seq_len": [4, 4]}, "3 modalities"), ({"seq_len": 0}, "positive"),
                                       ({"variable_length": True}, "needs seq_len"),
                                       ({"seq_len": "long"}, "integer")])
def test_bad_sequence_parameters(bad, words):
    with pytest.raises(UserError, match=words):
        load("synthetic", n_train=10, **bad)


def test_model_encodes_each_step_and_passes_masks_only_when_given():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, xs, masks=None):
            seen["shapes"], seen["masks"] = [tuple(x.shape) for x in xs], masks
            return xs[0][:, 0, :2]

    model = FusionModel([5, 3], Probe(), [4, 6])
    xs = [torch.randn(2, 7, 5), torch.randn(2, 3, 3)]
    model(xs)
    assert seen == {"shapes": [(2, 7, 4), (2, 3, 6)], "masks": None}
    masks = masks_from_lengths([torch.tensor([7, 2]), torch.tensor([1, 3])], [7, 3])
    model(xs, masks)
    assert seen["masks"] is masks and masks[0][1].tolist() == [True, True] + [False] * 5


def test_training_uses_the_masks():
    """Pooled early fusion on a redundancy task whose padding holds loud noise: near the ceiling only if the trainer
    and evaluator pass the masks (unmasked, the pooled noise drowns the signal)."""
    d = load("synthetic", interaction="redundancy", seq_len=[10, 6], modalities=2, dim=6, variable_length=True,
             n_train=600, n_val=200, n_test=400, noise=0.5)
    rng = np.random.default_rng(0)
    for split in (d.train, d.val, d.test):
        for x, n in zip(split.xs, split.lengths):
            pad = np.arange(x.shape[1])[None, :] >= n[:, None]
            x[pad] = 20 * rng.standard_normal((pad.sum(), x.shape[2]))
    model, info = fit(lambda: build("pool_early", {}, d.input_dims, [8, 8], 2), d.train, d.val,
                      TrainSpec(epochs=15, batch_size=64, lr=0.01), seed=0)
    score = evaluate_seed(model, info, d.test, 0, "classification", 2, "", "cpu")
    assert score.test["acc"] > d.info["bayes_accuracy"] - 0.06


SUITE = """\
name: seq
task:
  dataset: synthetic
  params: {interaction: synergy, modalities: 2, dim: 4, seq_len: [6, 3], variable_length: true,
           n_train: 64, n_val: 32, n_test: 32}
train: {epochs: 1, batch_size: 32, seeds: [0]}
measure:
  device: cpu
  latency: {batch_sizes: [2], max_time_s: 0.01, min_samples: 2, warmup: 1, min_block_ms: 0.1}
sweep: {dims: [4]}
methods:
  - method: mult
    params: {width: 4, layers: 1, heads: 2}
  - method: lmf_mult
    params: {width: 4, layers: 1, heads: 2, rank: 2}
  - method: merged_attn
    params: {width: 4, layers: 1, heads: 2}
  - method: co_attn
    params: {width: 4, layers: 1, heads: 2}
  - method: pool_early
"""


def test_trial_measures_sequence_methods(write_suite):
    prepared = prepare(load_suite(write_suite(SUITE)))
    data = next(iter(prepared.tasks.values()))
    for trial in prepared.trials:
        row = run_trial(trial, data).row
        assert row["status"] == "ok", row["error"]
        torch.manual_seed(0)
        fusion = methods.create(trial.method, trial.dims, 2, **trial.hparams)
        assert row["fusion_params"] == fusion.expected_params()
        assert row["fusion_flops"] == fusion.expected_flops(1, [6, 3]) > 0  # counted at full length, batch 1
        assert row["flops_note"] == ""  # the trial itself held the count to the closed form
        assert row["fusion_train_flops"] > row["fusion_flops"]  # forward + backward, per sample
        assert row["fusion_latency_ms_b2"] > 0 and 0 <= row["acc_mean"] <= 1 and "bayes_accuracy" in row


def test_input_kind_mismatch_is_a_suite_error(write_suite):
    vec_on_seq = write_suite(SUITE.replace("  - method: pool_early\n", "  - method: lmf\n"), "a.yaml")
    with pytest.raises(UserError) as exc:
        prepare(load_suite(vec_on_seq))
    assert exc.value.key == "methods.4.method" and "takes vectors but task" in exc.value.message
    seq_on_vec = write_suite(SUITE.replace(" seq_len: [6, 3], variable_length: true,", ""), "b.yaml")
    with pytest.raises(UserError, match="'mult' takes sequences but task 'synthetic-synergy' provides vectors") as exc:
        prepare(load_suite(seq_on_vec))
    assert exc.value.key == "methods.0.method" and exc.value.line == 12 and "\n" not in exc.value.render()


def test_user_module_with_fused_attention_gets_a_flop_note(write_suite):
    text = SUITE.split("methods:")[0] + "methods:\n  - method: tests.seq_user_fusion:TorchEncoderFusion\n"
    prepared = prepare(load_suite(write_suite(text)))
    row = run_trial(prepared.trials[0], next(iter(prepared.tasks.values()))).row
    assert row["status"] == "ok", row["error"]
    assert "transformer_encoder_layer" in row["flops_note"] and "lower bound" in row["flops_note"]


@pytest.mark.parametrize("quick", [False, True])
def test_sequence_suite_validates(quick):
    prepared = prepare(load_suite(ROOT / "suites" / "sequence_fusion.yaml", quick=quick))
    assert {t.method for t in prepared.trials} == {"mult", "lmf_mult", "merged_attn", "co_attn", "pool_early"}
    assert all(d.kind == "sequences" and d.train.lengths is not None for d in prepared.tasks.values())
    assert len(prepared.trials) == (6 if quick else 16)
    assert sum(t.method == "lmf_mult" and t.hparams.get("variant") == 2 for t in prepared.trials) == (1 if quick else 4)
