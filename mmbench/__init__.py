"""mmbench: benchmark multimodal fusion methods (accuracy, parameters, FLOPs, latency, memory) from a YAML suite."""
__version__ = "0.1.0"
