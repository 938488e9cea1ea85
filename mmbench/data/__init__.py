"""Datasets: ``load(name, **params)`` returns a TaskData; ``available()`` lists them."""
from mmbench.data.registry import DatasetInfo, Split, TaskData, available, info, load, register_dataset
from mmbench.data import synthetic  # noqa: E402,F401  (registers)
from mmbench.data import affect, digits, multiview, synthetic_mix  # noqa: E402,F401  (register)

__all__ = ["DatasetInfo", "Split", "TaskData", "available", "info", "load", "register_dataset"]
