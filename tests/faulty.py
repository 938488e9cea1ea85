"""A user fusion module (named as tests.faulty:Faulty in suites) that fails on demand, for fault-injection tests.

fault: none | raise | nan | hang | abort | segfault | segfault_in_worker | oom | exit | cuda_error | report_env | shape | tuple | sysexit |
keyboard — what its forward does. cuda_error stands in for a sticky CUDA error: once raised, every later forward in
the same process raises it too, as every CUDA call does after a device-side assert. report_env raises with the
worker's GPU pinning in the message. segfault_in_worker: a segfault in a worker process only (mmbench-worker-N). shape: one column too many; tuple: returns (out, out); sysexit / keyboard:
raises SystemExit / KeyboardInterrupt, as a module calling sys.exit() or a stray `raise KeyboardInterrupt` would."""
import ctypes
import multiprocessing
import os
import time

import torch
from torch import nn

POISONED = False  # this process "saw" a sticky CUDA error


class Faulty(nn.Module):
    def __init__(self, dims, out_dim, fault: str = "none"):
        super().__init__()
        self.fault = fault
        self.linear = nn.Linear(sum(dims), out_dim)

    def forward(self, xs):
        global POISONED
        if self.fault == "cuda_error" or POISONED:
            POISONED = True
            raise RuntimeError("CUDA error: device-side assert triggered (injected)")
        out = self.linear(torch.cat(xs, -1))
        if self.fault == "report_env":
            raise ValueError("env CUDA_VISIBLE_DEVICES={} TORCHINDUCTOR_COMPILE_THREADS={}".format(
                os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("TORCHINDUCTOR_COMPILE_THREADS")))
        if self.fault == "raise":
            raise ValueError("injected failure")
        if self.fault == "nan":
            return out * float("nan")
        if self.fault == "hang":
            while True:  # a C-level hang would look the same to the runner: no result
                time.sleep(0.05)
        if self.fault == "abort":
            os.abort()
        if self.fault == "segfault_in_worker" and multiprocessing.current_process().name.startswith("mmbench-worker"):
            ctypes.string_at(0)
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
