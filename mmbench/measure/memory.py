"""Peak memory of one call, in its own scope: what the call allocates, plus the tensors the scope names as alive at
its start (the model's weights, that batch's inputs; for a training step also gradients and optimizer state that
exist), and nothing else that happens to be alive in the process (other batch sizes' inputs, graph pools, buffers).

- CUDA: the torch allocator's peak above its level at the start ("cuda_allocated").
- CPU: a dispatch-mode tracker ("cpu_live_tensors"): every storage an op creates is counted from its creation until
  it is freed (a finalizer on the storage), so the peak of live tensor bytes is exact for tensors. The resident set
  cannot do this: the allocator reuses pages it already holds, so a small model's RSS delta reads 0.
"""
from __future__ import annotations

import weakref
from typing import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storages(tensors: Iterable[torch.Tensor]) -> dict[int, torch.UntypedStorage]:
    """Distinct storages of the given tensors (tied weights and views counted once)."""
    out = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_meta:
            st = t.untyped_storage()
            out.setdefault(id(st), st)
    return out


def scope_bytes(alive: Iterable[torch.Tensor]) -> int:
    return sum(st.nbytes() for st in _storages(alive).values())


class LiveBytes(TorchDispatchMode):
    """Live tensor bytes while active: the scope's tensors at entry, plus every storage an op creates, minus those
    freed. ``peak`` is the high-water mark, ``base`` the scope's bytes at entry."""

    def __init__(self, alive: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.live = self.peak = self.base = 0
        self._sizes: dict[int, int] = {}
        self._finalizers: list[weakref.finalize] = []
        for st in _storages(alive).values():
            self._track(st)
        self.base = self.peak = self.live

    def _track(self, st: torch.UntypedStorage) -> None:
        n = st.nbytes()
        if n == 0:
            return
        self._sizes[id(st)] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        self._finalizers.append(weakref.finalize(st, self._free, id(st)))

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_meta:
                st = t.untyped_storage()
                if id(st) in self._sizes:
                    continue
                if inputs is None:  # a view or an in-place op returns an input's storage: nothing was allocated
                    inputs = set(_storages(tree_leaves((args, kwargs))))
                if id(st) not in inputs:
                    self._track(st)
        return out

    def __exit__(self, *exc):
        for f in self._finalizers:  # the tracker's count ends here; later frees are not its business
            f.detach()
        return super().__exit__(*exc)


def peak_memory(fn: Callable[[], object], device: str = "cpu", alive: Iterable[torch.Tensor] = ()
                ) -> dict[str, float | str]:
    """Peak memory of one call of fn in its own scope (``alive``: the tensors that belong to it at the start).

    peak_mem_mib: the peak above the start (the call's activations, gradients, optimizer state, workspace);
    peak_alloc_mib: that plus the scope's tensors; on CUDA also peak_reserved_mib (the caching allocator's pool at
    its peak, cache emptied first). mem_measure says how it was measured.
    """
    alive = list(alive)
    base = scope_bytes(alive)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        own = torch.cuda.max_memory_allocated() - before
        return {"peak_mem_mib": own / 2**20, "peak_alloc_mib": (base + own) / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20, "mem_measure": "cuda_allocated"}
    with LiveBytes(alive) as tracker:
        fn()
    return {"peak_mem_mib": (tracker.peak - tracker.base) / 2**20, "peak_alloc_mib": tracker.peak / 2**20,
            "mem_measure": "cpu_live_tensors"}


def nvml_used_mib(device: str) -> float | None:
    """Device memory in use as NVML sees it: every process and the CUDA context included (unlike the allocator); the
    device found by UUID, so CUDA_VISIBLE_DEVICES cannot point it at another GPU."""
    from mmbench.measure.nvml import device_row

    return device_row(device).get("nvml_used_mib")
