"""Seeds stacked on a leading dimension, without vmap: the fast way to train seeds together (measure/seeds_together.py).

A copy of the first seed's model in which every parameter holds all the seeds' values stacked, shape (S, *shape),
and every ``nn.Linear`` is a ``SeedLinear``: one ``baddbmm`` over (S, B, in) with weights (S, out, in), one kernel
for all seeds where vmap dispatches each operation through its batching rules. Inputs and outputs carry the seed
dimension first: (S, B, d). The methods' own code is not changed: a fusion method whose forward is correct with a
leading seed dimension once its Linears are seed-batched is called as is; the others have a forward here
(``FORWARDS``) that computes what theirs computes, for each seed on its own rows. A model holding anything else
(another module, a buffer, a method without a forward here) is not seed-batched (``why_not``).

Parameter names are the model's own (a SeedLinear keeps ``weight`` and ``bias``), so seed j's weights are
``p[j]`` for each named parameter.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from mmbench.methods.base import with_ones
from mmbench.methods.bilinear import MFB, MFH, MLB, MUTAN, Block, BlockTucker, LinearSum, Tucker, ssl
from mmbench.methods.basic import EarlyFusion, LateFusion
from mmbench.methods.joint import AdditiveFusion, GatedMultimodalUnit, HybridFusion
from mmbench.methods.tensor import LowRankFusion, TensorFusion
from mmbench.model import FusionModel


class SeedLinear(nn.Module):
    """S Linears applied each to its own seed's rows: (S, B, in) -> (S, B, out)."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.transpose(1, 2)
        return torch.bmm(x, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x, w)


def _own(f: nn.Module, hs: list[torch.Tensor]) -> torch.Tensor:
    """The method's own forward: Linears, elementwise operations and concatenation on the last axis only."""
    return f(hs)


def _late(f: LateFusion, hs: list[torch.Tensor]) -> torch.Tensor:
    preds = torch.stack([head(x) for head, x in zip(f.heads, hs)])  # (M, S, B, o)
    if f.alpha is None:
        return preds.mean(0)
    return torch.einsum("sm,msbo->sbo", torch.softmax(f.alpha, 1), preds)


def _hybrid(f: HybridFusion, hs: list[torch.Tensor]) -> torch.Tensor:
    preds = torch.stack([f.early(torch.cat(hs, -1)), *(h(x) for h, x in zip(f.heads, hs))])  # (M+1, S, B, o)
    return torch.einsum("sk,ksbo->sbo", torch.softmax(f.beta, 1), preds)


def _additive(f: AdditiveFusion, hs: list[torch.Tensor]) -> torch.Tensor:
    ws = iter(f.weights)  # each (S, o, d_m)
    z = torch.baddbmm(f.bias.unsqueeze(1), hs[0], next(ws).transpose(1, 2))
    for x, w in zip(hs[1:], ws):
        z = torch.baddbmm(z, x, w.transpose(1, 2))
    act = {"none": None, "relu": torch.relu, "tanh": torch.tanh}[f.activation]
    return z if act is None else act(z)


def _gmu(f: GatedMultimodalUnit, hs: list[torch.Tensor]) -> torch.Tensor:
    if f.gates == 1:
        return f(hs)
    s, b = hs[0].shape[:2]
    h = [torch.tanh(p(x)) for p, x in zip(f.proj, hs)]
    g = f.gate(torch.cat(hs, -1)).view(s, b, f.gates, f.hidden)
    z = torch.sigmoid(g) if f.gate_kind == "sigmoid" else torch.softmax(g, 2)
    return f.out((z * torch.stack(h, 2)).sum(2))


