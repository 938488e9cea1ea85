"""The zoo's methods against the catalog's closed forms (written here independently of the classes), hand-derived
FLOP formulas, their reference computations (the benchmark's naive versions), and each method's own behaviour."""
import itertools
import math

import numpy as np
import pytest
import torch

from benchmarks.methods_vs_naive import NAIVE
from mmbench import methods
from mmbench.errors import UserError
from mmbench.measure import flops, params
from tests.conftest import TINY_SUITE


def _p_aff(d, o, hp, stages):
    c = hp.get("channels") or max(d)
    i = c // hp.get("r", 4)
    proj = sum((dm + 1) * c for dm in d if dm != c)
    return proj + stages * (4 * c * i + 6 * i + 6 * c - 2 * i - 2 * c) + (c + 1) * o  # catalog minus pre-BN biases


# The reference's chunk sizes (block.bootstrap's get_sizes_list), written out for the settings used below.
SIZES = {(12, 3): [4, 4, 4], (20, 20): [1] * 20, (16, 1): [16], (1600, 18): [89] * 17 + [87], (10, 4): [3, 3, 3, 1],
         (10, 7): [2, 2, 2, 1, 1, 1, 1], (13, 5): [3, 3, 3, 3, 1], (9, 2): [5, 4]}


def _p_block(d, o, hp):
    mm, r = hp["mm"], hp["rank"]
    s = SIZES[mm, hp["chunks"]]
    return (d[0] + d[1] + 2) * mm + 2 * sum((sc + 1) * sc * r for sc in s) + (mm + 1) * o


def _p_block_tucker(d, o, hp):
    mm = hp["mm"]
    return (d[0] + d[1] + 2) * mm + sum(sc ** 3 + sc for sc in SIZES[mm, hp["chunks"]]) + (mm + 1) * o


# key -> (closed form (dims, out_dim, hyperparams) -> params, list of hyperparameter settings)
CLOSED_FORMS = {
    "additive": (lambda d, o, hp: sum(d) * o + o, [{}]),
    "hybrid": (lambda d, o, hp: (sum(d) + 1) * o + sum((dm + 1) * o for dm in d) + len(d) + 1, [{}]),
    "gmu": (lambda d, o, hp: sum((dm + 1) * hp["hidden"] for dm in d)
            + (sum(d) + 1) * (1 if len(d) == 2 else len(d)) * hp["hidden"] + (hp["hidden"] + 1) * o,
            [{"hidden": 4}, {"hidden": 9}, {"hidden": 5, "gate": "softmax"}]),
    "mlb": (lambda d, o, hp: (d[0] + d[1] + 2) * hp["mm"] + (hp["mm"] + 1) * o, [{"mm": 1}, {"mm": 12}]),
    "mfb": (lambda d, o, hp: (d[0] + d[1] + 2) * hp["mm"] * hp["k"] + (hp["mm"] + 1) * o,
            [{"mm": 6, "k": 1}, {"mm": 10, "k": 5}]),
    "mfh": (lambda d, o, hp: 2 * (d[0] + d[1] + 2) * hp["mm"] * hp["k"] + (2 * hp["mm"] + 1) * o,
            [{"mm": 6, "k": 2}, {"mm": 10, "k": 5}]),
    "tucker": (lambda d, o, hp: (d[0] + d[1] + 2) * hp["mm"] + hp["mm"] ** 3 + hp["mm"] + (hp["mm"] + 1) * o,
               [{"mm": 3}, {"mm": 8}]),
    "mutan": (lambda d, o, hp: (d[0] + d[1] + 2) * hp["mm"] + 2 * (hp["mm"] + 1) * hp["mm"] * hp["rank"]
              + (hp["mm"] + 1) * o, [{"mm": 5, "rank": 1}, {"mm": 8, "rank": 15}]),
    "block": (lambda d, o, hp: _p_block(d, o, hp),
              [{"mm": 12, "chunks": 3, "rank": 2}, {"mm": 20, "chunks": 20, "rank": 1}, {"mm": 16, "chunks": 1,
               "rank": 3}, {"mm": 10, "chunks": 4, "rank": 2}, {"mm": 10, "chunks": 7, "rank": 1},
               {"mm": 13, "chunks": 5, "rank": 2}]),
    "block_tucker": (lambda d, o, hp: _p_block_tucker(d, o, hp),
                     [{"mm": 12, "chunks": 3}, {"mm": 16, "chunks": 1}, {"mm": 10, "chunks": 7}, {"mm": 9, "chunks": 2},
                      {"mm": 13, "chunks": 5}]),
    "linear_sum": (lambda d, o, hp: (d[0] + 1) * hp["mm"] + (d[1] + 1) * hp["mm"] + (hp["mm"] + 1) * o,
                   [{"mm": 1}, {"mm": 12}, {"mm": 7, "normalize": True, "activation": "tanh"}]),
    "mcb": (lambda d, o, hp: (hp["sketch_dim"] + 1) * o, [{"sketch_dim": 16}, {"sketch_dim": 100}]),
    "aff": (lambda d, o, hp: _p_aff(d, o, hp, 1), [{}, {"channels": 12, "r": 3}, {"channels": 8, "r": 8}]),
    "iaff": (lambda d, o, hp: _p_aff(d, o, hp, 2), [{}, {"channels": 12, "r": 3}]),
    "contrastive": (lambda d, o, hp: sum(d) * hp["embed_dim"] + 1 + (len(d) * hp["embed_dim"] + 1) * o,
                    [{"embed_dim": 3}, {"embed_dim": 10}]),
    "dcca": (lambda d, o, hp: sum((dm + 1) * hp["embed_dim"] for dm in d) + (len(d) * hp["embed_dim"] + 1) * o,
             [{"embed_dim": 2}, {"embed_dim": 7}]),
    "encdec": (lambda d, o, hp: (d[hp["source"]] + 1) * hp["hidden"]
               + (hp["hidden"] + 1) * (sum(d) - d[hp["source"]]) + (hp["hidden"] + 1) * o,
               [{"hidden": 5, "source": 0}, {"hidden": 3, "source": 1}]),
    "view_specific": (lambda d, o, hp: (sum(d) + len(d)) * hp["hidden"] + len(d) * (2 * hp["hidden"] ** 2
                      + hp["hidden"]) + len(d) * (hp["hidden"] + 1) * o, [{"hidden": 2}, {"hidden": 6}]),
}
DIMS = [[3, 5], [8, 8], [4, 6, 2]]


