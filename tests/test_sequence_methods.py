"""The sequence methods (MulT, LMF-MulT, METER merged/co-attention, pooled baseline) against their closed forms,
with unaligned lengths and padding masks."""
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmbench import methods
from mmbench.errors import UserError
from mmbench.measure import flops, params
from mmbench.methods import attention_blocks
from mmbench.methods.attention_blocks import Attention, attend, masked_last
from mmbench.methods.transformer import resample

SMALL = {  # small settings so the whole file stays fast; defaults are checked separately
    "mult": {"width": 8, "layers": 2, "heads": 2, "dropout": 0.1},  # the reference code's future mask (default)
    "mult:paper": {"width": 8, "layers": 2, "heads": 2, "dropout": 0.1, "attn_mask": False},
    "lmf_mult": {"width": 8, "layers": 2, "heads": 2, "rank": 3, "dropout": 0.1},
    "lmf_mult:2": {"width": 8, "layers": 2, "heads": 2, "rank": 3, "variant": 2, "dropout": 0.1},
    "merged_attn": {"width": 8, "layers": 2, "heads": 2, "dropout": 0.1},
    "co_attn": {"width": 8, "layers": 2, "heads": 2, "dropout": 0.1},
    "pool_early": {},
}
DIMS, LENS = [5, 3, 4], [7, 2, 5]  # unaligned: every modality has its own length and width


def _create(case, **extra):
    """A SMALL case ("method" or "method:variant") at DIMS → 3 outputs."""
    return methods.create(case.split(":")[0], DIMS, 3, **{**SMALL[case], **extra})


@pytest.fixture(params=["batched", "fused"])
def kernel(request, monkeypatch):
    """Run a test under each attention kernel (the shape rule would pick the fused one at these small sizes)."""
    if request.param == "fused":
        monkeypatch.setattr(attention_blocks, "BATCHED_MAX_STEPS", 0)
    else:
        monkeypatch.setattr(attention_blocks, "BATCHED_MIN_SCORES", 0)
    return request.param


def _xs(batch, dims=DIMS, lens=LENS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, t, d, generator=g) for t, d in zip(lens, dims)]


def _lmf_params(r, o, dims):
    return r * o * sum(d + 1 for d in dims) + r + o


def _stack(e, layers):  # METHODS.md: per layer 12e² + 13e, plus 2e (final LN) per stack
    return layers * (12 * e * e + 13 * e) + 2 * e


def _head(c, o):  # residual MLP (two C×C Linears) + Linear → o
    return 2 * (c * c + c) + (c + 1) * o


def _meter_embed(dims, h, o):  # Linear(d_m→H) + CLS + type embedding per modality, poolers, Linear(MH→o)
    m = len(dims)
    return sum(d + 1 for d in dims) * h + 2 * m * h + m * (h * h + h) + (m * h + 1) * o


def closed_form(name, dims, o, width=None, layers=None, heads=None, rank=None, self_layers=None, variant=None,
                **_):
    """The full parameter counts written out from METHODS.md's per-layer forms, independently of the classes."""
    m, d = len(dims), width
    if name == "mult":
        s, e = self_layers or max(layers, 3), (m - 1) * d
        proj = sum(dm for dm in dims if dm != d) * d  # a modality already d wide is not projected (reference code)
        return proj + m * (m - 1) * _stack(d, layers) + m * _stack(e, s) + _head(m * e, o)
    if name == "lmf_mult":  # variant 2 doubles the crossmodal and self stacks and the head's input
        s, v = self_layers or max(layers, 3), variant or 1
        return (sum(dims) * d + _lmf_params(rank, d, dims) + v * m * (_stack(d, layers) + _stack(d, s))
                + _head(v * m * d, o))
    if name == "merged_attn":
        return _meter_embed(dims, d, o) + layers * (12 * d * d + 13 * d)
    if name == "co_attn":
        return _meter_embed(dims, d, o) + m * layers * (16 * d * d + 19 * d)
    return (sum(dims) + 1) * o


