"""CMU-MOSI / CMU-MOSEI style sentiment data: aligned text, audio and vision features from a user's pickle.

Two layouts are recognised (``layout: auto`` tells them apart by the label key):

- MultiBench (``datasets/affect/get_data.py``): ``{"train"|"valid"|"test": {"text", "audio", "vision": float arrays
  (N, T, d), "labels": (N, 1, 1) sentiment, "id": ...}}``.
- MMSA (``data_loader.py``, e.g. ``aligned_50.pkl``): ``{"train"|"valid"|"test": {"text", "audio", "vision": (N, T,
  d), "regression_labels": (N,) sentiment, "classification_labels", "raw_text", "id", "text_bert", optionally
  "audio_lengths" and "vision_lengths" ...}}``.

The target is the sentiment score in [-3, 3] (regression); the standard metrics (binary accuracy on non-zero labels,
7-class accuracy, MAE, Pearson correlation, weighted F1 on non-zero labels) are computed from it. The file's own
train/valid/test split is used.

Formats: an NPZ (``np.savez``) with one array per ``<split>.<field>`` key (``train.text``, ``valid.labels`` …) is
read without running anything: prefer it. A pickle (``.pkl``, as both projects distribute them) runs code stored in
the file when it is read, so it needs ``allow_pickle: true`` — the boolean, nothing else — which says: I trust
whoever wrote this file as much as a program I run.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.common import check_features, make_task, read_numpy, resolve_path
from mmbench.data.registry import TaskData, register_dataset
from mmbench.errors import UserError

SPLITS = {"train": "train", "val": "valid", "test": "test"}
LAYOUT_LABELS = {"multibench": "labels", "mmsa": "regression_labels"}
LABEL_RANGE = (-3.0, 3.0)


def read_pickle(path: Path, allow_pickle: bool) -> Any:
    if not path.is_file():
        raise UserError("no such file", file=str(path))
    if allow_pickle is not True:  # the boolean true only: nothing is unpickled on a truthy string
        raise UserError("reading a pickle runs code stored in it: set `allow_pickle: true` in the task's params "
                        "only for a file you trust", file=str(path))
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as exc:  # corrupt, truncated, or needs a module that is not installed
        raise UserError(f"cannot unpickle: {type(exc).__name__}: {exc}", file=str(path)) from None


def read_npz(path: Path) -> dict:
    """The pickle's nested layout from an NPZ of ``<split>.<field>`` arrays (numbers only: nothing is executed)."""
    doc: dict[str, dict] = {}
    for k, v in read_numpy(path, all_arrays=True).items():
        split, _, field = k.partition(".")
        if not field:
            raise UserError(f"{k}: NPZ keys are <split>.<field> (train.text, valid.labels, ...)", file=str(path))
        doc.setdefault(split, {})[field] = v
    return doc


def detect_layout(doc: Any, file: str) -> str:
    expected = ("expected {'train','valid','test'} each holding 'text', 'audio', 'vision' and 'labels' (MultiBench) "
                "or 'regression_labels' (MMSA)")
    if not isinstance(doc, dict) or not all(s in doc for s in SPLITS.values()):
        keys = sorted(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise UserError(f"layout not recognised: top level has {keys}; {expected}", file=file)
    first = doc["train"]
    if not isinstance(first, dict):
        raise UserError(f"train: layout not recognised: a {type(first).__name__}, not a mapping; {expected}", file=file)
    found = [name for name, key in LAYOUT_LABELS.items() if key in first]
    if len(found) != 1:
        raise UserError(f"train: layout not recognised (keys {sorted(map(str, first))}); {expected}", file=file)
    return found[0]


def _reduce(x: np.ndarray, how: str) -> np.ndarray:
    """Sequences → vectors: the mean over the steps that are not all-zero padding (both layouts left-pad with 0)."""
    if how == "none" or x.ndim == 2:
        return x
    real = np.abs(x).sum(-1) > 0                                  # (N, T)
    counts = np.maximum(real.sum(1, keepdims=True), 1)
    return (x * real[..., None]).sum(1) / counts


@register_dataset("affect")
def affect(path: str, allow_pickle: bool = False, layout: str = "auto",
           modalities: list[str] | None = None, reduce: str = "mean", nonfinite: str = "error",
           standardize: bool = True, base_dir: str | None = None) -> TaskData:
    """CMU-MOSI/MOSEI-style aligned features from an NPZ or a pickle (MultiBench or MMSA layout); sentiment regression."""
    if layout not in ("auto", *LAYOUT_LABELS):
        raise ValueError(f"layout must be auto, multibench or mmsa, got '{layout}'")
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' (sequences → vectors) or 'none' (keep sequences), got '{reduce}'")
    if nonfinite not in ("error", "zero"):
        raise ValueError(f"nonfinite must be 'error' or 'zero', got '{nonfinite}'")
    mods = list(modalities) if modalities is not None else ["text", "audio", "vision"]
    p = resolve_path(path, base_dir)
    file = str(p)
    doc = read_npz(p) if p.suffix.lower() == ".npz" else read_pickle(p, allow_pickle)
    found = detect_layout(doc, file)
    if layout != "auto" and layout != found:
        raise UserError(f"layout is '{found}' but the suite says '{layout}'", file=file)
    label_key = LAYOUT_LABELS[found]
    splits = {}
    for ours, theirs in SPLITS.items():
        part = doc[theirs]
        if not isinstance(part, dict) or label_key not in part:
            raise UserError(f"{theirs}.{label_key}: missing", file=file)
        y = check_features(np.asarray(part[label_key], dtype=np.float64).reshape(len(part[label_key]), -1),
                           f"{theirs}.{label_key}", file)
        if y.shape[1] != 1:
            raise UserError(f"{theirs}.{label_key}: expected one sentiment score per row, got shape {y.shape}",
                            file=file)
        y = y[:, 0]
        bad = (y < LABEL_RANGE[0]) | (y > LABEL_RANGE[1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{theirs}.{label_key}: label {y[i]:g} at row {i} is outside [-3, 3]", file=file)
        xs = []
        for m in mods:
            if m not in part:
                raise UserError(f"{theirs}.{m}: no such modality (it holds: {', '.join(sorted(map(str, part)))})",
                                file=file)
            x = np.asarray(part[m], dtype=np.float32)
            if nonfinite == "zero":  # what both public loaders do to COVAREP's -inf
                x = np.where(np.isfinite(x), x, 0).astype(np.float32)
            xs.append(_reduce(check_features(x, f"{theirs}.{m}", file, rows=len(y)), reduce))
        splits[ours] = (xs, y.astype(np.float32))
    for i, m in enumerate(mods):
        shapes = {s: splits[s][0][i].shape[1:] for s in splits}
        if len(set(shapes.values())) != 1:
            raise UserError(f"{m}: feature shape differs between splits: {shapes}", file=file)
    return make_task(f"affect-{p.stem}", mods, splits, num_classes=1, target="regression", standardize=standardize,
                     info={"source": file, "layout": found, "metrics": "affect", "split": "file",
                           "reduce": reduce})