def _fits(name, dims):
    hi = methods.info(name).max_modalities
    return hi is None or len(dims) <= hi


@pytest.mark.parametrize("name,dims", [(n, d) for n in sorted(CLOSED_FORMS) for d in DIMS if _fits(n, d)])
@pytest.mark.parametrize("out_dim", [1, 4])
def test_params_match_catalog_closed_form(name, dims, out_dim):
    form, settings = CLOSED_FORMS[name]
    for hp in settings:
        m = methods.create(name, dims, out_dim, **hp)
        assert params(m) == form(dims, out_dim, hp) == m.expected_params(), hp


# Hand-derived FLOPs (2 × multiply-adds of the matmuls actually performed; elementwise ops not counted).
BILINEAR_FLOPS = {
    "mlb": (dict(mm=12), lambda b, d0, d1, o: 2 * b * (12 * d0 + 12 * d1 + 12 * o)),
    # mfb: from a batch of 2 (without gradients) the product is pooled by a bmm of B·mm dot products of length k
    "mfb": (dict(mm=6, k=3), lambda b, d0, d1, o: 2 * b * (18 * d0 + 18 * d1 + (18 if b > 1 else 0) + 6 * o)),
    "mfh": (dict(mm=6, k=3), lambda b, d0, d1, o: 2 * b * (36 * d0 + 36 * d1 + 12 * o)),
    # projections, q0·T (mm × mm² per sample), the batched product with q1 (mm² per sample), output; without
    # gradients from a batch of 8·mm on, the outer product (not counted) and one GEMM with the core (mm² × mm)
    "tucker": (dict(mm=5), lambda b, d0, d1, o: 2 * b * (5 * d0 + 5 * d1 + 125 + (25 if b < 40 else 0) + 5 * o)),
    "mutan": (dict(mm=8, rank=3), lambda b, d0, d1, o: 2 * b * (8 * d0 + 8 * d1 + 2 * 8 * 24 + 8 * o)),
    "block": (dict(mm=12, chunks=3, rank=2), lambda b, d0, d1, o: 2 * b * (12 * d0 + 12 * d1 + 2 * 3 * 4 * 8 + 12 * o)),
    # uneven: chunks 3, 3, 3, 1; per chunk two merges of s·R·s multiply-adds
    "block:uneven": (dict(mm=10, chunks=4, rank=2),
                     lambda b, d0, d1, o: 2 * b * (10 * d0 + 10 * d1 + 2 * (3 * 18 + 2) + 10 * o)),
    # per chunk a·T (s·s² multiply-adds) and the batched product with b (s²): chunks 5 and 4; from a batch of s on,
    # the outer product (not counted) and the GEMM with the core (s³)
    "block_tucker": (dict(mm=9, chunks=2), lambda b, d0, d1, o: 2 * b * (
        9 * d0 + 9 * d1 + 125 + (25 if b < 5 else 0) + 64 + (16 if b < 4 else 0) + 9 * o)),
    "linear_sum": (dict(mm=12), lambda b, d0, d1, o: 2 * b * (12 * d0 + 12 * d1 + 12 * o)),
    "mcb": (dict(sketch_dim=64), lambda b, d0, d1, o: 2 * b * 64 * o),  # sketch and FFTs: not counted by torch
}


