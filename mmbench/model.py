"""FusionModel: one encoder per modality (raw features -> fusion dims), the fusion layer, nothing after it.

Sequences (B, T_m, d_in) go through the same encoder, applied per time step (nn.Linear acts on the last axis), giving
(B, T_m, d_m). Padding travels as boolean masks, one (B, T_m) per modality, True = a valid step: the fusion gets them
as ``fusion(xs, masks=masks)``; when there are none (vectors, or sequences with every step valid) it is called as
``fusion(xs)``, so vector methods never see the argument.

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

    def encode(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The encoders alone: the first stage of the forward (timed on its own as encoder_latency)."""
        return [enc(x) for enc, x in zip(self.encoders, xs)]

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        hs = self.encode(xs)
        return self.fusion(hs) if masks is None else self.fusion(hs, masks=masks)

    def aux_loss(self) -> torch.Tensor | None:
        """The fusion method's own objective from the last forward (user modules may not define one)."""
        fn = getattr(self.fusion, "aux_loss", None)
        return fn() if callable(fn) else None


def masks_from_lengths(lengths: Sequence[torch.Tensor], steps: Sequence[int]) -> list[torch.Tensor]:
    """(B, T_m) boolean masks, True where t < length."""
    return [torch.arange(t, device=n.device)[None, :] < n[:, None] for n, t in zip(lengths, steps)]


def build(method: str, hparams: dict, input_dims: Sequence[int], dims: Sequence[int], out_dim: int,
          encoder_hidden: Sequence[int] = ()) -> FusionModel:
    fusion = methods.create(method, dims, out_dim, **hparams)
    return FusionModel(input_dims, fusion, dims, encoder_hidden)
