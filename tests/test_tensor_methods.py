"""TFN and LMF against their closed forms, and against each other."""
import math

import pytest
import torch

from mmbench import measure, methods
from mmbench.measure import flops, params
from mmbench.methods.tensor import LowRankFusion, TensorFusion

DIMS = [[3, 4], [3, 4, 5], [8, 8, 8], [2, 3, 4, 5]]


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("out_dim", [1, 2, 7])
def test_tfn_params_match_closed_form(dims, out_dim):
    m = methods.create("tfn", dims, out_dim)
    assert params(m) == (math.prod(d + 1 for d in dims) + 1) * out_dim


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("rank", [1, 4, 16])
@pytest.mark.parametrize("out_dim", [1, 3])
def test_lmf_params_match_closed_form(dims, rank, out_dim):
    m = methods.create("lmf", dims, out_dim, rank=rank)
    assert params(m) == rank * out_dim * sum(d + 1 for d in dims) + rank + out_dim


def test_lmf_factors_are_registered_and_trained():
    m = methods.create("lmf", [3, 4, 5], 2, rank=3)
    names = {n for n, _ in m.named_parameters()}
    assert {"factors.0", "factors.1", "factors.2", "fusion_weights", "fusion_bias"} <= names
    y = m([torch.randn(5, d) for d in [3, 4, 5]]).sum()
    y.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("rank", [1, 3])
def test_lmf_equals_tfn_with_rank_r_weight(dims, rank):
    torch.manual_seed(0)
    lmf = methods.create("lmf", dims, 3, rank=rank)
    tfn = lmf.to_tensor_fusion()
    xs = [torch.randn(7, d, dtype=torch.float64) for d in dims]
    lmf, tfn = lmf.double(), tfn.double()
    torch.testing.assert_close(lmf(xs), tfn(xs))


def test_rank_r_weight_built_independently():
    """The tensor is Σ_r w_f[r] ⊗_m W_m[r], checked against an explicit loop over its entries."""
    torch.manual_seed(1)
    lmf = LowRankFusion([2, 3], 2, rank=2).double()
    w = lmf.full_weight().view(2, 3, 4)  # (o, D1, D2)
    for o in range(2):
        for i in range(3):
            for j in range(4):
                expect = sum(lmf.fusion_weights[0, r] * lmf.factor(0)[r, i, o] * lmf.factor(1)[r, j, o]
                             for r in range(2))
                assert torch.isclose(w[o, i, j], expect)


@pytest.mark.parametrize("dims,out_dim", [([3, 4, 5], 2), ([3, 4, 5], 9), ([6, 2], 1), ([2, 3, 4, 5], 3)])
def test_tfn_equals_linear_on_explicit_outer_product(dims, out_dim):
    """Whichever path it takes (contraction or materialised), TFN is Linear(vec(x̃1 ⊗ … ⊗ x̃M))."""
    torch.manual_seed(2)
    tfn = TensorFusion(dims, out_dim).double()
    xs = [torch.randn(5, d, dtype=torch.float64) for d in dims]
    xt = [torch.cat([x, torch.ones(5, 1, dtype=x.dtype)], 1) for x in xs]
    z = xt[0]
    for x in xt[1:]:
        z = torch.einsum("bi,bj->bij", z, x).reshape(5, -1)
    torch.testing.assert_close(tfn(xs), z @ tfn.linear.weight.T + tfn.linear.bias)


@pytest.mark.parametrize("name,hp", [("tfn", {}), ("lmf", {"rank": 4}), ("early", {}), ("early", {"hidden": 6}),
                                     ("late", {}), ("late", {"weighting": "learned"})])
@pytest.mark.parametrize("dims,out_dim", [([3, 4, 5], 2), ([5, 3], 11)])
@pytest.mark.parametrize("batch", [1, 6])
def test_flops_match_hand_derived_formula(name, hp, dims, out_dim, batch):
    m = methods.create(name, dims, out_dim, **hp)
    xs = [torch.randn(batch, d) for d in dims]
    counted = flops(lambda: m(xs), m)["total"]
    assert counted == m.expected_flops(batch)
    assert params(m) == m.expected_params()


def test_tfn_flops_formula_by_hand():
    """2·B·o·(D1D2D3 + D1) at split 1 (x̃2 ⊗ x̃3 times the weight, then x̃1), 2·B·o·(D1D2D3 + D1D2 + D1) at split 2,
    written out for one case."""
    m = methods.create("tfn", [3, 4, 5], 2)
    xs = [torch.randn(4, d) for d in [3, 4, 5]]
    assert m.split == 1
    assert flops(lambda: m(xs), m)["total"] == 2 * 4 * 2 * (4 * 5 * 6 + 4)
    m.split = 2
    assert flops(lambda: m(xs), m)["total"] == 2 * 4 * 2 * (4 * 5 * 6 + 4 * 5 + 4) == m.expected_flops(4)


@pytest.mark.parametrize("dims,out_dim", [([3, 4, 5], 2), ([3, 4, 5], 9), ([6, 2], 1), ([2, 3, 4, 5], 3),
                                          ([9, 2, 7], 40)])
