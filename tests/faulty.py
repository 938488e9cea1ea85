"""A user fusion module (named as tests.faulty:Faulty in suites) that fails on demand, for fault-injection tests.

fault: none | raise | nan | hang | abort | segfault | oom | exit | shape | tuple | sysexit | keyboard — what its
forward does (shape: one column too many; tuple: returns (out, out); sysexit / keyboard: raises SystemExit /
KeyboardInterrupt, as a module calling sys.exit() or a stray `raise KeyboardInterrupt` would)."""
import ctypes
import os
import time

import torch
from torch import nn


class Faulty(nn.Module):
    def __init__(self, dims, out_dim, fault: str = "none"):
        super().__init__()
        self.fault = fault
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        out = self.linear(torch.cat(xs, -1))
        if self.fault == "raise":
            raise ValueError("injected failure")
        if self.fault == "nan":
            return out * float("nan")
        if self.fault == "hang":
            while True:  # a C-level hang would look the same to the runner: no result
                time.sleep(0.05)
        if self.fault == "abort":
            os.abort()
        if self.fault == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if self.fault == "oom":
            torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB: past any machine's memory
        if self.fault == "exit":
            os._exit(3)
        if self.fault == "shape":
            return torch.cat([out, out[:, :1]], -1)
        if self.fault == "tuple":
            return out, out
        if self.fault == "sysexit":
            raise SystemExit(3)
        if self.fault == "keyboard":
            raise KeyboardInterrupt
        return out
