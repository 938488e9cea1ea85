"""Encoder–decoder (translation) fusion, MCTN-style (Pham 2019)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method


@register_method("encdec", family="encoder-decoder")
class EncoderDecoder(Fusion):
    """Translation fusion (MCTN-style): encode the source modality, decode the others from the code, predict from it.

    c = tanh(W_e x_s + b_e) ∈ R^h (s = `source`); the decoder Linear(h → Σ_{t≠s} d_t) translates c into the other
    modalities' features; y = Linear(h → o)(c). ``aux_loss()`` = aux_weight × MSE(decoded, targets) on the last batch,
    with the targets detached: they are what is translated into, not something to move towards the decoder (which
    would collapse them). As in MCTN, the prediction needs only the source modality (the others shape the code during
    training), so the decoder runs in ``aux_loss`` and is not part of the inference cost.
    Parameters: (d_s+1)·h + (h+1)·Σ_{t≠s} d_t + (h+1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, hidden: int = 64, source: int = 0, aux_weight: float = 1.0):
        super().__init__(dims, out_dim)
        if hidden <= 0:
            raise ValueError(f"hidden must be positive, got {hidden}")
        if not 0 <= source < len(self.dims):
            raise ValueError(f"source must be a modality index in 0..{len(self.dims) - 1}, got {source}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be non-negative, got {aux_weight}")
        self.hidden, self.source, self.aux_weight = int(hidden), int(source), float(aux_weight)
        self.targets = [m for m in range(len(self.dims)) if m != source]
        self.encoder = nn.Linear(self.dims[source], hidden)
        self.decoder = nn.Linear(hidden, sum(self.dims[m] for m in self.targets))
        self.out = nn.Linear(hidden, out_dim)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        code = torch.tanh(self.encoder(xs[self.source]))
        self._last = (code, [xs[m] for m in self.targets])  # joined only if aux_loss asks: not an inference cost
        return self.out(code)

    def aux_loss(self) -> torch.Tensor | None:
        if self._last is None or self.aux_weight == 0:
            return None
        code, targets = self._last
        target = torch.cat(targets, -1).detach().float()
        return self.aux_weight * F.mse_loss(self.decoder(code).float(), target)

    def expected_params(self) -> int:
        h = self.hidden
        return (self.dims[self.source] + 1) * h + (h + 1) * sum(self.dims[m] for m in self.targets) \
            + (h + 1) * self.out_dim

    def expected_flops(self, batch: int) -> int:
        return 2 * batch * self.hidden * (self.dims[self.source] + self.out_dim)
