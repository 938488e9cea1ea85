"""mmbench: benchmark multimodal fusion methods (accuracy, parameters, FLOPs, latency, memory) from a YAML suite.

For a notebook: ``mmbench.load_run(path).frame()`` (a run's rows as a DataFrame) and ``mmbench.history_frame(db,
suite, metric)`` (one metric over the recorded runs)."""
__version__ = "0.1.0"
__all__ = ["load_run", "history_frame"]


def __getattr__(name: str):  # imported when used: `import mmbench` (the CLI's start) stays light
    if name == "load_run":
        from mmbench.store import load_run

        return load_run
    if name == "history_frame":
        from mmbench.frames import history_frame

        return history_frame
    raise AttributeError(f"module 'mmbench' has no attribute {name!r}")