@pytest.mark.parametrize("name", sorted(BILINEAR_FLOPS))
@pytest.mark.parametrize("dims,out_dim,batch", [([3, 5], 2, 1), ([7, 4], 5, 4), ([7, 4], 5, 6)])
def test_bilinear_flops_match_hand_derived_formula(name, dims, out_dim, batch):
    hp, formula = BILINEAR_FLOPS[name]
    m = methods.create(name.split(":")[0], dims, out_dim, **hp).eval()
    xs = [torch.randn(batch, d) for d in dims]
    assert flops(lambda: m(xs), m)["total"] == formula(batch, *dims, out_dim) == m.expected_flops(batch)


def _same_composed_or_in_turn(m, xs, monkeypatch):
    """Both orders of each side's chain (composed first, or in turn): the same outputs and every gradient."""
    results = []
    for composed in (True, False):
        monkeypatch.setattr(type(m), "compose_first", lambda self, b, d, c=composed: c)
        m.zero_grad()
        y = m(xs)
        y.square().sum().backward()
        results.append((y.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for k in results[0][1]:
        torch.testing.assert_close(results[0][1][k], results[1][1][k], msg=k)


def test_mutan_composes_its_linears_where_that_is_fewer_flops(monkeypatch):
    """Each side's Linears x → mm → R·mm are multiplied first from the batch where that costs fewer FLOPs (mm 8, R 3,
    d 3: 3·8·(8·4 + 3B) ≤ 3/4 · B·8·(3 + 24) from B = 9); both orders give the same outputs and gradients."""
    m = methods.create("mutan", [3, 3], 2, mm=8, rank=3).double()
    assert [b for b in range(1, 12) if m.compose_first(b, 3)] == [9, 10, 11]
    xs = [torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)]
    # composed: per side the (24, 8)·(8, 4) product and the (10, 3)·(3, 24) GEMM; then the output Linear
    assert flops(lambda: m(xs), m)["total"] == 2 * (2 * 24 * 8 * 4 + 2 * 10 * 3 * 24) + 2 * 10 * 8 * 2 \
        == m.expected_flops(10)
    _same_composed_or_in_turn(m, xs, monkeypatch)


def test_block_composes_each_chunks_chain_where_that_is_far_fewer_flops(monkeypatch):
    """BLOCK's sides as MUTAN's, chunk by chunk (mm 10 in chunks 3, 3, 3, 1, R 2, d 2: per side 2·2·3·28 + 2·B·2·2·10
    composed against 2·B·2·10 + 2·B·2·28 in turn, composed (≤ 3/4) from B = 10); both orders: same outputs and
    gradients."""
    m = methods.create("block", [2, 2], 2, mm=10, chunks=4, rank=2).double()
    assert [b for b in range(1, 13) if m.compose_first(b, 2)] == [10, 11, 12]
    xs = [torch.randn(11, 2, dtype=torch.float64), torch.randn(11, 2, dtype=torch.float64)]
    side = 2 * 2 * 3 * 28 + 2 * 11 * 2 * 2 * 10  # per group: [W | b] rows (3, s) · merge (s, R·s), then x · that
    assert flops(lambda: m(xs), m)["total"] == 2 * side + 2 * 11 * 10 * 2 == m.expected_flops(11)
    _same_composed_or_in_turn(m, xs, monkeypatch)


def test_mutan_flops_written_out():
    m = methods.create("mutan", [10, 20], 3, mm=4, rank=2)
    # 2·B·(4·10 + 4·20 + 2·(4·8) + 4·3) at B = 2
    assert flops(lambda: m([torch.randn(2, 10), torch.randn(2, 20)]), m)["total"] == 2 * 2 * (40 + 80 + 64 + 12)


@pytest.mark.parametrize("name", sorted(n for n in methods.available() if methods.info(n).inputs == "vectors"))
def test_same_function_as_the_straightforward_version(name):
    """The benchmark's naive versions (reference-code style) compute what ours compute: equal work is compared,
    and ours is the method the paper defines."""
    assert name in NAIVE, f"add a straightforward version of '{name}' to benchmarks/methods_vs_naive.py"
    hi = methods.info(name).max_modalities
    dims = [6, 5] if hi == 2 else [6, 5, 4]
    torch.manual_seed(0)
    m = methods.create(name, dims, 3).double().eval()
    xs = [torch.randn(7, d, dtype=torch.float64) for d in dims]
    with torch.no_grad():
        torch.set_default_dtype(torch.float64)
        try:
            want = NAIVE[name](m, xs)
        finally:
            torch.set_default_dtype(torch.float32)
        torch.testing.assert_close(m(xs), want)


def test_mcb_is_the_count_sketch_of_the_outer_product():
    """Ψ(x0) ⊛ Ψ(x1) = count sketch of x0 ⊗ x1 with hash (h0(i) + h1(j)) mod D and sign s0(i)·s1(j)."""
    torch.manual_seed(0)
    m = methods.create("mcb", [5, 4], 2, sketch_dim=16).double()
    x0, x1 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    f = lambda t, i: torch.fft.rfft(m.sketch(t, i), n=16)  # noqa: E731
    got = torch.fft.irfft(f(x0, 0) * f(x1, 1), n=16)
    want = torch.zeros(3, 16, dtype=torch.float64)
    for i, j in itertools.product(range(5), range(4)):
        want[:, (m.hash0[i] + m.hash1[j]) % 16] += m.sign0[i] * m.sign1[j] * x0[:, i] * x1[:, j]
    torch.testing.assert_close(got.float(), want.float(), atol=1e-5, rtol=1e-5)
    assert not any(n.startswith(("hash", "sign")) for n, _ in m.named_parameters())
    assert {"hash0", "hash1", "sign0", "sign1"} <= set(dict(m.named_buffers()))


def test_signed_sqrt_gradient_is_zero_at_zero_not_nan():
    from mmbench.methods.bilinear import SignedSqrt

    z = torch.tensor([0.0, 4.0, -9.0], requires_grad=True)
    y = SignedSqrt.apply(z)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), torch.tensor([0.0, 2.0, -3.0]))
    torch.testing.assert_close(z.grad, torch.tensor([0.0, 0.25, 1 / 6]))