SETTINGS = [
    ("mult", [4, 6], 1, {"width": 6, "layers": 1, "heads": 3}),
    ("mult", [5, 3, 4], 3, {"width": 8, "layers": 2, "heads": 2, "self_layers": 1}),
    ("mult", [2, 3, 4, 5], 2, {"width": 4, "layers": 1, "heads": 2}),
    ("mult", [20, 5, 35], 1, {"width": 30, "layers": 5, "heads": 5}),  # the reference code's defaults
    ("mult", [8, 3, 8], 2, {"width": 8, "layers": 1, "heads": 2}),  # two modalities already width d
    ("lmf_mult", [4, 6], 2, {"width": 6, "layers": 1, "heads": 2, "rank": 1}),
    ("lmf_mult", [5, 3, 4], 3, {"width": 8, "layers": 3, "heads": 4, "rank": 5, "self_layers": 2}),
    ("lmf_mult", [20, 5, 35], 1, {"width": 30, "layers": 5, "heads": 5, "rank": 4}),
    ("lmf_mult", [4, 6], 2, {"width": 6, "layers": 1, "heads": 2, "rank": 1, "variant": 2}),
    ("lmf_mult", [5, 3, 4], 3, {"width": 8, "layers": 3, "heads": 4, "rank": 5, "self_layers": 2, "variant": 2}),
    ("merged_attn", [4, 6], 2, {"width": 8, "layers": 1, "heads": 2}),
    ("merged_attn", [5, 3, 4], 5, {"width": 12, "layers": 3, "heads": 3}),
    ("merged_attn", [20, 5, 35], 1, {"width": 64, "layers": 2, "heads": 4}),
    ("co_attn", [4, 6], 2, {"width": 8, "layers": 1, "heads": 2}),
    ("co_attn", [5, 3, 4], 5, {"width": 12, "layers": 2, "heads": 3}),
    ("co_attn", [20, 5, 35], 1, {"width": 64, "layers": 2, "heads": 4}),
    ("pool_early", [5, 3, 4], 3, {}),
]


@pytest.mark.parametrize("name,dims,o,hp", SETTINGS)
def test_params_match_closed_form(name, dims, o, hp):
    with torch.device("meta"):  # counting needs no memory
        m = methods.create(name, dims, o, **hp)
    assert params(m) == closed_form(name, dims, o, **hp) == m.expected_params()


def test_per_layer_forms_of_methods_md():
    mult = methods.create("mult", [4, 5], 2, width=10, layers=2, heads=2)
    assert params(mult.cross[0]) == 2 * (12 * 100 + 13 * 10) + 2 * 10          # crossmodal stack, e = d
    assert params(mult.self_attn[0]) == 3 * (12 * 100 + 13 * 10) + 2 * 10      # self stack, e = (M-1)d = d
    merged = methods.create("merged_attn", [4, 5], 2, width=16, layers=1, heads=4)
    assert params(merged.layers[0]) == 12 * 16 ** 2 + 13 * 16
    co = methods.create("co_attn", [4, 5], 2, width=16, layers=1, heads=4)
    assert params(co.streams[0][0]) == params(co.streams[1][0]) == 16 * 16 ** 2 + 19 * 16
    assert co.streams[0][0].cross.q.weight is not co.streams[1][0].cross.q.weight  # separate weights per stream


def test_defaults_are_the_documented_ones():
    mult = methods.create("mult", DIMS, 2)
    assert (mult.width, mult.layers, mult.heads, mult.self_layers) == (30, 5, 5, 5)
    assert methods.info("lmf_mult").rank_param == "rank" and methods.info("mult").rank_param is None
    for name in SMALL:
        assert methods.info(name.split(":")[0]).inputs == "sequences"
    assert methods.create("lmf_mult", DIMS, 2).variant == 1
    assert mult.attn_mask is True and all(enc.causal for enc in [*mult.cross, *mult.self_attn])
    assert not methods.create("mult", DIMS, 2, attn_mask=False).cross[0].causal
    with pytest.raises(UserError, match="attn_mask must be true or false"):
        methods.create("mult", DIMS, 2, attn_mask="yes")


