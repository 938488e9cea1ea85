"""Attentional feature fusion (Dai 2021): AFF and iAFF, for vector inputs (B, C).

MS-CAM(U) = σ(L(U) + G(U)); L = BN(PW(ReLU(BN(PW U)))) with PW a pointwise (1×1) layer C → C/r → C; G is the same
on the global-average-pooled U. On vectors there is no spatial axis, so the pool is the identity and G sees U too:
the two branches differ only in their weights (kept, so the parameter count is the paper's). Inputs of different
dims are projected to C first (a Linear per modality whose dim is not C); the fused Z (B, C) goes through
Linear(C → o). Two modalities only (the paper fuses a pair); more is refused at plan time.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that uses its running statistics for a batch of one in training (batch statistics of a single
    sample are undefined), so a trailing batch of one does not fail a trial."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _branch(channels: int, inter: int) -> nn.Sequential:
    # No bias before a BatchNorm: its mean subtraction cancels the bias, whose gradient is then exactly 0 (the
    # reference's convs keep one: 2i + 2C parameters per branch that are counted but never trained).
    return nn.Sequential(nn.Linear(channels, inter, bias=False), BatchNorm(inter), nn.ReLU(),
                         nn.Linear(inter, channels, bias=False), BatchNorm(channels))


class MSCAM(nn.Module):
    """Multi-scale channel attention: σ(L(U) + G(U)), each branch C → C/r → C with BatchNorm."""

    def __init__(self, channels: int, inter: int):
        super().__init__()
        self.local_att = _branch(channels, inter)
        self.global_att = _branch(channels, inter)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # Global average pooling over no spatial axes is the identity on (B, C).
        return torch.sigmoid(self.local_att(u) + self.global_att(u))


class _AFFBase(Fusion):
    stages = 1

    def __init__(self, dims: Sequence[int], out_dim: int, channels: int | None = None, r: int = 4):
        super().__init__(dims, out_dim)
        c = int(channels) if channels is not None else max(self.dims)
        if c <= 0 or r <= 0:
            raise ValueError(f"channels and r must be positive, got channels={c}, r={r}")
        if c // r < 1:
            raise ValueError(f"channels // r must be at least 1, got {c} // {r}")
        self.channels, self.r, self.inter = c, int(r), c // int(r)
        self.proj = nn.ModuleList(nn.Identity() if d == c else nn.Linear(d, c) for d in self.dims)
        self.cams = nn.ModuleList(MSCAM(c, self.inter) for _ in range(self.stages))
        self.out = nn.Linear(c, out_dim)

    def _mix(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return y + w * (x - y)  # X ⊙ w + Y ⊙ (1 − w)

    def expected_params(self) -> int:
        c, i = self.channels, self.inter
        proj = sum((d + 1) * c for d in self.dims if d != c)
        return proj + self.stages * (4 * c * i + 4 * i + 4 * c) + (c + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        c, i = self.channels, self.inter
        proj = sum(d * c for d in self.dims if d != c)
        return 2 * batch * (proj + self.stages * 4 * c * i + c * self.out_dim)  # BN, σ and the mixing: elementwise


@register_method("aff", family="attention", max_modalities=2)
class AFF(_AFFBase):
    """Attentional feature fusion: w = MS-CAM(X + Y), Z = X ⊙ w + Y ⊙ (1 − w), Linear(C → o).

    Parameters: projections Σ_{d_m ≠ C}(d_m+1)·C, MS-CAM 4C·i + 4i + 4C (i = C // r), head (C+1)·o. The paper's
    MS-CAM count, 4C·i + 6i + 6C, includes a bias before each BatchNorm, which the BatchNorm cancels (its gradient
    is 0 in training); they are left out here.
    """

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x, y = (p(v) for p, v in zip(self.proj, xs))
        return self.out(self._mix(x, y, self.cams[0](x + y)))


@register_method("iaff", family="attention", max_modalities=2)
class IAFF(_AFFBase):
    """Iterative AFF: w1 = MS-CAM1(X + Y), X_i = mix(w1); w2 = MS-CAM2(X_i), Z = X ⊙ w2 + Y ⊙ (1 − w2); Linear → o.

    The second stage has its own local AND global branch (open-aff's iAFF reuses the first stage's global branch, so
    its second global branch is counted but never trained). Parameters: as AFF with two MS-CAMs.
    """

    stages = 2

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x, y = (p(v) for p, v in zip(self.proj, xs))
        xi = self._mix(x, y, self.cams[0](x + y))
        return self.out(self._mix(x, y, self.cams[1](xi)))