# with gradients at mm 5: q0 first below a batch of 5, the outer product from 5 on; at mm 20 (mm² ≥ 400): T·q1 first
@pytest.mark.parametrize("mm,batch", [(5, 1), (5, 4), (5, 5), (5, 6), (20, 1), (20, 3)])
def test_tucker_is_the_bilinear_form_of_its_core(mm, batch):
    torch.manual_seed(0)
    m = methods.create("tucker", [3, 4], 2, mm=mm).double()
    x0, x1 = torch.randn(batch, 3, dtype=torch.float64), torch.randn(batch, 4, dtype=torch.float64)
    q0, q1 = m.linear0(x0), m.linear1(x1)
    z = torch.einsum("bi,ikj,bj->bk", q0, m.core, q1) + m.core_bias
    torch.testing.assert_close(m([x0, x1]), m.out(z))


@pytest.mark.parametrize("mm,chunks", sorted(SIZES))
def test_chunk_sizes_are_the_references(mm, chunks):
    from mmbench.methods.bilinear import chunk_sizes

    assert chunk_sizes(mm, chunks) == SIZES[mm, chunks]
    for name in ("block", "block_tucker"):
        assert methods.create(name, [4, 4], 2, mm=mm, chunks=chunks).sizes == SIZES[mm, chunks]


def test_block_vqa_configuration_splits_unevenly():
    """The reference's VQA setting, mm 1600 in 18 chunks: 17 of 89 and one of 87 (built on the meta device)."""
    with torch.device("meta"):
        m = methods.create("block", [20, 30], 3, mm=1600, chunks=18, rank=15)
    assert m.sizes == [89] * 17 + [87] and m.groups == [(89, 17), (87, 1)]
    assert params(m) == m.expected_params() == _p_block([20, 30], 3, {"mm": 1600, "chunks": 18, "rank": 15})


@pytest.mark.parametrize("name", ["block", "block_tucker"])
def test_uneven_chunks_are_fused_chunk_by_chunk(name):
    """Each chunk is its own fusion of the matching slices of both projections: perturbing one chunk of x0's
    projection changes only that chunk's output features."""
    torch.manual_seed(0)
    m = methods.create(name, [5, 4], 2, mm=10, chunks=4).double().eval()
    xs = [torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)]
    q0, q1 = m.linear0(xs[0]), m.linear1(xs[1])
    zs = [torch.cat([m._fuse(g, a, b).transpose(0, 1).reshape(3, -1) for g, (a, b) in
                     enumerate(zip(m._grouped(p), m._grouped(q1)))], -1) for p in (q0, q0 + torch.eye(10)[9])]
    changed = (zs[0] - zs[1]).abs().amax(0) > 0
    assert changed.tolist() == [False] * 9 + [True]  # the last chunk (size 1) alone
    torch.testing.assert_close(m(xs), m.out(zs[0]))


def test_chunks_the_reference_split_cannot_serve_are_refused():
    with pytest.raises(UserError, match="cannot be split into 6 chunks"):
        methods.create("block", [4, 4], 2, mm=10, chunks=6)  # 2, 2, 2, 2, 2, 0
    with pytest.raises(UserError, match="cannot be split into 5 chunks"):
        methods.create("block_tucker", [4, 4], 2, mm=4, chunks=5)