def test_mult_passes_a_modality_already_of_width_d_through_unprojected():
    """As the reference code: `x if orig_d == d else proj(x)`; counted FLOPs follow."""
    m = methods.create("mult", [8, 3], 2, width=8, layers=1, heads=2).eval()
    assert isinstance(m.proj[0], nn.Identity) and isinstance(m.proj[1], nn.Linear)
    xs = _xs(2, dims=[8, 3], lens=[4, 6])
    assert flops(lambda: m(xs), m)["total"] == m.expected_flops(2, [4, 6])


def test_mult_positions_start_at_one_as_the_reference_table():
    """fairseq's table (MulT's) reserves position 0 for padding: the first step gets sin/cos at position 1."""
    enc = methods.create("mult", [4, 6], 2, width=6, layers=1, heads=2).cross[0].eval()
    pe = enc.embed(torch.zeros(1, 3, 6))[0]  # zero input: what is added is the positional table
    freq = torch.exp(torch.arange(3) * -(math.log(10000.0) / 2))
    for step in range(3):
        pos = step + 1
        torch.testing.assert_close(pe[step], torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)]))


@pytest.mark.parametrize("tq,tk", [(5, 5), (3, 7), (7, 3), (1, 4)])
def test_future_mask_is_the_reference_codes_triangle(tq, tk):
    """Without padding, the reference's additive mask triu(−inf, 1 + |Tk − Tq|): key j is hidden from query i when
    j ≥ i + 1 + |Tk − Tq|."""
    hidden = torch.triu(torch.ones(tq, tk, dtype=torch.bool), 1 + abs(tk - tq))
    assert torch.equal(attention_blocks.future_mask(tq, tk), ~hidden[None])


def test_future_mask_uses_valid_lengths_and_key_padding():
    q_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)   # L_q = 4, 2
    k_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)  # L_k = 3, 6
    got = attention_blocks.future_mask(4, 6, q_mask, k_mask)
    for b, (lq, lk) in enumerate([(4, 3), (2, 6)]):
        want = attention_blocks.future_mask(lq, lk)[0]  # the unpadded sample's mask …
        assert torch.equal(got[b, :lq, :lk], want)
        assert not got[b, :, lk:].any()                 # … and padded keys never attended


@pytest.mark.parametrize("attn_mask", [True, False])
def test_the_future_mask_hides_later_source_steps(attn_mask, kernel):
    """Crossmodal, Tq = Tk = 5: with the mask, query step 0 sees only key step 0, so changing later source steps
    leaves its output unchanged; without the mask it changes."""
    torch.manual_seed(0)
    m = methods.create("mult", [4, 6], 2, width=8, layers=2, heads=2, attn_mask=attn_mask).eval()
    enc = m.cross[0]
    z, src = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    later = src.clone()
    later[:, 1:] += torch.randn(2, 4, 8)
    with torch.no_grad():
        a, b = enc(z, None, src, None), enc(z, None, later, None)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6) == attn_mask
    assert not torch.allclose(a[:, -1], b[:, -1])  # the last step sees every key either way


