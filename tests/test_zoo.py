"""Every registered method, parametrised over the registry itself (a new method is tested the day it is added).

Behaviour every fusion module owes: output (B, out_dim) for B = 1 and B > 1, in train and eval mode; gradients reach
every parameter through the output or the method's aux_loss; its closed-form parameter count and FLOP count hold;
construction is deterministic under a seed; bf16 autocast on CPU works.
"""
import pytest
import torch

from mmbench import methods
from mmbench.measure import flops, flops_note, params

ALL = methods.available()


def _dims(name: str, sizes=(5, 7, 6)) -> list[int]:
    info = methods.info(name)
    m = info.min_modalities if info.max_modalities == info.min_modalities else max(info.min_modalities, 3)
    return list(sizes[:m]) if m <= len(sizes) else [4] * m


def _lengths(name: str, dims) -> list[int] | None:
    """Sequence methods get different lengths per modality (unaligned); vector methods none."""
    return [3 + i for i in range(len(dims))] if methods.info(name).inputs == "sequences" else None


def _inputs(name: str, dims, batch: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if (lengths := _lengths(name, dims)) is not None:
        return [torch.randn(batch, t, d, generator=g) for t, d in zip(lengths, dims)]
    return [torch.randn(batch, d, generator=g) for d in dims]


def _build(name, dims, out_dim=3, seed=0, **hp):
    torch.manual_seed(seed)
    return methods.create(name, dims, out_dim, **hp)


def test_registry_lists_the_vector_zoo():
    assert {"early", "additive", "late", "hybrid", "tfn", "lmf", "gmu", "mlb", "mfb", "mfh", "tucker", "mutan",
            "block", "block_tucker", "linear_sum", "mcb", "aff", "iaff", "contrastive", "dcca", "encdec", "view_specific"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("batch", [1, 4])
def test_output_shape_and_finite(name, mode, batch):
    dims = _dims(name)
    m = _build(name, dims)
    m.train(mode == "train")
    y = m(_inputs(name, dims, batch))
    assert y.shape == (batch, 3) and y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    """Through the output or aux_loss: an unregistered, unused or detached parameter fails here."""
    dims = _dims(name)
    m = _build(name, dims).train()
    y = m(_inputs(name, dims, 8))
    loss = (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum()
    aux = m.aux_loss()
    if aux is not None:
        assert aux.dim() == 0 and torch.isfinite(aux)
        loss = loss + aux
    loss.backward()
    # An attention key bias adds q·b_k to a whole row of scores, which softmax ignores: its gradient is zero (up to
    # rounding) in every transformer, yet it is part of the catalog's closed forms (12e²+13e …). It must be in the graph.
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or (p.grad.abs().sum() == 0 and not n.endswith(".k.bias"))]
    assert not dead, f"{name}: no gradient for {dead}"


@pytest.mark.parametrize("name", ALL)
def test_construction_is_deterministic_under_a_seed(name):
    dims = _dims(name)
    a, b, c = _build(name, dims, seed=3), _build(name, dims, seed=3), _build(name, dims, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    xs = _inputs(name, dims, 4)
    torch.testing.assert_close(a.eval()(xs), b.eval()(xs))


@pytest.mark.parametrize("name", ALL)
def test_eval_is_a_function_of_the_input(name):
    dims = _dims(name)
    m = _build(name, dims)
    m.train()
    m(_inputs(name, dims, 8, seed=5))  # moves BatchNorm statistics, if any
    m.eval()
    xs = _inputs(name, dims, 4)
    with torch.no_grad():
        torch.testing.assert_close(m(xs), m(xs))
        torch.testing.assert_close(m(xs)[:1], m([x[:1] for x in xs]), rtol=1e-4, atol=1e-5)  # no batch coupling


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cpu_stays_close_to_float32(name, dtype):
    dims = _dims(name, (16, 12, 8))
    m = _build(name, dims).eval()
    xs = _inputs(name, dims, 6)
    with torch.no_grad():
        ref = m(xs)
        with torch.autocast("cpu", dtype=dtype):
            low = m(xs)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).norm() <= 0.1 * ref.norm() + 0.05


@pytest.mark.parametrize("name", ALL)
def test_stated_closed_forms_hold(name):
    """Every built-in states its parameter count; where it states a FLOP count, flop_counter agrees, B = 1 and B > 1."""
    dims = _dims(name)
    m = _build(name, dims).eval()
    assert m.expected_params() == params(m)
    lengths = _lengths(name, dims)
    for batch in (1, 5):
        want = m.expected_flops(batch) if lengths is None else m.expected_flops(batch, lengths)
        xs = _inputs(name, dims, batch)
        counted = flops(lambda: m(xs), m)["total"]
        if want is not None:
            assert counted == want
        assert flops_note(counted, m, batch, lengths=lengths) == ""  # what a results row would flag


@pytest.mark.parametrize("name", [n for n in ALL if methods.info(n).max_modalities is not None])
def test_modality_range_is_refused_with_a_clear_error(name):
    from mmbench.errors import UserError

    info = methods.info(name)
    with pytest.raises(UserError, match=f"method '{name}' takes {info.max_modalities} modalities, got"):
        methods.create(name, [4] * (info.max_modalities + 1), 2)


@pytest.mark.parametrize("name", ALL)
def test_rank_param_is_a_constructor_hyperparameter(name):
    info = methods.info(name)
    assert info.family and info.inputs in ("vectors", "sequences", "both") and info.description
    assert info.rank_param is None or info.rank_param in info.hyperparams


def test_list_methods_shows_family_inputs_and_rank_of_every_method():
    from typer.testing import CliRunner

    from mmbench.cli import app

    r = CliRunner().invoke(app, ["list", "methods"], terminal_width=250)
    assert r.exit_code == 0
    rows = {line.split()[0]: line.split() for line in r.output.splitlines()[1:] if line.strip()}
    for name in ALL:
        info = methods.info(name)
        assert rows[name][1:3] == [info.family, info.inputs]
        assert rows[name][4] == (info.rank_param or "—")