def test_linear_sum_is_the_sum_of_activated_projections():
    torch.manual_seed(0)
    m = methods.create("linear_sum", [3, 4], 2, mm=5)
    xs = [torch.randn(6, 3), torch.randn(6, 4)]
    want = m.out(torch.relu(m.linear0(xs[0])) + torch.relu(m.linear1(xs[1])))
    torch.testing.assert_close(m(xs), want)
    with pytest.raises(UserError, match="activation must be one of"):
        methods.create("linear_sum", [3, 4], 2, activation="gelu")


@pytest.mark.parametrize("batch", [1, 4, 6])  # chunks 5 and 4: both a first, 4 outer and 5 a first, both outer
def test_block_tucker_chunks_are_bilinear_forms_of_their_cores(batch):
    torch.manual_seed(0)
    m = methods.create("block_tucker", [3, 4], 2, mm=9, chunks=2).double()
    x0, x1 = torch.randn(batch, 3, dtype=torch.float64), torch.randn(batch, 4, dtype=torch.float64)
    q0, q1 = m.linear0(x0), m.linear1(x1)
    from mmbench.methods.bilinear import ssl

    zs, start = [], 0
    for c, s in enumerate([5, 4]):
        a, b = q0[:, start:start + s], q1[:, start:start + s]
        zs.append(ssl(torch.einsum("bi,ikj,bj->bk", a, m.core(c), b) + m.core_bias(c)))
        start += s
    torch.testing.assert_close(m([x0, x1]), m.out(torch.cat(zs, -1)))


def test_pair_method_given_three_modalities_is_a_plan_time_error(write_suite):
    from mmbench.run import prepare
    from mmbench.suite import load_suite

    text = TINY_SUITE.replace("  - method: late\n", "  - method: late\n  - method: mutan\n")
    with pytest.raises(UserError) as exc:
        prepare(load_suite(write_suite(text)))
    e = exc.value
    assert "method 'mutan' takes 2 modalities, got 3" in e.message and e.key == "methods.3" and e.line == 16


def test_iaff_second_stage_has_its_own_trained_global_branch():
    """open-aff's iAFF reuses stage one's global branch: its second one never affects the output."""
    torch.manual_seed(0)
    m = methods.create("iaff", [6, 6], 2).eval()
    xs = [torch.randn(4, 6), torch.randn(4, 6)]
    before = m(xs)
    with torch.no_grad():
        m.cams[1].global_att[0].weight.add_(1.0)
    assert not torch.allclose(before, m(xs))
    assert m.cams[0].global_att is not m.cams[1].global_att


def test_aff_trains_on_a_batch_of_one():
    m = methods.create("aff", [4, 6], 2).train()
    m([torch.randn(1, 4), torch.randn(1, 6)]).sum().backward()
    assert m.cams[0].local_att[1].running_mean.abs().sum() == 0  # statistics untouched by a one-sample batch


def _numpy_cca(a: np.ndarray, b: np.ndarray, reg: float) -> np.ndarray:
    """Canonical correlations by SVD of the whitened cross-covariance (an independent route)."""
    n = len(a)
    a, b = a - a.mean(0), b - b.mean(0)
    s11 = a.T @ a / (n - 1) + reg * np.eye(a.shape[1])
    s22 = b.T @ b / (n - 1) + reg * np.eye(b.shape[1])

    def inv_sqrt(s):
        u, v = np.linalg.eigh(s)
        return v @ np.diag(u ** -0.5) @ v.T

    return np.sort(np.linalg.svd(inv_sqrt(s11) @ (a.T @ b / (n - 1)) @ inv_sqrt(s22), compute_uv=False))


def test_canonical_correlations_match_an_independent_computation():
    from mmbench.methods.coordinated import canonical_correlations

    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 2))
    a = np.c_[z, rng.normal(size=(500, 2))]
    b = np.c_[z @ [[1.0, 0.5], [0.0, 1.0]] + 0.1 * rng.normal(size=(500, 2)), rng.normal(size=(500, 1))]
    got = canonical_correlations(torch.tensor(a), torch.tensor(b), reg=1e-3).numpy()
    np.testing.assert_allclose(got, _numpy_cca(a, b, 1e-3)[::-1][:3], rtol=1e-6, atol=1e-8)
    assert got[:2].min() > 0.95 and got[2] < 0.2  # two shared directions, one independent
    top = canonical_correlations(torch.tensor(a), torch.tensor(b), reg=1e-3, top_k=2).numpy()
    np.testing.assert_allclose(top, got[:2])