def test_future_mask_rows_with_no_valid_key_give_zeros_and_finite_gradients(monkeypatch):
    """With a future mask a query row can lose every key (its only allowed keys are padding): zeros, not NaN, from
    both kernels, equal values and gradients."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, t, 4, generator=g, dtype=torch.float64, requires_grad=True) for t in (4, 4, 4))
    k_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)  # sample 0: its first keys are padding
    rows = attention_blocks.future_mask(4, 4, k_mask, k_mask)  # L_q = L_k: an offset of 0
    assert not rows[0, 0].any() and not rows[0, 1].any()  # queries 0 and 1 of sample 0 have no valid key
    results = []
    monkeypatch.setattr(attention_blocks, "BATCHED_MIN_SCORES", 0)  # these small shapes batched, then fused
    for steps in (attention_blocks.BATCHED_MAX_STEPS, 0):
        monkeypatch.setattr(attention_blocks, "BATCHED_MAX_STEPS", steps)
        out = attend(q, k, v, rows)
        results.append((out, torch.autograd.grad(out.sin().sum(), (q, k, v))))
    (a, ga), (b, gb) = results
    assert torch.equal(a[0, :, :2], torch.zeros_like(a[0, :, :2])) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    for x, y in zip(ga, gb):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y)


def test_mult_with_leading_padding_trains_under_the_future_mask(kernel):
    """Padding at the start of a source sequence (not the layout mmbench's loaders give, but a mask may say so):
    early queries have no valid key under the future mask; outputs and gradients stay finite."""
    torch.manual_seed(0)
    m = _create("mult").train()
    masks = [torch.ones(3, t, dtype=torch.bool) for t in LENS]
    masks[0][0, :4] = False
    y = m(_xs(3), masks=masks)
    y.sum().backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_attention_is_softmax_qk_v_with_masked_keys(kernel):
    """The fused kernel computes softmax(QKᵀ/√d_h)V per head, masked keys excluded, written out here."""
    torch.manual_seed(0)
    att = Attention(8, 2).double().eval()
    x, kv = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 6, 8, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    q, k, v = att.q(x), att.k(kv), att.v(kv)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        heads.append(torch.softmax(scores, -1) @ v[..., sl])
    torch.testing.assert_close(att(x, kv, mask), att.o(torch.cat(heads, -1)))


class _Ops(TorchDispatchMode):
    """The matmul-like aten ops a call runs."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if "mm" in name or "attention" in name:
            self.names.add(name)
        return func(*args, **(kwargs or {}))


def _ops(fn):
    with _Ops() as rec:
        fn()
    return rec.names


@pytest.mark.parametrize("b,tq,tk,kernel_ops", [
    (32, 50, 30, {"baddbmm", "bmm"}),          # short sequences: two batched GEMMs
    (32, 64, 64, {"_scaled_dot_product_flash_attention_for_cpu"}),   # Tq·Tk ≥ 64² per head: fused
    (1024, 40, 30, {"_scaled_dot_product_flash_attention_for_cpu"}),  # B·h·Tq·Tk > 2²² scores: fused
    (16, 63, 64, {"baddbmm", "bmm"}),
    (1, 63, 64, {"_scaled_dot_product_flash_attention_for_cpu"}),  # B·h·Tq·Tk < 2¹⁷ scores: fused
    (64, 16, 16, {"_scaled_dot_product_flash_attention_for_cpu"}),  # MulT's self-attention in sequence_fusion
])
def test_the_kernel_follows_the_shape(b, tq, tk, kernel_ops):
    q, k = torch.randn(b, 4, tq, 8), torch.randn(b, 4, tk, 8)
    assert _ops(lambda: attend(q, k, k)) == kernel_ops


def test_both_kernels_agree_on_values_gradients_and_empty_rows(monkeypatch):
    """Same function either way; a sample with no valid key gets zeros from both (not NaN)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, t, 4, generator=g, dtype=torch.float64, requires_grad=True) for t in (5, 7, 7))
    mask = torch.tensor([[1] * 7, [0] * 7, [0, 1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    results = []
    monkeypatch.setattr(attention_blocks, "BATCHED_MIN_SCORES", 0)  # these small shapes batched, then fused
    for steps in (attention_blocks.BATCHED_MAX_STEPS, 0):
        monkeypatch.setattr(attention_blocks, "BATCHED_MAX_STEPS", steps)
        out = attend(q, k, v, mask)
        results.append((out, torch.autograd.grad(out.sin().sum(), (q, k, v))))
    shared = attention_blocks.KeyMask(mask)  # the form an encoder hands its layers: bias derived once, reused
    monkeypatch.setattr(attention_blocks, "BATCHED_MAX_STEPS", 64 * 64)
    torch.testing.assert_close(attend(q, k, v, shared), results[0][0])
    assert shared.bias(2, torch.float64) is shared.bias(2, torch.float64)
    (a, ga), (b, gb) = results
    assert torch.isfinite(a).all() and torch.equal(a[1], torch.zeros_like(a[1]))
    torch.testing.assert_close(a, b)
    for x, y in zip(ga, gb):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("name", [case for case in SMALL if case != "pool_early"])
def test_a_sample_missing_a_whole_modality_trains(name, kernel):
    """Every step of one modality padded for one sample (a missing modality): finite outputs and gradients."""
    torch.manual_seed(0)
    m = _create(name).train()
    masks = [torch.ones(3, t, dtype=torch.bool) for t in LENS]
    masks[1][0] = False
    y = m(_xs(3), masks=masks)
    y.sum().backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_attention_flops_by_hand(kernel):
    """B=1, Tq=2, Tk=3, e=4: q,o 2·(2·2·16) + k,v 2·(2·3·16) + QKᵀ 2·2·3·4 + AV 2·2·3·4 = 416."""
    att = Attention(4, 2)
    x, kv = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    assert flops(lambda: att(x, kv), att)["total"] == 128 + 192 + 48 + 48


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("batch,lens", [(1, LENS), (3, [4, 9, 1])])
def test_counted_flops_are_nonzero_and_match_closed_form(name, batch, lens, kernel):
    m = _create(name).eval()
    xs = _xs(batch, lens=lens)
    counts = flops(lambda: m(xs), m)
    expected = m.expected_flops(batch, lens)
    assert counts["total"] > 0 and not counts["uncounted"]
    assert abs(counts["total"] - expected) <= 0.05 * expected   # the bound …
    assert counts["total"] == expected                          # … and in fact every matmul is accounted for


def test_default_size_flops_match_closed_form():
    for name in ("mult", "lmf_mult", "merged_attn", "co_attn"):
        m = methods.create(name, [6, 4], 2).eval()
        xs = _xs(1, dims=[6, 4], lens=[5, 3])
        assert flops(lambda: m(xs), m)["total"] == m.expected_flops(1, [5, 3]), name


def test_fused_attention_is_flagged_not_counted_as_zero():
    """The defect METHODS.md warns about: torch's own fast paths hide their matmuls from the counter."""
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    x = torch.randn(1, 5, 16)
    counts = flops(lambda: layer(x), layer)
    assert counts["total"] == 0 and any("transformer_encoder_layer" in op for op in counts["uncounted"])


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("batch", [1, 4])
def test_output_shape_and_gradients_reach_every_parameter(name, batch, kernel):
    torch.manual_seed(0)
    m = _create(name).train()
    xs = _xs(batch)
    masks = [torch.ones(batch, t, dtype=torch.bool) for t in LENS]
    masks[0][:, 5:] = False  # some padding, the last valid step is not the last step
    y = m(xs, masks=masks)
    assert y.shape == (batch, 3) and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    assert all(p.grad is not None for p in m.parameters())  # every parameter is in the graph
    # A key bias adds q·b_k to every score of a row, which softmax ignores: its gradient is exactly zero in every
    # transformer (it is in METHODS.md's 12e²+13e all the same). Every other parameter must get a gradient.
    dead = [n for n, p in m.named_parameters() if p.grad.abs().sum() == 0 and not n.endswith(".k.bias")]
    assert not dead, dead


@pytest.mark.parametrize("name", list(SMALL))
def test_padding_content_never_reaches_the_output(name, kernel):
    """Outputs are identical whether the padded steps hold zeros or garbage."""
    torch.manual_seed(0)
    m = _create(name).eval()
    lens = torch.tensor([[7, 3, 1, 5], [2, 1, 2, 1], [5, 5, 2, 3]])  # per modality, per sample
    masks = [torch.arange(t)[None, :] < n[:, None] for t, n in zip(LENS, lens)]
    clean = [x.masked_fill(~mk[:, :, None], 0.0) for x, mk in zip(_xs(4), masks)]
    garbage = [x.masked_fill(~mk[:, :, None], 0.0) + 100 * torch.randn_like(x) * ~mk[:, :, None]
               for x, mk in zip(clean, masks)]
    assert not all(torch.equal(a, b) for a, b in zip(clean, garbage))
    with torch.no_grad():
        a, b = m(clean, masks=masks), m(garbage, masks=masks)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(SMALL))
