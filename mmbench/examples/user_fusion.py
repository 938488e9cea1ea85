"""An example of a user's own fusion module, named in suites/user_module.yaml as
``mmbench.examples.user_fusion:SumProductFusion``. It is deliberately not registered: the suite imports it by name,
which is exactly the path a module of your own takes."""
from __future__ import annotations

import torch
from torch import nn


class SumProductFusion(nn.Module):
    """Sum-product fusion: h_m = W_m x_m + b_m, y = Linear(Σ_m h_m + Π_m h_m) (additive and multiplicative terms)."""

    # Optional class attributes read by mmbench (these are the defaults, except family and rank_param).
    family = "user"
    inputs = "vectors"          # "vectors" | "sequences" | "both"
    min_modalities = 2
    max_modalities = None       # any number
    rank_param = "hidden"       # the hyperparameter a suite's `rank` axis sets

    def __init__(self, dims, out_dim, hidden: int = 16):
        super().__init__()
        if hidden <= 0:
            raise ValueError(f"hidden must be positive, got {hidden}")  # a ValueError is reported as a suite error
        self.dims, self.out_dim, self.hidden = list(dims), out_dim, hidden
        self.proj = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        hs = [p(x) for p, x in zip(self.proj, xs)]
        prod = hs[0]
        for h in hs[1:]:
            prod = prod * h
        return self.out(torch.stack(hs).sum(0) + prod)

    def expected_params(self) -> int:
        """Optional: the closed form, for your own tests (mmbench counts registered parameters itself)."""
        return sum((d + 1) * self.hidden for d in self.dims) + (self.hidden + 1) * self.out_dim
