"""Bilinear pooling: MLB, MFB, MFH, Tucker, MUTAN, BLOCK, BlockTucker, compact bilinear pooling (MCB), and the
family's additive baseline LinearSum.

All take exactly two modalities (x0, x1); a suite giving more is refused at plan time through the registry's
modality range (these methods are defined on a pair, and chaining pairs would be a different method with its own
parameter count). ssl(z) = sign(z)·√|z| then L2 normalisation, where a method's paper applies it.
Defaults are scaled down from the VQA configs (MLB mm=1200, MFB/MFH mm=1000 k=5, MUTAN mm=1600 R=15, BLOCK mm=1600
C=20 R=15, BlockTucker mm=1600 C=20, LinearSum mm=1200, MCB D=16000) to the dims a synthetic benchmark uses; every
one is a hyperparameter.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method


class SignedSqrt(torch.autograd.Function):
    """sign(z)·√|z| with gradient 0 at z = 0 (where autograd's own would be 0·∞ = NaN; ReLU'd products such as MLB's
    are exactly 0 often). Written as a Function rather than √relu(z) − √relu(−z) because √ of exact zeros is slow on
    CPU: that form costs ~8× more on a half-zero input. Forward and context apart, so vmap can batch it (seeds
    trained together)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: torch.Tensor) -> torch.Tensor:
        return torch.sign(z) * torch.sqrt(torch.abs(z))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        a = y.abs()  # d/dz sign(z)√|z| = 1 / (2√|z|)
        return torch.where(a > 0, grad / (2 * a), torch.zeros_like(grad))


def ssl(z: torch.Tensor) -> torch.Tensor:
    """Signed square root, then L2 normalisation over the last dim. Where no gradient can be taken (inference), the
    same two ops without the autograd Function, whose call alone costs more than the ops at small sizes (17 µs of
    29 at (1, 128))."""
    if not torch.is_grad_enabled():
        return F.normalize(SignedSqrt.forward(z), dim=-1)
    return F.normalize(SignedSqrt.apply(z), dim=-1)


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")


class _Pair(Fusion):
    """Two-input base: the input projections x0 → a, x1 → b that every member of the family starts with."""

    def __init__(self, dims: Sequence[int], out_dim: int, width0: int, width1: int | None = None):
        super().__init__(dims, out_dim)
        self.linear0 = nn.Linear(self.dims[0], width0)
        self.linear1 = nn.Linear(self.dims[1], width0 if width1 is None else width1)


