"""Numeric precision of a measured region: fp32, tf32 (CUDA matmuls), or bf16/fp16 autocast."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mmbench.errors import UserError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: str) -> None:
    """Refuse, before any trial runs, a precision this device cannot do. On CUDA this runs in the parent, which must
    never initialise CUDA: the GPUs' compute capability comes from NVML (every visible GPU must qualify, since any
    worker may get any of them); without NVML the check is left to the trials."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if precision == "tf32" and not device.startswith("cuda"):
        raise UserError("precision 'tf32' exists only on CUDA devices (Ampere or newer); use fp32 on CPU")
    if device.startswith("cuda"):
        if precision in ("tf32", "bf16"):
            from mmbench.measure.nvml import visible_gpus

            for gpu in visible_gpus() or []:
                cap = gpu.get("capability")
                if cap is not None and cap[0] < 8:  # TF32 tensor cores and native bf16 arrived with Ampere (8.0)
                    raise UserError(f"precision '{precision}' needs an Ampere or newer GPU; {gpu.get('name')} is "
                                    f"compute capability {cap[0]}.{cap[1]}")
        return
    if precision in _AUTOCAST:
        try:  # the autocast kernels this torch build has for the CPU
            with torch.autocast("cpu", dtype=_AUTOCAST[precision]):
                torch.ones(2, 2) @ torch.ones(2, 2)
        except (RuntimeError, AssertionError) as exc:
            raise UserError(f"precision '{precision}' is not available on cpu: {str(exc).splitlines()[0]}") from None


@contextlib.contextmanager
def autocast(precision: str, device: str, *, cache: bool = True) -> Iterator[None]:
    """Autocast for bf16/fp16 (nothing for fp32/tf32). ``cache=False``: every call casts its weights again, as one
    request of a deployed model does (and as a CUDA graph must: a cached cast is freed when the region exits)."""
    if precision not in _AUTOCAST:
        yield
        return
    with torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=_AUTOCAST[precision],
                        cache_enabled=cache):
        yield


@contextlib.contextmanager
def matmul_flags(precision: str, device: str) -> Iterator[None]:
    """The TF32 flags of ``precision`` (CUDA): on for tf32, off otherwise (fp32 means true fp32, whatever the process
    default was; autocast precisions keep their fp32 ops exact). Global flags, not autocast: they hold for a backward
    run inside them too. Restored afterwards."""
    if not device.startswith("cuda"):
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def region(precision: str, device: str, *, cache: bool = True) -> Iterator[None]:
    """Everything inside runs at ``precision``: the TF32 flags and autocast together. For training, hold
    ``matmul_flags`` around the whole step and ``autocast`` around forward and loss only (PyTorch's guidance: the
    backward runs outside autocast, in the forward's dtypes)."""
    with matmul_flags(precision, device), autocast(precision, device, cache=cache):
        yield


def grad_scaler(precision: str, device: str):
    """fp16 gradients underflow without loss scaling: a GradScaler for fp16 on CUDA, None otherwise."""
    if precision == "fp16" and device.startswith("cuda"):
        return torch.amp.GradScaler("cuda")
    return None


def check_compile(device: str = "cpu") -> None:
    """torch.compile needs a working backend (inductor needs a C++ compiler on CPU): try it once. For a CUDA run the
    try runs in a subprocess with no GPU visible: inductor's imports may query the GPU, and the parent must not
    initialise CUDA."""
    if device.startswith("cuda"):
        import os
        import subprocess
        import sys

        code = "from mmbench.measure.precision import check_compile; check_compile()"
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        except (OSError, subprocess.SubprocessError) as exc:
            raise UserError(f"torch.compile could not be checked: {exc}") from None
        if r.returncode != 0:
            lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
            msg = lines[-1].removeprefix("mmbench.errors.UserError: ") if lines else f"exit code {r.returncode}"
            raise UserError(msg if msg.startswith("torch.compile") else f"torch.compile is not usable here: {msg}")
        return
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as exc:  # any backend failure means compile is unusable here
        raise UserError(f"torch.compile is not usable here: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
