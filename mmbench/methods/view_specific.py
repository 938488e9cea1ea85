"""View-specific fusion without a shared subspace (after Lyu 2022, simplified)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method


@register_method("view_specific", family="view-specific")
class ViewSpecific(Fusion):
    """One predictor per view with one round of cross-view message passing; the output averages per-view confidences.

    h_m = ReLU(A_m x_m + a_m) ∈ R^h; message μ_m = mean_{n≠m} h_n; h'_m = ReLU(S_m h_m + N_m μ_m + c_m);
    p_m = softmax(P_m h'_m + p_m) per view; the output is log(mean_m p_m) — the log of the averaged confidences, so
    cross-entropy on it is the mixture's likelihood (a regression output, o = 1, averages the raw per-view scores).
    No fused representation exists: each view keeps its own features and predictor; views only exchange messages.
    Parameters: Σ(d_m+1)·h + M·(2h² + h) + M·(h+1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, hidden: int = 32):
        super().__init__(dims, out_dim)
        if hidden <= 0:
            raise ValueError(f"hidden must be positive, got {hidden}")
        self.hidden = int(hidden)
        self.inp = nn.ModuleList(nn.Linear(d, hidden) for d in self.dims)
        self.self_w = nn.ModuleList(nn.Linear(hidden, hidden) for _ in self.dims)
        self.msg_w = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in self.dims)
        self.pred = nn.ModuleList(nn.Linear(hidden, out_dim) for _ in self.dims)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        m = len(xs)
        hs = [torch.relu(f(x)) for f, x in zip(self.inp, xs)]
        total = torch.stack(hs).sum(0)
        outs = []
        for h, s, n, p in zip(hs, self.self_w, self.msg_w, self.pred):
            msg = (total - h) / (m - 1)
            outs.append(p(torch.relu(s(h) + n(msg))))
        if self.out_dim == 1:
            return torch.stack(outs).mean(0)
        # log-softmax per view on (B, o): on the stacked (M, B, o) tensor torch goes multi-threaded even at B = 1
        logp = torch.stack([torch.log_softmax(o, -1) for o in outs])  # (M, B, o)
        return torch.logsumexp(logp, 0) - math.log(m)

    def expected_params(self) -> int:
        h, m = self.hidden, len(self.dims)
        return (sum(self.dims) + m) * h + m * (2 * h * h + h) + m * (h + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        h, m = self.hidden, len(self.dims)
        return 2 * batch * (sum(self.dims) * h + m * 2 * h * h + m * h * self.out_dim)
