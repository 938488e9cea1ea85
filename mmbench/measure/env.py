"""The environment of a run: everything that changes a timing, saved as env.json."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

import psutil

from mmbench.measure import heap


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def git_sha(path: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu(device: str) -> dict:
    """The GPUs of a CUDA run, from NVML only: this runs in the parent, which must not open a CUDA context. Per
    visible GPU: name, UUID, memory, compute capability, persistence mode, application clocks and max clocks; the
    driver once. Which GPU measured each trial is in its row (gpu_uuid)."""
    import torch

    if not device.startswith("cuda"):
        return {}
    info = {"cuda": torch.version.cuda, "cudnn": _cudnn_version(), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    from mmbench.measure import nvml

    with nvml.session() as nv:
        if nv is None:
            info["nvml_error"] = "NVML unusable (pip install nvidia-ml-py; a driver must be loaded): no GPU facts"
            return info
        gpus = []
        try:
            info["driver"] = nvml._text(nv.nvmlSystemGetDriverVersion())
            for g in nvml.visible_gpus() or []:
                h = nvml.handle_by_uuid(nv, g["uuid"]) if g.get("uuid") else None
                gpus.append({**{k: g.get(k) for k in ("visible", "uuid", "name", "mem_total_mib")},
                             "capability": ".".join(map(str, g["capability"])) if g.get("capability") else None,
                             **(_gpu_state(nv, h) if h is not None else {})})
        except Exception as exc:  # record why rather than fail the run
            info["nvml_error"] = str(exc)
        info["gpus"] = gpus
        if gpus:
            info.update(gpu_name=gpus[0]["name"], gpu_memory_mib=gpus[0]["mem_total_mib"],
                        gpu_capability=gpus[0]["capability"])
    return info


def _cudnn_version() -> int | None:
    """The cuDNN torch was built with, read without CUDA: torch.backends.cudnn.version() checks the devices'
    compute capability on first use, which initialises CUDA in this (parent) process."""
    try:
        from torch._C import _cudnn
    except ImportError:  # a build without cuDNN
        return None
    return int(_cudnn.getVersionInt())


def _gpu_state(nv, h) -> dict:
    def read(fn, *args):
        try:
            return getattr(nv, fn)(h, *args)
        except Exception:  # a reading this GPU does not offer: empty
            return None

    sm, mem = getattr(nv, "NVML_CLOCK_SM", 1), getattr(nv, "NVML_CLOCK_MEM", 2)
    persistence = read("nvmlDeviceGetPersistenceMode")
    return {"persistence_mode": None if persistence is None else bool(persistence),
            "app_sm_clock_mhz": read("nvmlDeviceGetApplicationsClock", sm),
            "app_mem_clock_mhz": read("nvmlDeviceGetApplicationsClock", mem),
            "max_sm_clock_mhz": read("nvmlDeviceGetMaxClockInfo", sm),
            "max_mem_clock_mhz": read("nvmlDeviceGetMaxClockInfo", mem),
            "power_limit_w": (lambda v: None if v is None else v / 1e3)(read("nvmlDeviceGetPowerManagementLimit"))}


def environment(device: str, suite_dir: str | Path | None = None) -> dict:
    import numpy
    import torch

    from mmbench import __version__

    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mmbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "hostname": platform.node(),
        "cpu_model": _cpu_model(), "cpu_count_logical": psutil.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False), "cpu_governor": _governor(),
        "torch_threads": torch.get_num_threads(), "memory_total_mib": psutil.virtual_memory().total // 2**20,
        "device": device, "git_sha": git_sha(suite_dir) if suite_dir else None,
        "mmbench_git_sha": git_sha(Path(__file__).resolve().parent),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(), "heap": heap.held(),
        **_compile_settings(), **_gpu(device),
    }


def _compile_settings() -> dict:
    """What torch.compile would use: the backend, and inductor's C++ compiler (CPU) and its mode flags."""
    import shutil

    import torch

    out = {"compile_backend": "inductor", "cxx": shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")}
    try:
        from torch._inductor import config as inductor

        out.update(inductor_max_autotune=inductor.max_autotune, inductor_cpp_wrapper=inductor.cpp_wrapper)
    except Exception:  # private config moved: record the torch version alone
        pass
    out["dynamo_cache_size_limit"] = getattr(torch._dynamo.config, "cache_size_limit", None)
    return out
