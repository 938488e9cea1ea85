"""A user fusion module (named as tests.oom_module:OutOfMemory in suites) that runs out of CUDA memory on demand."""
import torch
from torch import nn


class OutOfMemory(nn.Module):
    """Raises torch.cuda.OutOfMemoryError in forward when `oom` is true; a plain linear fusion otherwise."""

    def __init__(self, dims, out_dim, oom: bool = True):
        super().__init__()
        self.oom = oom
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        if self.oom:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return self.linear(torch.cat(xs, -1))