def test_tfn_every_split_is_the_same_function(dims, out_dim):
    """Every contraction order the weight's layout allows computes Linear(vec(x̃1 ⊗ … ⊗ x̃M)) with the same weight
    (a state dict of the materialised form loads and gives the same outputs)."""
    torch.manual_seed(3)
    ref = TensorFusion(dims, out_dim).double()
    ref.split = 0  # the materialised outer product: the definition
    xs = [torch.randn(5, d, dtype=torch.float64) for d in dims]
    for k in range(len(dims)):
        tfn = TensorFusion(dims, out_dim).double()
        tfn.load_state_dict(ref.state_dict())
        tfn.split = k
        torch.testing.assert_close(tfn(xs), ref(xs))
        assert flops(lambda: tfn(xs), tfn)["total"] == tfn.expected_flops(5)


@pytest.mark.parametrize("dims,out_dim", [([8, 6, 10], 3), ([4, 4, 4], 8), ([2, 3, 4, 5], 3), ([10, 30, 10], 8),
                                          ([5, 5, 5], 200)])
def test_tfn_peak_intermediates_match_the_closed_form_and_the_split_has_the_fewest(dims, out_dim):
    """For every split the live-tensor peak of a forward is the x̃ plus peak_values(k) per sample, and the module
    runs the split whose peak is smallest: the TFN-LMF comparison is never lost to a poor order."""
    tfn, b = TensorFusion(dims, out_dim), 16
    xs = [torch.randn(b, d) for d in dims]
    chosen = tfn.split
    assert tfn.peak_values(chosen) == min(tfn.peak_values(k) for k in range(len(dims)))
    for k in range(len(dims)):
        tfn.split = k
        with torch.no_grad():
            mem = measure.peak_memory(lambda: tfn(xs), "cpu", alive=[*tfn.parameters(), *xs])
        assert mem["peak_mem_mib"] == pytest.approx(4 * b * (sum(d + 1 for d in dims) + tfn.peak_values(k)) / 2**20)


def test_tfn_at_128_cubed_out_64_needs_under_a_gib_at_batch_8192():
    """The shape of issue 30: the old order materialised (8192, 64·129·129) fp32 values, 32.5 GiB."""
    with torch.device("meta"):  # the shape only: no 548 MB weight
        tfn = TensorFusion([128] * 3, 64)
    assert tfn.split == 1
    assert 8192 * 4 * tfn.peak_values(tfn.split) < 2**30
    assert 8192 * 4 * tfn.peak_values(2) > 32 * 2**30


def test_lmf_flops_grow_with_sum_tfn_with_product():
    def count(name, dims, **hp):
        m = methods.create(name, dims, 2, **hp)
        return flops(lambda: m([torch.randn(1, d) for d in dims]), m)["total"]

    tfn_ratio = count("tfn", [16] * 3) / count("tfn", [8] * 3)
    lmf_ratio = count("lmf", [16] * 3, rank=4) / count("lmf", [8] * 3, rank=4)
    assert tfn_ratio > 6      # (17/9)^3 ≈ 6.7
    assert lmf_ratio < 2.1    # (3·16+1)/(3·8+1) ≈ 1.96


class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    """The aten ops a call runs that write memory (views excluded), with the number of elements each writes."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliases = func._schema.returns and func._schema.returns[0].alias_info is not None  # a view of an input
        if isinstance(out, torch.Tensor) and not aliases:
            self.ops.append((func._overloadpacket.__name__, out.numel()))
        return out


@pytest.mark.parametrize("dims,rank,out_dim", [([64, 64, 64], 4, 8), ([5, 6], 16, 1)])
def test_lmf_forward_reads_the_product_once(dims, rank, out_dim):
    """M factor matmuls, M−1 products, then the w_f contraction as ONE matrix product over the (B, o, r) product (no
    copy of it, no batched matmul of B tiny matrices), then the bias: what keeps LMF as fast as its reference code at
    large batch."""
    import torch.utils._python_dispatch  # noqa: F401

    m = methods.create("lmf", dims, out_dim, rank=rank)
    xs = [torch.randn(64, d) for d in dims]
    with torch.no_grad(), _Ops() as rec:
        y = m(xs)
    heavy = [name for name, n in rec.ops if n >= 64 * rank * out_dim]  # ops touching the whole product
    assert sorted(heavy) == ["addmm"] * len(dims) + ["mul"] * (len(dims) - 1)
    assert [name for name, _ in rec.ops if name in ("mm", "bmm", "copy_", "clone")] == ["mm"]
    torch.testing.assert_close(y, torch.einsum("r,rbo->bo", m.fusion_weights[0], math.prod(
        torch.cat([x, torch.ones(64, 1)], 1) @ m.factor(i) for i, x in enumerate(xs))) + m.fusion_bias)


@pytest.mark.parametrize("dims,out_dim", [([6, 5, 4], 3), ([10, 30, 10], 8), ([4, 4], 9)])
def test_tfn_equals_its_best_order_reference(dims, out_dim):
    """The benchmark's best-order reference (weight relaid out, its own choice of order) computes what TFN computes."""
    from benchmarks.methods_vs_naive import tfn_best_order

    torch.manual_seed(1)
    m = TensorFusion(dims, out_dim)
    xs = [torch.randn(7, d) for d in dims]
    with torch.no_grad():
        torch.testing.assert_close(m(xs), tfn_best_order(m, xs), rtol=1e-5, atol=1e-5)
