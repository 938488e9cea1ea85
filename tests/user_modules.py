"""Classes a suite may name as ``tests.user_modules:Name``: ones that break the user-module interface."""
import torch
from torch import nn


class NotAModule:
    def __init__(self, dims, out_dim):
        pass


class WrongConstructor(nn.Module):
    def __init__(self, size, out_dim):
        super().__init__()


class NoForward(nn.Module):
    def __init__(self, dims, out_dim):
        super().__init__()


class RaisesInConstructor(nn.Module):
    def __init__(self, dims, out_dim):
        super().__init__()
        raise RuntimeError("weights file missing")

    def forward(self, xs):
        return xs[0]


class BadInputsKind(nn.Module):
    inputs = "images"

    def __init__(self, dims, out_dim):
        super().__init__()

    def forward(self, xs):
        return xs[0]


class BadRankParam(nn.Module):
    rank_param = "rnak"

    def __init__(self, dims, out_dim, rank: int = 2):
        super().__init__()

    def forward(self, xs):
        return xs[0]


class PairOnlyWithAux(nn.Module):
    """A valid two-modality user module with its own objective (aux_loss), like a built-in coordinated method."""
    max_modalities = 2

    def __init__(self, dims, out_dim, width: int = 4):
        super().__init__()
        self.a, self.b = nn.Linear(dims[0], width), nn.Linear(dims[1], width)
        self.out = nn.Linear(width, out_dim)
        self._last = None

    def forward(self, xs):
        ha, hb = self.a(xs[0]), self.b(xs[1])
        self._last = (ha, hb)
        return self.out(ha * hb)

    def aux_loss(self):
        return None if self._last is None else 0.1 * (self._last[0] - self._last[1]).pow(2).mean()