def test_masked_sample_equals_the_unpadded_sequence(name, kernel):
    """A padded sample gives what its unpadded, shorter sequences give (positions restart at 0 either way)."""
    torch.manual_seed(0)
    m = _create(name, **({"fused_len": 6} if name.startswith("lmf_mult") else {})).eval()
    xs, true = _xs(1), [4, 2, 3]
    masks = [torch.arange(t)[None, :] < n for t, n in zip(LENS, true)]
    with torch.no_grad():
        padded = m(xs, masks=masks)
        short = m([x[:, :n] for x, n in zip(xs, true)])
    torch.testing.assert_close(padded, short, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_deterministic_under_seed_and_train_eval(name):
    def build(seed):
        torch.manual_seed(seed)
        return _create(name)

    a, b, c = build(1), build(1), build(2)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    if params(a) > 0 and name != "pool_early":
        assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    xs = _xs(3)
    a.eval()
    with torch.no_grad():
        assert torch.equal(a(xs), a(xs))  # eval: no dropout
    if name != "pool_early":
        a.train()
        torch.manual_seed(5)
        y1 = a(xs)
        torch.manual_seed(5)
        y2 = a(xs)
        y3 = a(xs)
        assert torch.equal(y1, y2) and not torch.equal(y1, y3)  # dropout active in train, seeded


@pytest.mark.parametrize("name", list(SMALL))
def test_bfloat16_autocast_on_cpu(name, kernel):
    torch.manual_seed(0)
    m = _create(name).eval()
    xs = _xs(2)
    masks = [torch.ones(2, t, dtype=torch.bool) for t in LENS]
    masks[1][1, 1:] = False
    with torch.no_grad():
        ref = m(xs, masks=masks)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(xs, masks=masks)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3) and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0.1, atol=0.15)


