"""What every built-in fusion module is: ``forward(xs) -> (B, out_dim)`` plus its own closed forms."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Fusion(nn.Module):
    """Base of the built-in fusion modules.

    Subclasses state their closed forms so tests (and users) can hold the module to them:
    ``expected_params()`` counts the module's parameters, biases included; ``expected_flops(batch)`` counts the
    forward pass's FLOPs with torch.utils.flop_counter's convention (2 x multiply-adds of matmul-like ops; elementwise
    ops are not counted) for the computation this module actually performs.
    """

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.out_dim = int(out_dim)

    def expected_params(self) -> int | None:
        return None

    def expected_flops(self, batch: int) -> int | None:
        return None

    def aux_loss(self) -> torch.Tensor | None:
        """A method's own training objective (contrastive, correlation, reconstruction …), computed from the last
        forward pass; the trainer adds it to the task loss. None for methods trained by the task loss alone."""
        return None

    def extra_repr(self) -> str:
        return f"dims={self.dims}, out_dim={self.out_dim}"


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """x̃ = [x; 1]: the constant that lets a multiplicative fusion keep lower-order terms."""
    return torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1)
