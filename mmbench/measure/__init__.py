"""Independent measures: each takes a built model (and data) and returns plain numbers."""
from mmbench.measure.contention import free_cores, system_load
from mmbench.measure.counts import flops, flops_note, params, weight_flops_floor
from mmbench.measure.latency import LatencyStats, cuda_graph, latency, latency_rounds
from mmbench.measure.memory import nvml_used_mib, peak_memory
from mmbench.measure.precision import region as precision_region

__all__ = ["LatencyStats", "cuda_graph", "flops", "flops_note", "free_cores", "latency", "latency_rounds",
           "nvml_used_mib", "params", "peak_memory", "precision_region", "system_load", "weight_flops_floor"]
