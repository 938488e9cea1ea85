"""A user fusion module (named as tests.oom_module:OutOfMemory in suites) that runs out of CUDA memory on demand."""
import torch
from torch import nn


class OutOfMemory(nn.Module):
    """Runs out of CUDA memory in forward: for real on a GPU (allocates `alloc_gib`), simulated on CPU."""

    def __init__(self, dims, out_dim, oom: bool = True, alloc_gib: float = 4096.0):
        super().__init__()
        self.oom, self.alloc_gib = oom, alloc_gib
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        if self.oom:
            if xs[0].is_cuda:
                self.hog = torch.empty(int(self.alloc_gib * 2**30), dtype=torch.uint8, device=xs[0].device)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return self.linear(torch.cat(xs, -1))
