"""Numeric precision of a measured region: fp32, tf32 (CUDA matmuls), or bf16/fp16 autocast."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mmbench.errors import UserError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: str) -> None:
    """Refuse, before any trial runs, a precision this device cannot do."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if precision == "tf32" and not device.startswith("cuda"):
        raise UserError("precision 'tf32' exists only on CUDA devices (Ampere or newer); use fp32 on CPU")
    if precision == "tf32" and torch.cuda.get_device_capability()[0] < 8:
        raise UserError(f"precision 'tf32' needs an Ampere or newer GPU; this one is {torch.cuda.get_device_name()}")
    if precision in _AUTOCAST:
        dev = "cuda" if device.startswith("cuda") else "cpu"
        if dev == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError(f"precision 'bf16' is not supported by {torch.cuda.get_device_name()}")
        try:  # the autocast kernels this torch build has for the device
            with torch.autocast(dev, dtype=_AUTOCAST[precision]):
                torch.ones(2, 2, device=dev) @ torch.ones(2, 2, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise UserError(f"precision '{precision}' is not available on {dev}: {str(exc).splitlines()[0]}") from None


@contextlib.contextmanager
def region(precision: str, device: str) -> Iterator[None]:
    """Everything inside runs at ``precision``; TF32 flags are restored afterwards."""
    dev = "cuda" if device.startswith("cuda") else "cpu"
    if precision in _AUTOCAST:
        with torch.autocast(dev, dtype=_AUTOCAST[precision]):
            yield
        return
    if dev != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    on = precision == "tf32"  # fp32 means true fp32: TF32 off, whatever the process default was
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_compile() -> None:
    """torch.compile needs a working backend (inductor needs a C++ compiler on CPU): try it once."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as exc:  # any backend failure means compile is unusable here
        raise UserError(f"torch.compile is not usable here: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