def test_dcca_trains_when_features_are_rank_deficient():
    """ReLU encoders narrower than the embedding: several covariance eigenvalues sit at reg. With Σ^{-1/2} from
    eigh's eigenvectors this run hit an inf gradient and then a failed eigh at step 39 (as fusion_zoo trials did)."""
    torch.manual_seed(0)
    m = methods.create("dcca", [4, 4], 2, embed_dim=16)
    enc = [torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()) for _ in range(2)]
    opt = torch.optim.Adam([*m.parameters(), *enc[0].parameters(), *enc[1].parameters()], lr=3e-3)
    z = torch.randn(256, 8)
    xs = [z + 0.1 * torch.randn(256, 8), z + 0.1 * torch.randn(256, 8)]
    for _ in range(60):
        m([e(x) for e, x in zip(enc, xs)])
        loss = m.aux_loss()
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.proj.parameters())
        opt.step()
    assert loss < -3.0  # four shared directions found: Σ correlations near 4


def test_dcca_aux_loss_is_minus_the_summed_correlations():
    from mmbench.methods.coordinated import canonical_correlations

    torch.manual_seed(0)
    m = methods.create("dcca", [4, 5], 2, embed_dim=3, top_k=2, aux_weight=0.5)
    xs = [torch.randn(32, 4), torch.randn(32, 5)]
    m(xs)
    h0, h1 = m.proj[0](xs[0]), m.proj[1](xs[1])
    torch.testing.assert_close(m.aux_loss(), -0.5 * canonical_correlations(h0, h1, 1e-3, 2).sum())


def test_contrastive_objective_scale_and_embeddings():
    torch.manual_seed(0)
    m = methods.create("contrastive", [4, 5], 2, embed_dim=6)
    assert math.isclose(m.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    xs = [torch.randn(8, 4), torch.randn(8, 5)]
    m(xs)
    za, zb = m.embeddings(xs)
    torch.testing.assert_close(za.norm(dim=1), torch.ones(8))

    def clip_loss(scale):
        logits = scale * za @ zb.T
        t = torch.arange(8)
        return (torch.nn.functional.cross_entropy(logits, t) + torch.nn.functional.cross_entropy(logits.T, t)) / 2

    torch.testing.assert_close(m.aux_loss(), clip_loss(1 / 0.07))
    with torch.no_grad():
        m.logit_scale.fill_(10.0)  # above ln 100: clamped where used
    m(xs)
    torch.testing.assert_close(m.aux_loss(), clip_loss(100.0))
    m([x[:1] for x in xs])
    assert m.aux_loss() is None  # nothing to contrast at B = 1


def test_contrastive_pairs_are_averaged_for_three_modalities():
    torch.manual_seed(0)
    m = methods.create("contrastive", [4, 5, 3], 2, embed_dim=6)
    xs = [torch.randn(8, d) for d in (4, 5, 3)]
    m(xs)
    z = m.embeddings(xs)
    pair = [m._pair_loss(a, b) for a, b in itertools.combinations(z, 2)]
    torch.testing.assert_close(m.aux_loss(), sum(pair) / 3)


def test_encdec_reconstructs_detached_targets_and_predicts_from_the_source():
    torch.manual_seed(0)
    m = methods.create("encdec", [4, 3, 2], 2, hidden=5, source=1)
    xs = [torch.randn(6, d, requires_grad=True) for d in (4, 3, 2)]
    y = m(xs)
    code = torch.tanh(m.encoder(xs[1]))
    torch.testing.assert_close(y, m.out(code))
    want = torch.nn.functional.mse_loss(m.decoder(code), torch.cat([xs[0], xs[2]], 1))
    aux = m.aux_loss()
    torch.testing.assert_close(aux, want)
    aux.backward()
    assert xs[0].grad is None and xs[2].grad is None and xs[1].grad is not None


def test_view_specific_averages_confidences_and_passes_messages():
    torch.manual_seed(0)
    m = methods.create("view_specific", [4, 5, 3], 6, hidden=7).eval()
    xs = [torch.randn(5, d) for d in (4, 5, 3)]
    y = m(xs)
    torch.testing.assert_close(y.exp().sum(1), torch.ones(5))  # log of an average of distributions
    # view 0's prediction depends on view 1 only through the messages
    hs = [torch.relu(f(x)) for f, x in zip(m.inp, xs)]
    h0 = torch.relu(m.self_w[0](hs[0]) + m.msg_w[0]((hs[1] + hs[2]) / 2))
    p0 = torch.softmax(m.pred[0](h0), 1)
    assert torch.all(y.exp() >= p0 / 3 - 1e-6)
    xs2 = [xs[0], xs[1] + 1.0, xs[2]]
    hs2 = [torch.relu(f(x)) for f, x in zip(m.inp, xs2)]
    h0b = torch.relu(m.self_w[0](hs2[0]) + m.msg_w[0]((hs2[1] + hs2[2]) / 2))
    assert not torch.allclose(h0, h0b)


def test_hybrid_starts_as_the_mean_of_early_and_unimodal_predictions():
    torch.manual_seed(0)
    m = methods.create("hybrid", [3, 4], 2)
    xs = [torch.randn(5, 3), torch.randn(5, 4)]
    preds = [m.early(torch.cat(xs, 1)), m.heads[0](xs[0]), m.heads[1](xs[1])]
    torch.testing.assert_close(m(xs), sum(preds) / 3)


def test_gmu_gates_choose_between_modalities():
    torch.manual_seed(0)
    m = methods.create("gmu", [3, 4], 2, hidden=5)
    xs = [torch.randn(5, 3), torch.randn(5, 4)]
    with torch.no_grad():
        m.gate.weight.zero_()
        m.gate.bias.fill_(50.0)  # z → 1: only modality 0 passes
        torch.testing.assert_close(m(xs), m.out(torch.tanh(m.proj[0](xs[0]))))
        m.gate.bias.fill_(-50.0)
        torch.testing.assert_close(m(xs), m.out(torch.tanh(m.proj[1](xs[1]))))


def test_gmu_with_more_modalities_gates_each_one_independently_by_default():
    """M > 2: one sigmoid gate per modality from the concatenation, unnormalised (the public generalisation);
    gate: softmax normalises them over modalities (ours)."""
    torch.manual_seed(0)
    xs = [torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 2)]
    for kind in ("sigmoid", "softmax"):
        torch.manual_seed(0)
        m = methods.create("gmu", [3, 4, 2], 2, hidden=6, **({} if kind == "sigmoid" else {"gate": kind}))
        g = m.gate(torch.cat(xs, -1)).view(5, 3, 6)
        z = torch.sigmoid(g) if kind == "sigmoid" else torch.softmax(g, 1)
        hs = [torch.tanh(p(x)) for p, x in zip(m.proj, xs)]
        torch.testing.assert_close(m(xs), m.out(sum(z[:, i] * hs[i] for i in range(3))))
    assert methods.create("gmu", [3, 4, 2], 2).gate_kind == "sigmoid"
    with pytest.raises(UserError, match="gate must be 'sigmoid' or 'softmax'"):
        methods.create("gmu", [3, 4, 2], 2, gate="tanh")


