"""Joint (model-agnostic) fusion beyond early/late: additive, hybrid, and the gated multimodal unit (GMU)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method

_ACTIVATIONS = {"none": None, "relu": torch.relu, "tanh": torch.tanh}


@register_method("additive", family="joint")
class AdditiveFusion(Fusion):
    """Additive joint fusion: z = act(Σ_m W_m x_m + b), one weight per modality and a single shared bias.

    The same function class as a linear early fusion (Σ W_m x_m = W [x_1; …; x_M]); it is here as the catalog's
    "additive joint" baseline. `activation` defaults to none because the output is the prediction (logits).
    """

    def __init__(self, dims: Sequence[int], out_dim: int, activation: str = "none"):
        super().__init__(dims, out_dim)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got '{activation}'")
        self.activation = activation
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(out_dim, d)) for d in self.dims)
        self.bias = nn.Parameter(torch.empty(out_dim))
        bound = sum(self.dims) ** -0.5  # nn.Linear's init over the full fan-in Σd_m
        for w in self.weights:
            nn.init.uniform_(w, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        ws = iter(self.weights)  # (slicing a ParameterList would build a new module on every call)
        z = F.linear(xs[0], next(ws), self.bias)
        for x, w in zip(xs[1:], ws):
            z = torch.addmm(z, x, w.T)
        act = _ACTIVATIONS[self.activation]
        return z if act is None else act(z)

    def expected_params(self) -> int:
        return sum(self.dims) * self.out_dim + self.out_dim

    def expected_flops(self, batch: int) -> int:
        return 2 * batch * sum(self.dims) * self.out_dim


@register_method("hybrid", family="joint")
class HybridFusion(Fusion):
    """Hybrid fusion: an early-fusion predictor and one predictor per modality, mixed by learned softmax weights.

    ŷ = Σ_k softmax(β)_k ŷ_k over k = early, 1 … M, with ŷ_early = Linear(Σd_m → o)([x_1; …; x_M]) and
    ŷ_m = Linear(d_m → o)(x_m); β ∈ R^{M+1} starts at 0 (equal weights).
    """

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__(dims, out_dim)
        self.early = nn.Linear(sum(self.dims), out_dim)
        self.heads = nn.ModuleList(nn.Linear(d, out_dim) for d in self.dims)
        self.beta = nn.Parameter(torch.zeros(len(self.dims) + 1))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        preds = torch.stack([self.early(torch.cat(xs, -1)), *(h(x) for h, x in zip(self.heads, xs))])  # (M+1, B, o)
        return torch.einsum("k,kbo->bo", torch.softmax(self.beta, 0), preds)

    def expected_params(self) -> int:
        s, o, m = sum(self.dims), self.out_dim, len(self.dims)
        return (s + 1) * o + (s + m) * o + (m + 1)

    def expected_flops(self, batch: int) -> int:
        s, o, m = sum(self.dims), self.out_dim, len(self.dims)
        return 2 * batch * o * (2 * s + m + 1)  # early + unimodal linears, and the weighting (a bmm over M+1)


@register_method("gmu", family="joint")
class GatedMultimodalUnit(Fusion):
    """Gated Multimodal Unit (Arevalo 2017): h = Σ_m z_m ⊙ tanh(W_m x_m + b_m), gates from [x_1; …; x_M], Linear → o.

    Form built (biases everywhere): h_m = tanh(W_m x_m + b_m) with W_m ∈ R^{h×d_m}. Two modalities: one sigmoid
    gate z = σ(W_z [x_1; x_2] + b_z) ∈ R^h, h = z ⊙ h_1 + (1 − z) ⊙ h_2 (the paper's equations, and the authors'
    code, which is bimodal only). M > 2: W_z maps to M·h, one gate per modality, and ``gate`` says how they are made:
    "sigmoid" (default) z_m = σ(W_z,m [x_1; …; x_M] + b_z,m), independent and unnormalised, the generalisation the
    public M > 2 implementations citing the paper use (one sigmoid gate per modality from the concatenation);
    "softmax": a softmax over the M gates per unit, so they sum to 1 as z and 1 − z do — that form is ours, found in
    neither the paper's text available to us nor its code. The fused h goes through Linear(h → o) to give the
    prediction. Parameters: Σ(d_m+1)·h + (Σd_m+1)·G·h + (h+1)·o, G = 1 for two modalities, else M (either gate).
    """

    def __init__(self, dims: Sequence[int], out_dim: int, hidden: int = 64, gate: str = "sigmoid"):
        super().__init__(dims, out_dim)
        if hidden <= 0:
            raise ValueError(f"hidden must be positive, got {hidden}")
        if gate not in ("sigmoid", "softmax"):
            raise ValueError(f"gate must be 'sigmoid' or 'softmax', got {gate!r}")
        self.hidden, self.gate_kind = int(hidden), gate
        self.gates = 1 if len(self.dims) == 2 else len(self.dims)
        self.proj = nn.ModuleList(nn.Linear(d, hidden) for d in self.dims)
        self.gate = nn.Linear(sum(self.dims), self.gates * hidden)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        hs = [torch.tanh(p(x)) for p, x in zip(self.proj, xs)]
        g = self.gate(torch.cat(xs, -1))
        if self.gates == 1:
            z = torch.sigmoid(g)
            h = hs[1] + z * (hs[0] - hs[1])  # z ⊙ h_1 + (1 − z) ⊙ h_2
        else:
            g = g.view(-1, self.gates, self.hidden)
            z = torch.sigmoid(g) if self.gate_kind == "sigmoid" else torch.softmax(g, 1)
            h = (z * torch.stack(hs, 1)).sum(1)
        return self.out(h)

    def expected_params(self) -> int:
        s, h, o = sum(self.dims), self.hidden, self.out_dim
        return (s + len(self.dims)) * h + (s + 1) * self.gates * h + (h + 1) * o

    def expected_flops(self, batch: int) -> int:
        s, h, o = sum(self.dims), self.hidden, self.out_dim
        return 2 * batch * (s * h + s * self.gates * h + h * o)