def _tfn(f: TensorFusion, hs: list[torch.Tensor]) -> torch.Tensor:
    """TensorFusion.forward with its split k, the outer products and contractions over the S·B rows, the matmul with
    each seed's weight a bmm. The contractions are a product and a sum: a bmm of S·B (o, D_m) × (D_m, 1) matrices is
    slow on CPU (its backward ~1.5× the elementwise form's at 384 rows, 16³)."""
    s, b = hs[0].shape[:2]
    xt = [with_ones(x.reshape(s * b, -1)) for x in hs]
    k, weight, bias = f.split, f.linear.weight, f.linear.bias  # (S, o, D), (S, o)
    z = xt[-1]
    for x in reversed(xt[k:-1]):
        z = (x.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
    w = weight.reshape(s, -1, z.shape[1]).transpose(1, 2)
    if k == 0:
        return torch.baddbmm(bias.unsqueeze(1), z.view(s, b, -1), w)
    h = torch.bmm(z.view(s, b, -1), w).view(s * b, -1)  # (S·B, o·D_1⋯D_k)
    del z
    for x, size in zip(reversed(xt[:k]), reversed(f.sizes[:k])):
        h = (h.reshape(s * b, -1, size) * x.unsqueeze(1)).sum(-1)
    return h.view(s, b, -1) + bias.unsqueeze(1)


def _mfb(f: MFB, hs: list[torch.Tensor]) -> torch.Tensor:
    """MFB.forward's sum pooling with the seed axis kept (its view folds the leading axes into one)."""
    s, b = hs[0].shape[:2]
    z = (f.linear0(hs[0]) * f.linear1(hs[1])).view(s, b, f.mm, f.k).sum(-1)
    return f.out(ssl(z))


def _mfh(f: MFH, hs: list[torch.Tensor]) -> torch.Tensor:
    s, b = hs[0].shape[:2]
    n = f.mm * f.k
    prod = f.linear0(hs[0]) * f.linear1(hs[1])
    p1 = prod[..., :n]
    p = torch.cat([p1, prod[..., n:] * p1], -1).view(s, b, 2, f.mm, f.k)
    return f.out(ssl(p.sum(-1)).flatten(2))


def _tucker(f: Tucker, hs: list[torch.Tensor]) -> torch.Tensor:
    """Tucker.forward in its outer-product order (the one its training takes from a batch of mm: its backward is
    GEMMs), each seed's outer products against its own core as (i·j, k)."""
    s, b = hs[0].shape[:2]
    mm = f.mm
    q0, q1 = f.linear0(hs[0]), f.linear1(hs[1])
    core = f.core.transpose(2, 3).reshape(s, mm * mm, mm)  # each (i, k, j) core as (i·j, k)
    outer = (q0.unsqueeze(-1) * q1.unsqueeze(-2)).reshape(s, b, mm * mm)
    return f.out(torch.baddbmm(f.core_bias.unsqueeze(1), outer, core))


def _mutan(f: MUTAN, hs: list[torch.Tensor]) -> torch.Tensor:
    """MUTAN.forward, each side's chain in the order MUTAN picks for the batch, the composed one per seed."""
    s, b = hs[0].shape[:2]

    def side(x: torch.Tensor, linear: SeedLinear, merge: SeedLinear) -> torch.Tensor:
        if not f.compose_first(b, x.shape[-1]):
            return merge(linear(x))
        w = torch.bmm(merge.weight, torch.cat([linear.weight, linear.bias.unsqueeze(-1)], -1))  # (S, R·mm, d+1)
        return torch.baddbmm((w[..., -1] + merge.bias).unsqueeze(1), x, w[..., :-1].transpose(1, 2))

    m = side(hs[0], f.linear0, f.merge0) * side(hs[1], f.linear1, f.merge1)
    return f.out(m.view(s, b, f.rank, f.mm).sum(2))


def _chunks(f: Block | BlockTucker, q: torch.Tensor):
    """_Chunked._grouped with a seed axis: the chunks of q (S, B, mm), group by group, each (S·count, B, s), seed
    major, so that each seed's chunks meet their own weights, stacked (S, count, ...) and flattened alike."""
    start, (k, b) = 0, q.shape[:2]
    for s, count in f.groups:
        yield q[..., start:start + s * count].reshape(k, b, count, s).transpose(1, 2).reshape(k * count, b, s)
        start += s * count


def _joined(f: Block | BlockTucker, zs: list[torch.Tensor], k: int) -> torch.Tensor:
    """Each group's fused chunks (S·count, B, s) back to (S, B, count·s), concatenated: the output layer's input."""
    out = [z.view(k, -1, *z.shape[1:]).transpose(1, 2).flatten(2) for z in zs]
    return f.out(out[0] if len(out) == 1 else torch.cat(out, -1))


def _block(f: Block, hs: list[torch.Tensor]) -> torch.Tensor:
    """Block.forward per seed: each side in BLOCK's order for the batch (the composed one per seed and chunk)."""
    k, b = hs[0].shape[:2]

    def side(x: torch.Tensor, linear: SeedLinear, weights, biases) -> list[torch.Tensor]:
        flat = [(w.flatten(0, 1), c.flatten(0, 1)) for w, c in zip(weights, biases)]  # (S·count, ...)
        if not f.compose_first(b, x.shape[-1]):
            return [torch.baddbmm(c, a, w) for a, (w, c) in zip(_chunks(f, linear(x)), flat)]
        wb, out, start = torch.cat([linear.weight, linear.bias.unsqueeze(-1)], -1), [], 0  # (S, mm, d+1)
        for (s, n), (w, c) in zip(f.groups, flat):
            rows = wb[:, start:start + s * n].reshape(k, n, s, -1).transpose(2, 3).reshape(k * n, -1, s)
            m = torch.bmm(rows, w)  # (S·count, d+1, R·s)
            xs = x.unsqueeze(1).expand(k, n, b, x.shape[-1]).reshape(k * n, b, -1)
            out.append(torch.baddbmm(m[:, -1:] + c, xs, m[:, :-1]))
            start += s * n
        return out

    m0 = side(hs[0], f.linear0, f.merge0_weight, f.merge0_bias)
    m1 = side(hs[1], f.linear1, f.merge1_weight, f.merge1_bias)
    return _joined(f, [f._pool(a * c) for a, c in zip(m0, m1)], k)


def _block_tucker(f: BlockTucker, hs: list[torch.Tensor]) -> torch.Tensor:
    """BlockTucker.forward per seed, every group in the outer-product order (its training order from a batch of s)."""
    k = hs[0].shape[0]
    q0, q1 = f.linear0(hs[0]), f.linear1(hs[1])
    zs = []
    for (s, n), cores, biases, a, c in zip(f.groups, f.cores, f.core_biases, _chunks(f, q0), _chunks(f, q1)):
        core = cores.reshape(k * n, s, s, s).transpose(2, 3).reshape(k * n, s * s, s)  # (S·count, i·j, k)
        outer = (a.unsqueeze(-1) * c.unsqueeze(-2)).flatten(2)
        zs.append(ssl(torch.baddbmm(biases.flatten(0, 1), outer, core)))
    return _joined(f, zs, k)


def _lmf(f: LowRankFusion, hs: list[torch.Tensor]) -> torch.Tensor:
    s, b = hs[0].shape[:2]
    prod = None
    for x, w in zip(hs, f.factors):  # w: (S, d_m+1, o·r)
        g = torch.baddbmm(w[:, -1:], x, w[:, :-1])  # x̃_m W_m, (S, B, o·r)
        prod = g if prod is None else prod * g
    y = torch.bmm(prod.view(s, -1, f.rank), f.fusion_weights.transpose(1, 2))  # (S, B·o, 1)
    return y.view(s, b, f.out_dim) + f.fusion_bias  # fusion_bias (S, 1, o)


FORWARDS: dict[type, Callable[[nn.Module, list[torch.Tensor]], torch.Tensor]] = {
    EarlyFusion: _own, LateFusion: _late, HybridFusion: _hybrid, AdditiveFusion: _additive,
    GatedMultimodalUnit: _gmu, TensorFusion: _tfn, LowRankFusion: _lmf, MLB: _own, LinearSum: _own, MFB: _mfb,
    MFH: _mfh, Tucker: _tucker, MUTAN: _mutan, Block: _block, BlockTucker: _block_tucker}
# Modules whose forward is right with a leading seed dimension (their parameters, if any, are a Linear's).
PLAIN = (nn.Sequential, nn.ModuleList, nn.ParameterList, nn.Linear, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


def why_not(model: nn.Module) -> str:
    """Why this model cannot be seed-batched here ('' when it can)."""
    if type(model) is not FusionModel:
        return "not an mmbench model"
    fusion = model.fusion
    if type(fusion) not in FORWARDS:
        return f"no seed-batched forward for {type(fusion).__name__}"
    if next(model.buffers(), None) is not None:
        return "the model has buffers"
    for m in model.modules():
        if m is not model and m is not fusion and not isinstance(m, PLAIN):
            return f"a {type(m).__name__} module"
    return ""


class SeedBatched(nn.Module):
    """The seeds' models as one: ``forward(xs)`` with xs (S, B, d_m) gives (S, B, outputs)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.model = copy.deepcopy(models[0])
        stacked = dict(self.model.named_parameters())
        for name in stacked:  # each parameter: every seed's values, seed first
            path, _, attr = name.rpartition(".")
            owner = self.model.get_submodule(path)
            owner._parameters[attr] = nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in models]))
        for name, m in list(self.model.named_modules()):
            if type(m) is nn.Linear:
                self.model.set_submodule(name, SeedLinear(m.weight, m.bias))
        self.fusion_forward = FORWARDS[type(self.model.fusion)]

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        hs = [enc(x) for enc, x in zip(self.model.encoders, xs)]
        return self.fusion_forward(self.model.fusion, hs)


def per_seed_loss(target: str, loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Each seed's mean loss, (S,), from outputs (S, B, o) and targets (S, B): train.loss_function's loss per seed
    (their sum's gradient is each seed's own loss's gradient in its own parameters)."""
    if target == "classification":
        return lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
    if loss == "l1":
        return lambda out, y: (out[..., 0] - y).abs().mean(1)
    return lambda out, y: ((out[..., 0] - y) ** 2).mean(1)
