"""FusionModel: one encoder per modality (raw features -> fusion dims), the fusion layer, nothing after it.

Nothing follows the fusion layer on purpose: the fusion's output is the prediction, so late fusion stays a true
decision-level method (a shared MLP after it would let it learn cross-modal interactions) and every method's
expressiveness is its own.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmbench import methods


def encoder(in_dim: int, out_dim: int, hidden: Sequence[int] = ()) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in [*hidden, out_dim]:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers)


class FusionModel(nn.Module):
    def __init__(self, input_dims: Sequence[int], fusion: nn.Module, dims: Sequence[int],
                 encoder_hidden: Sequence[int] = ()):
        super().__init__()
        self.encoders = nn.ModuleList(encoder(i, d, encoder_hidden) for i, d in zip(input_dims, dims))
        self.fusion = fusion

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.fusion([enc(x) for enc, x in zip(self.encoders, xs)])

    def aux_loss(self) -> torch.Tensor | None:
        """The fusion method's own objective from the last forward (user modules may not define one)."""
        fn = getattr(self.fusion, "aux_loss", None)
        return fn() if callable(fn) else None


def build(method: str, hparams: dict, input_dims: Sequence[int], dims: Sequence[int], out_dim: int,
          encoder_hidden: Sequence[int] = ()) -> FusionModel:
    fusion = methods.create(method, dims, out_dim, **hparams)
    return FusionModel(input_dims, fusion, dims, encoder_hidden)
