"""Datasets: ``@register_dataset`` on a loader function, ``load(name, **params)`` to get a TaskData."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmbench.errors import UserError, closest


@dataclass
class Split:
    xs: list[np.ndarray]   # one float32 array per modality: (N, d_m) vectors or (N, T_m, d_m) sequences
    y: np.ndarray          # (N,) int64 class labels, or (N,) float32 targets for regression
    # Sequences with padding: per modality, (N,) int64 valid lengths (steps >= length are padding). None: every
    # step is valid (vectors, or sequences of full length). The model turns them into boolean masks (True = valid).
    lengths: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TaskData:
    """A task ready to train on: three splits, modality names and dims, and what is known about it."""
    name: str
    train: Split
    val: Split
    test: Split
    modalities: list[str]
    num_classes: int                          # output width: classes, or 1 for regression
    info: dict = field(default_factory=dict)  # e.g. bayes_accuracy, chance_accuracy: saved beside the results
    kind: str = "vectors"                     # "vectors" | "sequences": what the methods must accept
    target: str = "classification"            # "classification" | "regression"

    @property
    def input_dims(self) -> list[int]:
        return [x.shape[-1] for x in self.train.xs]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    fn: Callable[..., TaskData]
    description: str
    params: tuple[str, ...]
    nbytes: Callable[..., int] | None = None  # a generated dataset's size from its parameters, before it is drawn


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, nbytes: Callable[..., int] | None = None) -> Callable:
    """``nbytes(**params)``: the bytes a generated dataset's arrays take (a lower bound), checked before drawing."""
    def deco(fn: Callable[..., TaskData]) -> Callable[..., TaskData]:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = DatasetInfo(name, fn, doc[0] if doc else "", tuple(inspect.signature(fn).parameters),
                                      nbytes)
        return fn

    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def info(name: str) -> DatasetInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown dataset '{name}'{closest(name, _REGISTRY)}") from None


def load(name: str, base_dir: str | None = None, **params) -> TaskData:
    """``base_dir`` (the suite file's folder) reaches loaders that take it: their relative paths resolve against it."""
    entry = info(name)
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        raise UserError(f"dataset '{name}' has no parameter '{unknown[0]}'{closest(unknown[0], entry.params)}; "
                        f"it takes: {', '.join(entry.params)}")
    from mmbench import params as typed

    typed.check(entry.fn, params, f"dataset '{name}'")  # before the loader runs: nothing read on a wrong type
    if entry.nbytes is not None:
        from mmbench.fits import check_dataset

        defaults = {n: p.default for n, p in inspect.signature(entry.fn).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        try:
            size = entry.nbytes(**{**defaults, **params})
        except (TypeError, ValueError):  # parameters the loader itself will refuse, with its own message
            size = None
        check_dataset(size, f"dataset '{name}'")
    if base_dir is not None and "base_dir" in entry.params and params.get("base_dir") is None:
        params = {**params, "base_dir": str(base_dir)}
    try:
        return entry.fn(**params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"dataset '{name}': {exc}") from None