@register_method("mlb", family="bilinear", max_modalities=2, rank_param="mm")
class MLB(_Pair):
    """MLB (Kim 2017): ReLU(W0 x0) ⊙ ReLU(W1 x1) (a rank-mm bilinear form), ssl, Linear → o."""

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 256):
        _positive(mm=mm)
        super().__init__(dims, out_dim, mm)
        self.mm = int(mm)
        self.out = nn.Linear(mm, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        z = torch.relu(self.linear0(xs[0])) * torch.relu(self.linear1(xs[1]))
        return self.out(ssl(z))

    def expected_params(self) -> int:
        d0, d1 = self.dims
        return (d0 + d1 + 2) * self.mm + (self.mm + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        d0, d1 = self.dims
        return 2 * batch * self.mm * (d0 + d1 + self.out_dim)


@register_method("mfb", family="bilinear", max_modalities=2, rank_param="k")
class MFB(_Pair):
    """MFB (Yu 2017): project both to mm·k, multiply, sum-pool groups of k → mm, ssl, Linear → o."""

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 128, k: int = 5):
        _positive(mm=mm, k=k)
        super().__init__(dims, out_dim, mm * k)
        self.mm, self.k = int(mm), int(k)
        self.out = nn.Linear(mm, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        a, b = self.linear0(xs[0]), self.linear1(xs[1])
        if self.pool_by_bmm(a.shape[0], torch.is_grad_enabled(), a.device.type):
            z = torch.bmm(a.view(-1, 1, self.k), b.view(-1, self.k, 1)).view(-1, self.mm)
        else:
            z = (a * b).view(-1, self.mm, self.k).sum(-1)
        return self.out(ssl(z))

    def pool_by_bmm(self, batch: int, training: bool = False, device: str = "cpu") -> bool:
        """Whether the product and its sum over each group of k are one bmm of B·mm dot products of length k, which
        never writes the (B, mm·k) product: 2-6% faster forward on CPU from k 2 (tie at k 8; 14% slower at k 1, where
        there is nothing to pool). Its backward is per-sample products again, 1.4-1.9x slower in training, so only
        where no backward follows; and from a batch of 2, so that a row's FLOPs, counted at batch 1, stay those of the
        sum (whose multiply-adds flop_counter does not count; the bmm's it does). Measured on CPU only: elsewhere the
        sum, as before."""
        return device == "cpu" and not training and batch > 1 and self.k > 1

    def expected_params(self) -> int:
        d0, d1 = self.dims
        return (d0 + d1 + 2) * self.mm * self.k + (self.mm + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        """The forward without gradients."""
        d0, d1 = self.dims
        pool = self.mm * self.k if self.pool_by_bmm(batch) else 0
        return 2 * batch * (self.mm * self.k * (d0 + d1) + pool + self.mm * self.out_dim)


@register_method("mfh", family="bilinear", max_modalities=2, rank_param="k")
class MFH(Fusion):
    """MFH (Yu 2018): two MFB stages; the second's product is multiplied by the first's pre-pool product; concat → o.

    p1 = (U1 x0) ⊙ (V1 x1), p2 = (U2 x0) ⊙ (V2 x1) ⊙ p1 (each mm·k wide), z_i = ssl(sumpool_k(p_i)),
    y = Linear(2mm → o)([z1; z2]). U1 and U2 (and V1, V2) are stored as one Linear each, so x0 is read once.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 128, k: int = 5):
        _positive(mm=mm, k=k)
        super().__init__(dims, out_dim)
        self.mm, self.k = int(mm), int(k)
        self.linear0 = nn.Linear(self.dims[0], 2 * mm * k)  # [U1; U2]
        self.linear1 = nn.Linear(self.dims[1], 2 * mm * k)  # [V1; V2]
        self.out = nn.Linear(2 * mm, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        n = self.mm * self.k
        prod = self.linear0(xs[0]) * self.linear1(xs[1])  # [p1 | U2x0 ⊙ V2x1]
        p1 = prod[:, :n]
        p = torch.cat([p1, prod[:, n:] * p1], -1).view(-1, 2, self.mm, self.k)  # [p1 | p2]
        # Both stages sum-pooled over k and normalised (each over its own mm) in one op each: [z1 | z2].
        return self.out(ssl(p.sum(-1)).flatten(1))

    def expected_params(self) -> int:
        d0, d1 = self.dims
        return 2 * (d0 + d1 + 2) * self.mm * self.k + (2 * self.mm + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        d0, d1 = self.dims
        return 2 * batch * (2 * self.mm * self.k * (d0 + d1) + 2 * self.mm * self.out_dim)


@register_method("tucker", family="bilinear", max_modalities=2, rank_param="mm")
class Tucker(_Pair):
    """Tucker fusion: project both to mm, full bilinear core T ∈ R^{mm×mm×mm} (+ bias), Linear → o.

    z_k = Σ_ij T[i, j, k] q0_i q1_j + b_k, in one of three orders (torch's own bilinear op is invisible to
    flop_counter; all are counted), chosen by `order`: q0 · T as (mm, mm·mm) then B matrix-vector products with q1,
    or T · q1 first then B vector-matrix products with q0 (both 2B(mm³ + mm²) FLOPs); or the outer product q0 ⊗ q1
    (B, mm²) and one GEMM with the core re-laid out as (i·j, k) (2B·mm³ FLOPs, plus an mm³ copy per call). The stored
    layout (i, k, j) is unchanged. benchmarks/methods_vs_naive.py times every order.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 32):
        _positive(mm=mm)
        super().__init__(dims, out_dim, mm)
        self.mm = int(mm)
        bound = 1 / math.sqrt(mm)  # nn.Bilinear's init
        self.core = nn.Parameter(torch.empty(mm, mm, mm).uniform_(-bound, bound))  # (i, k, j)
        self.core_bias = nn.Parameter(torch.empty(mm).uniform_(-bound, bound))
        self.out = nn.Linear(mm, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        q0, q1 = self.linear0(xs[0]), self.linear1(xs[1])
        mm, order = self.mm, self.order(q0.shape[0], torch.is_grad_enabled(), q0.device.type)
        if order == "outer":
            core = self.core.transpose(1, 2).reshape(mm * mm, mm)  # (i·j, k)
            z = torch.addmm(self.core_bias, (q0.unsqueeze(-1) * q1.unsqueeze(1)).flatten(1), core)
        elif order == "q1 first":
            u = F.linear(q1, self.core.view(mm * mm, mm)).view(-1, mm, mm)  # (B, i, k)
            z = torch.baddbmm(self.core_bias.view(1, 1, -1), q0.unsqueeze(1), u).squeeze(1)
        else:
            t = torch.mm(q0, self.core.view(mm, -1)).view(-1, mm, mm)  # (B, k, j)
            z = torch.baddbmm(self.core_bias.view(1, -1, 1), t, q1.unsqueeze(-1)).squeeze(-1)
        return self.out(z)

    def order(self, batch: int, training: bool = False, device: str = "cpu") -> str:
        """Which order, measured on CPU (benchmarks/methods_vs_naive.py; the figures are in issue 28's notes).
        - "q1 first" on CPU from a batch of 2 where mm² ≥ 400: torch's CPU bmm then runs each per-sample product as its
          own BLAS call, where the vector-matrix form is 5-7x faster than matrix-vector (mm 20-32: 1.3-2x faster than
          q0 first, forward and training; the outer order 5-45% behind it).
        - "outer" from a batch of mm where a backward follows (its backward is GEMMs, not per-sample products; mm 16,
          batch 16-256: up to 28% faster than q0 first in training); on CPU without a backward from a batch of 8·mm
          (the forward alone at mm 16: q0 first faster to batch 64, a tie at 96-128, the outer order 2-5% ahead at
          256; at mm 8 and 12 it was behind at every batch measured, to 1024: left as it is, no suite runs them).
        - "q0 first" otherwise: its per-sample products stay in torch's fused small-product loop.
        Off CPU (not measured) the rule is the one before these measurements: the outer order from a batch of mm."""
        cpu = device == "cpu"
        if cpu and batch > 1 and self.mm * self.mm >= 400:
            return "q1 first"
        return "outer" if outer_first(batch, self.mm * (8 if cpu and not training else 1)) else "q0 first"

    def expected_params(self) -> int:
        d0, d1 = self.dims
        mm = self.mm
        return (d0 + d1 + 2) * mm + mm ** 3 + mm + (mm + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        d0, d1 = self.dims
        mm = self.mm
        core = mm ** 3 + (0 if self.order(batch) == "outer" else mm ** 2)  # the forward without gradients
        return 2 * batch * (mm * (d0 + d1) + core + mm * self.out_dim)


def cheaper_composed(composed: int, in_turn: int) -> bool:
    """Whether a chain of two linear maps (MUTAN's and BLOCK's sides) is computed with the maps multiplied first: when
    that needs at most 3/4 of the FLOPs of applying them in turn. The margin: the composed order's GEMM has the input
    width d as its inner dimension, a few MACs per output written, and runs at a lower rate (BLOCK at d 16, batch
    256: 11% fewer FLOPs, 5% slower; at d 8: half the FLOPs, 7-15% faster)."""
    return 4 * composed <= 3 * in_turn


def outer_first(batch: int, size: int) -> bool:
    """A bilinear core of side ``size`` (Tucker, BlockTucker's chunks) contracted as the outer product of its two
    inputs and one GEMM, rather than one input first then per-sample products: from a batch of ``size`` on."""
    return batch >= size


@register_method("mutan", family="bilinear", max_modalities=2, rank_param="rank")
class MUTAN(_Pair):
    """MUTAN (Ben-younes 2017): z = Σ_{r=1..R} (A_r q̃0) ⊙ (B_r q̃1) after projecting both inputs to mm; Linear → o.

    A_r, B_r ∈ R^{mm×(mm+1)} (the +1 is a bias) are stored as one Linear(mm → R·mm) per side. Each side is a chain of
    two Linears, x (B, d) → (B, mm) → (B, R·mm), computed in its cheaper order (`compose_first`): the Linears in turn
    (2B·mm(d + R·mm) FLOPs), or their product (R·mm, d+1) formed first and applied once (2R·mm(mm(d+1) + B·d)), where
    that is at most 3/4 of the FLOPs (`cheaper_composed`): from a batch of 32 at d 16, mm 64, R 5.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 64, rank: int = 5):
        _positive(mm=mm, rank=rank)
        super().__init__(dims, out_dim, mm)
        self.mm, self.rank = int(mm), int(rank)
        self.merge0 = nn.Linear(mm, rank * mm)
        self.merge1 = nn.Linear(mm, rank * mm)
        self.out = nn.Linear(mm, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        m = self._merged(xs[0], self.linear0, self.merge0) * self._merged(xs[1], self.linear1, self.merge1)
        return self.out(m.view(-1, self.rank, self.mm).sum(1))

    def _merged(self, x: torch.Tensor, linear: nn.Linear, merge: nn.Linear) -> torch.Tensor:
        """merge(linear(x)), (B, R·mm), in the order `compose_first` picks."""
        if not self.compose_first(x.shape[0], x.shape[1]):
            return merge(linear(x))
        w = merge.weight @ torch.cat([linear.weight, linear.bias[:, None]], 1)  # (R·mm, d+1): the bias as a column
        return torch.addmm(w[:, -1] + merge.bias, x, w[:, :-1].T)

    def _chain_flops(self, batch: int, d: int) -> tuple[int, int]:
        """(composed, in turn) FLOPs of one side whose input is d wide."""
        r, mm = self.rank, self.mm
        return 2 * r * mm * (mm * (d + 1) + batch * d), 2 * batch * mm * (d + r * mm)

    def compose_first(self, batch: int, d: int) -> bool:
        return cheaper_composed(*self._chain_flops(batch, d))

    def _side_flops(self, batch: int, d: int) -> int:
        return self._chain_flops(batch, d)[0 if self.compose_first(batch, d) else 1]

    def expected_params(self) -> int:
        d0, d1 = self.dims
        mm = self.mm
        return (d0 + d1 + 2) * mm + 2 * (mm + 1) * mm * self.rank + (mm + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        d0, d1 = self.dims
        mm = self.mm
        return self._side_flops(batch, d0) + self._side_flops(batch, d1) + 2 * batch * mm * self.out_dim


def chunk_sizes(mm: int, chunks: int) -> list[int]:
    """How BLOCK's reference (block.bootstrap) splits mm into C chunks: s = ceil(mm / C) for every chunk, the last
    one shortened by the excess (mm 1600, C 18: 17 × 89 and one 87); if that would make it negative, the last chunk
    is set back to s and the last chunks each lose one until the sizes sum to mm (mm 10, C 7: 2, 2, 2, 1, 1, 1, 1)."""
    s = -(-mm // chunks)
    sizes = [s] * chunks
    sizes[-1] -= s * chunks - mm
    if sizes[-1] < 0:
        missing = sizes[-2] - sizes[-1]
        sizes[-1] = sizes[-2]
        for j in range(missing):
            sizes[-j - 1] -= 1
    if min(sizes) <= 0:
        raise ValueError(f"mm ({mm}) cannot be split into {chunks} chunks the reference's way "
                         f"(sizes {sizes}): use fewer chunks")
    return sizes


class _Chunked(_Pair):
    """Two projections to mm, split into chunks of `chunk_sizes(mm, C)`, each chunk fused on its own. Chunks of equal
    size form a group whose per-chunk weights are one batched tensor (at most two groups: the sizes take at most two
    values), so the work is one batched matmul per group rather than C small layers."""

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int, chunks: int):
        super().__init__(dims, out_dim, mm)
        self.mm, self.chunks = int(mm), int(chunks)
        self.sizes = chunk_sizes(self.mm, self.chunks)
        self.groups = [(size, len(list(run))) for size, run in itertools.groupby(self.sizes)]  # (s, chunks of it)
        self.out = nn.Linear(mm, out_dim)

    def _grouped(self, q: torch.Tensor):
        """The chunks of q (B, mm), group by group: (count, B, s) each."""
        start = 0
        for s, count in self.groups:
            yield q[:, start:start + s * count].reshape(-1, count, s).transpose(0, 1)
            start += s * count

    def _fuse(self, g: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Group g's chunks of both projections (count, B, s) → the fused chunks (count, B, s), normalised."""
        raise NotImplementedError

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        q0, q1 = self.linear0(xs[0]), self.linear1(xs[1])
        zs = [self._fuse(g, a, b).transpose(0, 1).reshape(q0.shape[0], -1)
              for g, (a, b) in enumerate(zip(self._grouped(q0), self._grouped(q1)))]
        return self.out(zs[0] if len(zs) == 1 else torch.cat(zs, -1))

    def _uniform(self, count: int, *shape: int, fan_in: int) -> nn.Parameter:
        bound = 1 / math.sqrt(fan_in)  # nn.Linear's / nn.Bilinear's init for each chunk's layer
        return nn.Parameter(torch.empty(count, *shape).uniform_(-bound, bound))


@register_method("block", family="bilinear", max_modalities=2, rank_param="rank")
class Block(_Chunked):
    """BLOCK (Ben-younes 2019): project to mm, split into C chunks, a rank-R MUTAN per chunk, ssl, concat → o.

    Chunk sizes s_c are the reference's (`chunk_sizes`: ceil(mm / C) each, the last ones shorter when C does not
    divide mm). Per chunk, two merges s_c → R·s_c (with bias), their product summed over the R terms, ssl per chunk.
    Parameters (d0+d1+2)·mm + 2·Σ_c(s_c+1)·s_c·R + (mm+1)·o. Each side is a chain x → (B, mm) → per chunk (B, R·s_c),
    computed as MUTAN's (`compose_first`): in turn, or each chunk's projection rows and merge multiplied first,
    (d+1, R·s_c), then applied once to x.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 128, chunks: int = 8, rank: int = 5):
        _positive(mm=mm, chunks=chunks, rank=rank)
        super().__init__(dims, out_dim, mm, chunks)
        self.rank = int(rank)
        self.squares = sum(s * s for s in self.sizes)  # Q = Σ s_c², once: each call's order choice reads it

        def merges():  # per group: (count, s, R·s) weights and (count, 1, R·s) biases
            return (nn.ParameterList(self._uniform(n, s, rank * s, fan_in=s) for s, n in self.groups),
                    nn.ParameterList(self._uniform(n, 1, rank * s, fan_in=s) for s, n in self.groups))

        self.merge0_weight, self.merge0_bias = merges()
        self.merge1_weight, self.merge1_bias = merges()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        m0 = self._merged(xs[0], self.linear0, self.merge0_weight, self.merge0_bias)
        m1 = self._merged(xs[1], self.linear1, self.merge1_weight, self.merge1_bias)
        zs = [self._pool(a * b).transpose(0, 1).reshape(xs[0].shape[0], -1) for a, b in zip(m0, m1)]
        return self.out(zs[0] if len(zs) == 1 else torch.cat(zs, -1))

    def _merged(self, x, linear, weights, biases) -> list[torch.Tensor]:
        """One side's merged projections, (count, B, R·s) per group, in the order `compose_first` picks."""
        if not self.compose_first(x.shape[0], x.shape[1]):
            return [torch.baddbmm(b, a, w) for a, w, b in zip(self._grouped(linear(x)), weights, biases)]
        wb, out, start = torch.cat([linear.weight, linear.bias[:, None]], 1), [], 0  # (mm, d+1): the bias a column
        for (s, n), w, b in zip(self.groups, weights, biases):
            c = torch.bmm(wb[start:start + s * n].view(n, s, -1).transpose(1, 2), w)  # (count, d+1, R·s)
            out.append(torch.baddbmm(c[:, -1:] + b, x.expand(n, *x.shape), c[:, :-1]))
            start += s * n
        return out

    def _pool(self, m: torch.Tensor) -> torch.Tensor:
        """(count, B, R·s) products → the R terms summed, ssl per chunk: (count, B, s)."""
        return ssl(m.view(m.shape[0], m.shape[1], self.rank, -1).sum(2))

    def _fuse(self, g, a, b):
        return self._pool(torch.baddbmm(self.merge0_bias[g], a, self.merge0_weight[g])
                          * torch.baddbmm(self.merge1_bias[g], b, self.merge1_weight[g]))  # (count, B, R·s)

    def _chain_flops(self, batch: int, d: int) -> tuple[int, int]:
        """(composed, in turn) FLOPs of one side: Q = Σ s_c²."""
        q, r = self.squares, self.rank
        return 2 * r * (d + 1) * q + 2 * batch * d * r * self.mm, 2 * batch * d * self.mm + 2 * batch * r * q

    def compose_first(self, batch: int, d: int) -> bool:
        return cheaper_composed(*self._chain_flops(batch, d))

    def expected_params(self) -> int:
        d0, d1 = self.dims
        return ((d0 + d1 + 2) * self.mm + 2 * sum((s + 1) * s * self.rank for s in self.sizes)
                + (self.mm + 1) * self.out_dim)

    def expected_flops(self, batch: int) -> int:
        sides = (self._chain_flops(batch, d)[0 if self.compose_first(batch, d) else 1] for d in self.dims)
        return sum(sides) + 2 * batch * self.mm * self.out_dim


@register_method("block_tucker", family="bilinear", max_modalities=2, rank_param="mm")
class BlockTucker(_Chunked):
    """BlockTucker (block.bootstrap, MMF): project to mm, split into C chunks, a full bilinear core per chunk, ssl.

    Chunk sizes as BLOCK's. Per chunk z_c,k = Σ_ij T_c[i, k, j] a_i b_j + t_c,k (nn.Bilinear(s, s, s) in the
    reference), computed in Tucker's outer or q0-first order (`outer_first`, per group of equal chunks) batched over
    the chunks of a group; ssl per chunk, concat, Linear → o. Parameters (d0+d1+2)·mm + Σ_c(s_c³ + s_c) + (mm+1)·o. Defaults mm 128, C 8 (reference: mm 1600, C 20).
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 128, chunks: int = 8):
        _positive(mm=mm, chunks=chunks)
        super().__init__(dims, out_dim, mm, chunks)
        self.cores = nn.ParameterList(self._uniform(n, s, s * s, fan_in=s) for s, n in self.groups)  # (i, k·j)
        self.core_biases = nn.ParameterList(self._uniform(n, 1, s, fan_in=s) for s, n in self.groups)

    def core(self, c: int) -> torch.Tensor:
        """Chunk c's core T_c as (i, k, j)."""
        for (s, n), cores in zip(self.groups, self.cores):
            if c < n:
                return cores[c].view(s, s, s)
            c -= n
        raise IndexError(c)

    def core_bias(self, c: int) -> torch.Tensor:
        for (s, n), biases in zip(self.groups, self.core_biases):
            if c < n:
                return biases[c, 0]
            c -= n
        raise IndexError(c)

    def _fuse(self, g, a, b):
        count, batch, s = a.shape
        if outer_first(batch, s):  # (count, B, i·j) × the cores re-laid out as (count, i·j, k)
            core = self.cores[g].view(count, s, s, s).transpose(2, 3).reshape(count, s * s, s)
            return ssl(torch.baddbmm(self.core_biases[g], (a.unsqueeze(-1) * b.unsqueeze(-2)).flatten(2), core))
        t = torch.bmm(a, self.cores[g]).view(count * batch, s, s)  # (count·B, k, j)
        z = torch.bmm(t, b.reshape(count * batch, s, 1)).view(count, batch, s) + self.core_biases[g]
        return ssl(z)

    def expected_params(self) -> int:
        d0, d1 = self.dims
        return (d0 + d1 + 2) * self.mm + sum(s ** 3 + s for s in self.sizes) + (self.mm + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        d0, d1 = self.dims
        cores = sum(s ** 3 + (0 if outer_first(batch, s) else s ** 2) for s in self.sizes)
        return 2 * batch * (self.mm * (d0 + d1) + cores + self.mm * self.out_dim)


@register_method("linear_sum", family="bilinear", max_modalities=2, rank_param="mm")
class LinearSum(MLB):
    """LinearSum (block.bootstrap, MMF): z = act(W0 x0 + b0) + act(W1 x1 + b1), optional ssl, Linear → o.

    The additive baseline of the bilinear family: the same projections, summed instead of multiplied. `activation`
    relu (the reference's default), tanh or none; `normalize` applies ssl (off by default, as the reference). The
    reference's output ReLU is left out, as for MLB: the output is the prediction. Parameters
    (d0+1)·mm + (d1+1)·mm + (mm+1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mm: int = 256, activation: str = "relu",
                 normalize: bool = False):
        _positive(mm=mm)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got '{activation}'")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        super().__init__(dims, out_dim, mm)  # MLB's projections and output layer, and so its closed forms
        self.activation, self.normalize = activation, normalize

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        act = _ACTIVATIONS[self.activation]
        a, b = self.linear0(xs[0]), self.linear1(xs[1])
        z = a + b if act is None else act(a) + act(b)
        return self.out(ssl(z) if self.normalize else z)


_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "none": None}


@register_method("mcb", family="bilinear", max_modalities=2)
class MCB(Fusion):
    """Compact bilinear pooling (Fukui 2016): count-sketch both inputs to D, z = IFFT(FFT Ψ0 ⊙ FFT Ψ1), ssl, Linear.

    The sketches (hash h_m: [d_m] → [D], sign s_m ∈ {±1}) are buffers drawn from torch's RNG at construction (so a
    seed fixes them), not parameters: parameters are (D+1)·o. The count sketch is an index_add (d_m adds per sample,
    not a matmul). torch.utils.flop_counter counts neither the sketch nor the FFTs: `expected_flops` is what it
    counts (the output Linear); `fft_flops` states the usual estimate of the uncounted transforms.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, sketch_dim: int = 1024):
        _positive(sketch_dim=sketch_dim)
        super().__init__(dims, out_dim)
        self.sketch_dim = int(sketch_dim)
        for m, d in enumerate(self.dims[:2]):
            self.register_buffer(f"hash{m}", torch.randint(sketch_dim, (d,)))
            self.register_buffer(f"sign{m}", torch.randint(2, (d,)).float() * 2 - 1)
        self.out = nn.Linear(sketch_dim, out_dim)

    def sketch(self, x: torch.Tensor, m: int) -> torch.Tensor:
        h, s = getattr(self, f"hash{m}"), getattr(self, f"sign{m}")
        return x.new_zeros(x.shape[0], self.sketch_dim).index_add_(1, h, x * s.to(x.dtype))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        n = self.sketch_dim
        x0, x1 = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in xs)  # no half FFT on CPU
        f0 = torch.fft.rfft(self.sketch(x0, 0), n=n)
        f1 = torch.fft.rfft(self.sketch(x1, 1), n=n)
        z = torch.fft.irfft(f0 * f1, n=n)
        return self.out(ssl(z))

    def expected_params(self) -> int:
        return (self.sketch_dim + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        return 2 * batch * self.sketch_dim * self.out_dim

    def fft_flops(self, batch: int) -> float:
        """Not counted by flop_counter: three real FFTs of length D at ≈ 2.5·D·log2(D) each, plus D/2+1 complex
        products (6 real ops each)."""
        n = self.sketch_dim
        return batch * (3 * 2.5 * n * math.log2(max(n, 2)) + 6 * (n // 2 + 1))
