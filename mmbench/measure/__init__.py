"""Independent measures: each takes a built model (and data) and returns plain numbers."""
from mmbench.measure.counts import flops, params
from mmbench.measure.latency import LatencyStats, latency
from mmbench.measure.memory import peak_memory

__all__ = ["LatencyStats", "flops", "latency", "params", "peak_memory"]