def test_co_attention_two_streams_and_bad_hyperparameters():
    m = methods.create("co_attn", [4, 6], 2, width=8, layers=1, heads=2)
    assert len(m.streams) == 2 and m(_xs(2, dims=[4, 6], lens=[3, 8])).shape == (2, 2)
    with pytest.raises(UserError, match="multiple of heads"):
        methods.create("mult", [4, 6], 2, width=10, heads=3)
    with pytest.raises(UserError, match="layers must be positive"):
        methods.create("merged_attn", [4, 6], 2, layers=0)
    with pytest.raises(UserError, match="variant must be 1 .* or 2"):
        methods.create("lmf_mult", [4, 6], 2, variant=3)
    with pytest.raises(UserError, match="rank must be positive"):
        methods.create("lmf_mult", [4, 6], 2, rank=0)
    with pytest.raises(UserError, match="2\\+ modalities"):
        methods.create("mult", [4], 2)


def test_masked_last_and_resample():
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert masked_last(x, mask).flatten().tolist() == [2.0, 9.0]
    # onto 6 points, step i reads ⌊(i+½)/6·L⌋: L=3 → 0,0,1,1,2,2; L=5 → 0,1,2,2,3,4 (never a padded step)
    assert resample(x, mask, 6).flatten().tolist() == [0, 0, 1, 1, 2, 2, 5, 6, 7, 7, 8, 9]
    assert resample(x, mask, 2).flatten().tolist() == [0, 2, 6, 8]
