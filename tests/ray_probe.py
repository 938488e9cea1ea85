"""A user fusion module (tests.ray_probe:Slow) that takes a set time to build, for scheduling tests: two trials
whose build windows overlap were running at the same time."""
import time

import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self, dims, out_dim, delay: float = 0.5):
        super().__init__()
        time.sleep(delay)
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        return self.linear(torch.cat(xs, -1))
