"""Coordinated representations: contrastive (CLIP-style) and correlation-based (Deep CCA) fusion.

Both learn one embedding per modality in a coordinated space through their own objective, exposed by ``aux_loss()``
(computed from the last forward pass; the trainer adds it to the task loss). For the benchmark's task they still
output (B, out_dim): a linear head on the concatenated per-modality embeddings (a linear probe trained jointly).
``embeddings(xs)`` returns the per-modality embeddings (L2-normalised) for retrieval, e.g. recall@k between two
modalities: rank ``embeddings(xs)[1] @ embeddings(xs)[0].T`` per row.
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


class _Coordinated(Fusion):
    def __init__(self, dims: Sequence[int], out_dim: int, embed_dim: int, aux_weight: float, bias: bool):
        super().__init__(dims, out_dim)
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be non-negative, got {aux_weight}")
        self.embed_dim, self.aux_weight = int(embed_dim), float(aux_weight)
        self.proj = nn.ModuleList(nn.Linear(d, embed_dim, bias=bias) for d in self.dims)
        self.head = nn.Linear(len(self.dims) * embed_dim, out_dim)
        self._last: list[torch.Tensor] | None = None

    def _embed(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        zs = self._embed(xs)
        self._last = zs
        return self.head(torch.cat(zs, -1))

    def embeddings(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-modality embeddings, each (B, embed_dim), L2-normalised: the coordinated space used for retrieval."""
        return [F.normalize(z, dim=-1) for z in self._embed(xs)]

    def aux_loss(self) -> torch.Tensor | None:
        if self._last is None or self._last[0].shape[0] < 2 or self.aux_weight == 0:
            return None  # no pairs to contrast / no covariance from fewer than two samples
        pairs = list(itertools.combinations(self._last, 2))
        return self.aux_weight * sum(self._pair_loss(a.float(), b.float()) for a, b in pairs) / len(pairs)

    def _pair_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def expected_flops(self, batch: int) -> int:
        e = self.embed_dim
        return 2 * batch * e * (sum(self.dims) + len(self.dims) * self.out_dim)  # the objective is not in forward


@register_method("contrastive", family="coordinated")
class Contrastive(_Coordinated):
    """Contrastive coordinated fusion (CLIP-style): symmetric InfoNCE between L2-normalised projections; head on them.

    z_m = normalise(W_m x_m) (no bias, W_m ∈ R^{e×d_m}); for every pair of modalities (a, b) the logits are
    exp(s)·Z_a Z_bᵀ and the loss is the mean of the two cross-entropies (rows and columns, matching pairs on the
    diagonal); pairs are averaged for M > 2. s starts at ln(1/0.07) and is clamped to ≤ ln 100 where it is used.
    Task output: Linear(M·e → o) on [z_1; …; z_M]. ``aux_loss()`` = aux_weight × that loss on the last batch;
    ``embeddings(xs)`` = [z_1, …, z_M] for retrieval recall@k. Parameters: Σd_m·e + 1 + (M·e + 1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, embed_dim: int = 64, aux_weight: float = 1.0):
        super().__init__(dims, out_dim, embed_dim, aux_weight, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _embed(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [F.normalize(p(x), dim=-1) for p, x in zip(self.proj, xs)]

    def _pair_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * a @ b.T
        target = torch.arange(a.shape[0], device=a.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def expected_params(self) -> int:
        e, m = self.embed_dim, len(self.dims)
        return sum(self.dims) * e + 1 + (m * e + 1) * self.out_dim


@register_method("dcca", family="coordinated")
class DCCA(_Coordinated):
    """Deep CCA (Andrew 2013) objective on per-modality projections; head on them. The encoders make it deep.

    h_m = W_m x_m + b_m ∈ R^e. ``aux_loss()`` = −aux_weight × (sum of the top-k canonical correlations between two
    views' h on the last batch), averaged over pairs for M > 2: Σ11, Σ22 are the views' covariances + reg·I,
    correlations = singular values of T = Σ11^{-1/2} Σ12 Σ22^{-1/2}, computed through Cholesky factors rather than
    eigh (see `canonical_correlations`: eigh's gradient is infinite for repeated eigenvalues). Computed in float32
    (no half-precision linear algebra on CPU).
    Task output: Linear(M·e → o) on [h_1; …; h_M]; ``embeddings(xs)`` = the L2-normalised h_m.
    Parameters: Σ(d_m+1)·e + (M·e + 1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, embed_dim: int = 16, top_k: int | None = None,
                 reg: float = 1e-3, aux_weight: float = 1.0):
        super().__init__(dims, out_dim, embed_dim, aux_weight, bias=True)
        if top_k is not None and not 1 <= top_k <= embed_dim:
            raise ValueError(f"top_k must be in 1..embed_dim ({embed_dim}), got {top_k}")
        if reg <= 0:
            raise ValueError(f"reg must be positive, got {reg}")
        self.top_k, self.reg = top_k, float(reg)

    def _embed(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [p(x) for p, x in zip(self.proj, xs)]

    def _pair_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -canonical_correlations(a, b, self.reg, self.top_k).sum()

    def expected_params(self) -> int:
        e, m = self.embed_dim, len(self.dims)
        return (sum(self.dims) + m) * e + (m * e + 1) * self.out_dim


def canonical_correlations(a: torch.Tensor, b: torch.Tensor, reg: float = 1e-3, top_k: int | None = None):
    """The top-k canonical correlations (descending) between the columns of a (N, p) and b (N, q).

    Σ11, Σ22 are regularised by reg·I. The correlations are the singular values of Σ11^{-1/2} Σ12 Σ22^{-1/2}, which
    equal those of L1^{-1} Σ12 L2^{-T} for the Cholesky factors Σ = L Lᵀ (L^{-1} = O Σ^{-1/2} with O orthogonal).
    That route, not the eigendecomposition, is used on purpose: eigh's gradient through its eigenvectors divides
    by eigenvalue gaps, and a batch whose features have lower rank than the embedding (common: ReLU features, small
    batches) leaves several eigenvalues exactly at reg, so the gradient is inf and training turns to NaN. The
    gradient of singular values (svdvals) is u_i v_iᵀ: bounded.
    """
    n = a.shape[0]
    a, b = a - a.mean(0), b - b.mean(0)
    s11 = a.T @ a / (n - 1) + reg * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    s22 = b.T @ b / (n - 1) + reg * torch.eye(b.shape[1], dtype=b.dtype, device=b.device)
    s12 = a.T @ b / (n - 1)
    l1, l2 = torch.linalg.cholesky(s11), torch.linalg.cholesky(s22)
    t = torch.linalg.solve_triangular(l1, s12, upper=False)                  # L1^{-1} Σ12
    t = torch.linalg.solve_triangular(l2, t.T, upper=False).T                # … L2^{-T}
    corr = torch.linalg.svdvals(t)  # descending
    return corr if top_k is None else corr[:top_k]