@pytest.mark.parametrize("quick", [False, True])
def test_fusion_zoo_suite_validates_and_covers_every_vector_method(quick):
    from mmbench.run import prepare
    from mmbench.suite import load_suite
    from tests.conftest import ROOT

    p = prepare(load_suite(ROOT / "suites" / "fusion_zoo.yaml", quick=quick), "cpu")
    vector = {n for n in methods.available() if methods.info(n).inputs == "vectors"}
    assert {t.method for t in p.trials} == vector
    tasks = {t.task_label for t in p.trials}
    assert tasks == {"synthetic-redundancy", "synthetic-uniqueness", "synthetic-synergy"}
    assert len(p.trials) == len(vector) * 3 * (1 if quick else 3)


@pytest.mark.parametrize("name", ["tucker", "block_tucker"])
def test_bilinear_cores_train_the_same_in_both_orders(name, monkeypatch):
    """The outer-product order and the one-input-first orders give the same outputs and the same gradients for every
    parameter (the stored core layout is the one both read, so state dicts load as before)."""
    from mmbench.methods import bilinear

    torch.manual_seed(0)
    m = methods.create(name, [3, 4], 2, mm=9, **({"chunks": 2} if name == "block_tucker" else {})).double()
    xs = [torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 4, dtype=torch.float64)]
    results = []
    for order in ("outer", "q0 first", "q1 first") if name == "tucker" else (True, False):
        if name == "tucker":
            monkeypatch.setattr(type(m), "order", lambda self, *a, order=order: order)
        else:
            monkeypatch.setattr(bilinear, "outer_first", lambda batch, size, outer=order: outer)
        m.zero_grad()
        y = m(xs)
        y.square().sum().backward()
        results.append((y.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}))
    for other in results[1:]:
        torch.testing.assert_close(results[0][0], other[0])
        for k in results[0][1]:
            torch.testing.assert_close(results[0][1][k], other[1][k], msg=k)


