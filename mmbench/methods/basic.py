"""Feature-level (early) and decision-level (late) fusion."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method


@register_method("early", family="joint")
class EarlyFusion(Fusion):
    """Early fusion: concatenate the modality features, then Linear (or an MLP with `hidden` units)."""

    def __init__(self, dims: Sequence[int], out_dim: int, hidden: int | None = None):
        super().__init__(dims, out_dim)
        if hidden is not None and hidden <= 0:
            raise ValueError(f"hidden must be positive, got {hidden}")
        self.hidden = hidden
        total = sum(self.dims)
        if hidden is None:
            self.net = nn.Linear(total, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(total, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat(xs, dim=-1))

    def expected_params(self) -> int:
        s, o, h = sum(self.dims), self.out_dim, self.hidden
        return (s + 1) * o if h is None else (s + 1) * h + (h + 1) * o

    def expected_flops(self, batch: int) -> int:
        s, o, h = sum(self.dims), self.out_dim, self.hidden
        return 2 * batch * (s * o if h is None else s * h + h * o)


@register_method("late", family="joint")
class LateFusion(Fusion):
    """Late (decision) fusion: one linear predictor per modality, averaged (or softmax(α)-weighted if learned)."""

    def __init__(self, dims: Sequence[int], out_dim: int, weighting: str = "mean"):
        super().__init__(dims, out_dim)
        if weighting not in ("mean", "learned"):
            raise ValueError(f"weighting must be 'mean' or 'learned', got '{weighting}'")
        self.weighting = weighting
        self.heads = nn.ModuleList(nn.Linear(d, out_dim) for d in self.dims)
        # Learned modality weights α start equal: softmax(0) is the plain mean.
        self.alpha = nn.Parameter(torch.zeros(len(self.dims))) if weighting == "learned" else None

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        preds = torch.stack([head(x) for head, x in zip(self.heads, xs)])  # (M, B, o)
        if self.alpha is None:
            return preds.mean(0)
        return torch.einsum("m,mbo->bo", torch.softmax(self.alpha, 0), preds)

    def expected_params(self) -> int:
        return sum((d + 1) * self.out_dim for d in self.dims) + (len(self.dims) if self.alpha is not None else 0)

    def expected_flops(self, batch: int) -> int:
        # The learned weighting's einsum is a bmm over M: 2·B·o·M more.
        extra = 2 * batch * self.out_dim * len(self.dims) if self.alpha is not None else 0
        return sum(2 * batch * d * self.out_dim for d in self.dims) + extra
