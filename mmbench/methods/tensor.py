"""Tensor fusion (TFN, Zadeh et al. 2017) and its low-rank factorisation (LMF, Liu et al. 2018)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mmbench.methods.base import Fusion, with_ones
from mmbench.methods.registry import register_method


@register_method("tfn", family="tensor")
class TensorFusion(Fusion):
    """Tensor Fusion Network: y = Linear(vec(x̃_1 ⊗ … ⊗ x̃_M)), x̃ = [x; 1]; parameters grow with Π(d_m+1).

    The weight is the Linear's, shape (o, D) with D = Π(d_m+1), and the function is exactly that Linear applied to the
    outer product. The order of the contraction is chosen for the shape, among the splits the weight's layout allows
    without a copy: seen as an (o·D_1⋯D_k, D_{k+1}⋯D_M) matrix, the weight multiplies the outer product of the last
    M−k inputs, and the (B, o·D_1⋯D_k) result is contracted with x̃_k, then x̃_{k-1}, … x̃_1. k = 0 materialises the
    whole outer product; k = M−1 never builds one. ``split`` is the k whose largest set of intermediates alive at once
    is smallest (at 128³, o 64, k = 1: 25 k values per sample, against 1.06 M for k = 2 and 2.1 M for k = 0).
    """

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__(dims, out_dim)
        self.sizes = [d + 1 for d in self.dims]
        self.linear = nn.Linear(math.prod(self.sizes), out_dim)
        self.split = min(range(len(self.sizes)), key=self.peak_values)  # ties: the smaller k, fewer FLOPs

    @property
    def contracts(self) -> bool:
        """False when the whole outer product is materialised."""
        return self.split > 0

    def peak_values(self, k: int) -> int:
        """Per sample, the most intermediate values alive at once in forward with split k (the x̃ excluded): at each
        step of the suffix's outer product, at the matmul, at each contraction (each one's input and output)."""
        o, s = self.out_dim, self.sizes
        suffix = [math.prod(s[m:]) for m in range(k, len(s))]  # R_k, R_{k+1}, …, D_M
        prefix = [o * math.prod(s[:j]) for j in range(k + 1)]  # o, o·D_1, …, o·D_1⋯D_k
        live = [a + b for a, b in zip(suffix[:-1], suffix[1:-1] + [0])]  # the first step's input is x̃_M
        live.append((suffix[0] if k < len(s) - 1 else 0) + prefix[-1])  # at k = M−1 the matmul's input is x̃_M
        live += [a + b for a, b in zip(prefix[1:], prefix[:-1])]
        return max(live + [2 * o] * (k > 0))  # the bias is added out of place

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xt = [with_ones(x) for x in xs]
        k = self.split
        z = xt[-1]  # x̃_{k+1} ⊗ … ⊗ x̃_M, built from the back (the first index outermost, as the weight lays it out)
        for x in reversed(xt[k:-1]):
            z = (x.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        if k == 0:
            return self.linear(z)
        h = torch.nn.functional.linear(z, self.linear.weight.reshape(-1, z.shape[1]))  # (B, o·D_1⋯D_k)
        del z  # not alive during the contractions
        for x, size in zip(reversed(xt[:k]), reversed(self.sizes[:k])):
            h = torch.bmm(h.reshape(h.shape[0], -1, size), x.unsqueeze(-1)).squeeze(-1)
        return h + self.linear.bias

    def expected_params(self) -> int:
        return (math.prod(self.sizes) + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        """The matmul (2·B·o·D whatever the split) plus the contractions, 2·B·o·(D_1 + D_1·D_2 + … + D_1⋯D_k); the
        outer products are elementwise: not counted."""
        o, total = self.out_dim, math.prod(self.sizes)
        prefix = [math.prod(self.sizes[:j]) for j in range(1, self.split + 1)]
        return 2 * batch * o * (total + sum(prefix))


@register_method("lmf", family="tensor", rank_param="rank")
class LowRankFusion(Fusion):
    """Low-rank Multimodal Fusion: rank-r factors per modality, y = w_f · (⊙_m x̃_m W_m) + b; grows with Σ(d_m+1).

    Each factor W_m ∈ R^{r×(d_m+1)×o} is stored as one registered (d_m+1, o·r) matrix, rank innermost, so that
    x̃_m W_m is a single addmm (its last row multiplies the appended 1, i.e. it is a bias) and the product over
    modalities is (B, o, r) contiguous: the w_f contraction is then one (B·o, r) × (r, 1) matrix product that reads
    the product once. (With the rank outermost, (B, r, o), contracting r is a broadcast batched matmul of B tiny
    matrices, which torch runs as a copy of the whole product followed by a matmul: about a fifth of LMF's forward
    time at 64³, rank 4.) w_f ∈ R^{1×r} is learned, as in the reference code.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, rank: int = 4):
        super().__init__(dims, out_dim)
        if rank <= 0:
            raise ValueError(f"rank must be positive, got {rank}")
        self.rank = int(rank)
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(d + 1, out_dim * rank)) for d in self.dims)
        self.fusion_weights = nn.Parameter(torch.empty(1, rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-normal of the (r, d+1, o) factor tensor, as the reference initialises it.
        r, o = self.rank, self.out_dim
        for f in self.factors:
            std = math.sqrt(2.0 / (f.shape[0] * o + r * o))
            nn.init.normal_(f, 0.0, std)
        nn.init.xavier_normal_(self.fusion_weights)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        prod = None
        for x, w in zip(xs, self.factors):
            f = torch.addmm(w[-1], x, w[:-1])  # x̃_m W_m, (B, o·r)
            prod = f if prod is None else prod * f
        y = torch.mm(prod.view(-1, self.rank), self.fusion_weights.T)  # Σ_r w_f[r]·P[b, o, r], (B·o, 1)
        return y.view(-1, self.out_dim) + self.fusion_bias

    def factor(self, m: int) -> torch.Tensor:
        """W_m as the paper writes it: (r, d_m+1, o)."""
        return self.factors[m].view(-1, self.out_dim, self.rank).permute(2, 0, 1)

    def full_weight(self) -> torch.Tensor:
        """The rank-r tensor Σ_r w_f[r]·W_1[r] ⊗ … ⊗ W_M[r], shaped as a TensorFusion weight (o, Π(d_m+1))."""
        w = self.fusion_weights[0].view(-1, 1, 1) * self.factor(0)  # (r, D_1, o)
        for m in range(1, len(self.dims)):
            w = torch.einsum("rpo,rqo->rpqo", w, self.factor(m)).flatten(1, 2)
        return w.sum(0).T.contiguous()

    def to_tensor_fusion(self) -> TensorFusion:
        """The TensorFusion that computes exactly this function (its weight is the rank-r tensor above)."""
        tfn = TensorFusion(self.dims, self.out_dim)
        with torch.no_grad():
            tfn.linear.weight.copy_(self.full_weight())
            tfn.linear.bias.copy_(self.fusion_bias[0])
        return tfn

    def expected_params(self) -> int:
        r, o = self.rank, self.out_dim
        return r * o * sum(d + 1 for d in self.dims) + r + o

    def expected_flops(self, batch: int) -> int:
        r, o = self.rank, self.out_dim
        return 2 * batch * r * o * (sum(self.dims) + 1)  # factor matmuls (bias rows are adds) + the w_f contraction