def test_tucker_order_follows_the_batch_the_size_and_the_backward():
    """q0 first at batch 1; with a backward to follow the outer product from a batch of mm, without from 8·mm; T·q1
    first from a batch of 2 where mm² ≥ 400 (torch's CPU bmm then runs each product as its own BLAS call)."""
    small, large = (methods.create("tucker", [3, 4], 2, mm=mm) for mm in (16, 20))
    assert [small.order(b, True) for b in (1, 15, 16)] == ["q0 first", "q0 first", "outer"]
    assert [small.order(b) for b in (1, 16, 127, 128)] == ["q0 first", "q0 first", "q0 first", "outer"]
    assert [large.order(b, t) for b in (1, 2, 4096) for t in (False, True)] == ["q0 first"] * 2 + ["q1 first"] * 4
    assert [large.order(b, False, "cuda") for b in (19, 20)] == ["q0 first", "outer"]  # off CPU: as before
    hp, formula = BILINEAR_FLOPS["tucker"]  # the counted forward (no gradients) on both sides of 8·mm = 40
    m = methods.create("tucker", [7, 4], 5, **hp).eval()
    for batch in (39, 40):
        xs = [torch.randn(batch, 7), torch.randn(batch, 4)]
        assert flops(lambda: m(xs), m)["total"] == formula(batch, 7, 4, 5) == m.expected_flops(batch)


def test_mfb_pools_by_bmm_only_where_no_backward_follows(monkeypatch):
    """The bmm pooling from a batch of 2, without gradients, where k > 1; both poolings give the same outputs and
    every parameter the same gradient."""
    torch.manual_seed(0)
    m = methods.create("mfb", [3, 4], 2, mm=5, k=3).double()
    assert [m.pool_by_bmm(b, t) for b in (1, 2) for t in (False, True)] == [False, False, True, False]
    assert not methods.create("mfb", [3, 4], 2, mm=5, k=1).pool_by_bmm(2)
    assert not m.pool_by_bmm(2, False, "cuda")
    xs = [torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)]
    results = []
    for by_bmm in (True, False):
        monkeypatch.setattr(type(m), "pool_by_bmm", lambda self, *a, v=by_bmm: v)
        m.zero_grad()
        y = m(xs)
        y.square().sum().backward()
        results.append((y.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for k in results[0][1]:
        torch.testing.assert_close(results[0][1][k], results[1][1][k], msg=k)


def test_mfh_pools_both_stages_as_its_definition():
    """MFH as the paper writes it: each stage sum-pooled and normalised on its own, then concatenated."""
    from mmbench.methods.bilinear import ssl

    torch.manual_seed(0)
    m = methods.create("mfh", [3, 4], 2, mm=5, k=3).double()
    xs = [torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)]
    a, b, n = m.linear0(xs[0]), m.linear1(xs[1]), 15
    p1 = a[:, :n] * b[:, :n]
    p2 = a[:, n:] * b[:, n:] * p1
    z = [ssl(p.view(6, 5, 3).sum(-1)) for p in (p1, p2)]
    torch.testing.assert_close(m(xs), m.out(torch.cat(z, -1)))


def test_ssl_without_gradients_is_the_function_bit_for_bit():
    """ssl skips its autograd Function where no gradient can be taken; the values are the same bits."""
    from mmbench.methods.bilinear import ssl

    z = torch.randn(5, 17)
    z[0, :4] = 0.0
    with torch.no_grad():
        fast = ssl(z)
    slow = ssl(z.requires_grad_())
    assert torch.equal(fast, slow.detach())
    slow.sum().backward()
    assert torch.isfinite(z.grad).all()  # the Function's gradient (0 at 0) still serves training


@pytest.mark.parametrize("name", ["tucker", "block_tucker", "mutan", "block", "mfb", "mfh", "lmf", "mult"])
def test_every_order_written_by_hand_is_the_method(name):
    """Each hand-written order the order table times computes the module's function, on both sides of every
    batch-size rule, so the table compares equal work."""
    from benchmarks.methods_vs_naive import ORDERS, order_inputs

    hp = {"tucker": {"mm": 5}, "block_tucker": {"mm": 9, "chunks": 2}, "mutan": {"mm": 8, "rank": 3},
          "block": {"mm": 9, "chunks": 2, "rank": 2},
          "mfb": {"mm": 4, "k": 3},
          "mfh": {"mm": 4, "k": 3}, "lmf": {"rank": 3},
          "mult": {"width": 8, "layers": 1, "heads": 2, "dropout": 0.0}}[name]
    dims = {"lmf": [3, 4, 5], "mult": [8, 5]}.get(name, [3, 4])
    torch.manual_seed(0)
    m = methods.create(name, dims, 2, **hp).double().eval()
    for batch in (1, 4, 6, 40):  # mutan at [3, 4], mm 8, rank 3: composed at 40
        xs = order_inputs(name, dims, batch)
        xs = ([x.double() for x in xs[0]], xs[1]) if isinstance(xs, tuple) else [x.double() for x in xs]
        with torch.no_grad():
            want = m(*xs) if isinstance(xs, tuple) else m(xs)
            for order, fn in ORDERS[name].items():
                torch.testing.assert_close(fn(m, xs), want, msg=f"{name} {order} at batch {batch}")
