"""A user's own multi-view data: a directory with one file per view, a labels file and a small manifest.

``manifest.yaml`` (or ``.yml`` / ``.json``) in the directory::

    views:                          # in order; each view is one modality
      image: image.npy              # NPY: a (rows, features) array
      text: text.csv                # CSV: numbers, one row per sample, an optional header line
      audio: {file: feats.npz, key: audio}   # NPZ: the array under `key` (may be left out if the file holds one)
    labels: labels.csv              # one label per row (same formats; NPZ takes `key` the same way)
    split: split.csv                # optional: train / val / test per row (else a stratified split by seed)
    num_classes: 10                 # optional: labels must lie in 0..num_classes-1 (default: max label + 1)
    target: classification          # or regression (float targets)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.common import (check_class_labels, check_features, make_task, read_numpy, resolve_path,
                                 split_indices, take)
from mmbench.data.registry import TaskData, register_dataset
from mmbench.errors import UserError

MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
SPLIT_NAMES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}  # a numeric split file: 0 train, 1 val, 2 test


def _manifest(path: Path) -> tuple[Path, dict]:
    if path.is_dir():
        found = [path / n for n in MANIFEST_NAMES if (path / n).is_file()]
        if not found:
            raise UserError(f"no manifest in this directory (expected one of {', '.join(MANIFEST_NAMES)})",
                            file=str(path))
        path = found[0]
    elif not path.is_file():
        raise UserError("no such file or directory", file=str(path))
    from mmbench import safe_yaml  # the suite's bounds: size, encoding, depth, aliases, duplicate keys

    if path.suffix == ".json":
        try:
            doc = json.loads(safe_yaml.decode(path.read_bytes(), str(path)))
        except json.JSONDecodeError as exc:
            raise UserError(f"manifest is not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    else:
        _, doc = safe_yaml.load_file(path)
    if not isinstance(doc, dict):
        raise UserError("manifest must be a mapping", file=str(path))
    unknown = sorted(set(doc) - {"views", "labels", "split", "num_classes", "target"})
    if unknown:
        raise UserError(f"{unknown[0]}: unknown manifest key", file=str(path))
    for key in ("views", "labels"):
        if key not in doc:
            raise UserError(f"{key}: required key is missing", file=str(path))
    return path, doc


def _entry(value: Any, where: str, manifest: Path) -> tuple[str, str | None]:
    """A file reference: 'file.ext' or {file: ..., key: ...}."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("file"), str) and set(value) <= {"file", "key"}:
        return value["file"], value.get("key")
    raise UserError(f"{where}: expected a file name or {{file: ..., key: ...}}, got {value!r}", file=str(manifest))


def read_array(path: Path, key: str | None, *, text: bool = False, notes: list[str] | None = None) -> np.ndarray:
    """Read a CSV, NPY or NPZ file into an array. ``text``: keep strings (split files). What was guessed about the
    file (a header line skipped) is appended to ``notes``."""
    if not path.is_file():
        raise UserError("no such file", file=str(path))
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return read_numpy(path, key)
    if suffix in (".csv", ".txt"):
        import pandas as pd

        try:
            df = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise UserError("empty file", file=str(path)) from None
        values = df.to_numpy()
        if text:
            first = str(values[0, 0]).strip().lower()
            return values if first in SPLIT_NAMES or first in SPLIT_CODES else values[1:]  # else a header
        try:
            numbers = values.astype(np.float64)
        except ValueError:
            try:  # a header line
                numbers = values[1:].astype(np.float64)
            except ValueError:
                raise UserError("not numeric (CSV must hold numbers, with at most one header line)",
                                file=str(path)) from None
            _note(notes, f"{path.name}: first line is not numbers: skipped as a header")
            return numbers
        why = numeric_header(numbers)
        if why:
            _note(notes, f"{path.name}: first line read as a header and skipped ({why})")
            return numbers[1:]
        return numbers
    raise UserError(f"unsupported file type '{suffix}' (use .csv, .npy or .npz)", file=str(path))


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


def numeric_header(a: np.ndarray) -> str:
    """Why the first row of an all-numbers table is a header ('' when it looks like data): column numbers 0..n-1 or
    1..n (as in the UCI Multiple Features CSVs), or increasing integers outside every column's range of the rest."""
    if a.ndim != 2 or a.shape[0] < 3 or a.shape[1] < 2:
        return ""
    first, rest = a[0], a[1:]
    for start in (0, 1):
        if np.array_equal(first, np.arange(start, start + a.shape[1])) and not np.array_equal(rest[0], first):
            return f"column numbers {start}..{start + a.shape[1] - 1}"
    integer = np.all(first == np.round(first)) and np.all(np.diff(first) > 0)
    outside = (first < rest.min(0)) | (first > rest.max(0))
    if integer and outside.all():
        return "increasing integers, each outside its column's range in the other rows"
    return ""


def _label_column(x: np.ndarray, y: np.ndarray) -> int | None:
    """The index of a feature column that equals the labels row for row (a label left in a view), else None."""
    if x.ndim != 2 or len(y) < 10:
        return None
    same = np.all(x == np.asarray(y, dtype=np.float64)[:, None], axis=0)
    hits = np.flatnonzero(same)
    return int(hits[-1]) if len(hits) else None


def _split_from_file(values: np.ndarray, n: int, file: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = np.asarray(values).reshape(-1)
    if len(flat) != n:
        raise UserError(f"has {len(flat)} rows but the labels have {n}", file=file)
    codes = np.empty(n, dtype=np.int64)
    for i, v in enumerate(flat):
        s = str(v).strip().lower()
        s = SPLIT_CODES.get(s.removesuffix(".0"), s)
        if s not in SPLIT_NAMES:
            raise UserError(f"row {i}: split '{v}' is not train, val or test", file=file)
        codes[i] = SPLIT_NAMES[s]
    parts = tuple(np.flatnonzero(codes == c) for c in range(3))
    for name, p in zip(("train", "val", "test"), parts):
        if len(p) == 0:
            raise UserError(f"no rows in the {name} split", file=file)
    return parts  # type: ignore[return-value]


@register_dataset("multiview")
def multiview(path: str, val_fraction: float = 0.15, test_fraction: float = 0.2, standardize: bool = True,
              seed: int = 0, base_dir: str | None = None) -> TaskData:
    """A directory of per-view CSV/NPY/NPZ files with labels and a manifest (views, labels, optional split)."""
    manifest, doc = _manifest(resolve_path(path, base_dir))
    root, mf = manifest.parent, str(manifest)
    views = doc["views"]
    if isinstance(views, dict):
        items = list(views.items())
    elif isinstance(views, list) and all(isinstance(v, dict) and "name" in v for v in views):
        items = [(v["name"], {k: x for k, x in v.items() if k != "name"}) for v in views]
    else:
        raise UserError("views: expected a mapping of view name to file (or a list of {name, file, key})", file=mf)
    if len(items) < 2:
        raise UserError(f"views: a multi-view task needs at least 2 views, got {len(items)}", file=mf)
    target = doc.get("target", "classification")
    if target not in ("classification", "regression"):
        raise UserError(f"target: must be classification or regression, got {target!r}", file=mf)
    lab_file, lab_key = _entry(doc["labels"], "labels", manifest)
    lab_path = root / lab_file
    notes: list[str] = []
    raw_y = np.asarray(read_array(lab_path, lab_key, notes=notes))
    if raw_y.ndim > 1 and raw_y.shape[1:] != (1,) * (raw_y.ndim - 1):
        raise UserError(f"{lab_key or 'labels'}: expected one label per row, got shape {raw_y.shape}",
                        file=str(lab_path))
    raw_y = raw_y.reshape(-1)
    if target == "classification":
        nc = doc.get("num_classes")
        if nc is not None and (not isinstance(nc, int) or nc < 2):
            raise UserError(f"num_classes: must be an integer ≥ 2, got {nc!r}", file=mf)
        y, k, classes = check_class_labels(raw_y, lab_key or "labels", str(lab_path), nc)
        if classes is not None:
            notes.append(f"{lab_file}: labels {_show(classes)} are not 0..{k - 1}: remapped in sorted order to "
                         f"0..{k - 1} (label_map in tasks.json: class i is label_map[i])")
    else:
        y = check_features(raw_y, lab_key or "labels", str(lab_path))[:, 0]
        k, classes = 1, None
    names, xs = [], []
    for name, value in items:
        f, key = _entry(value, f"views.{name}", manifest)
        p = root / f
        where = key or f"view '{name}'"
        xs.append(check_features(read_array(p, key, notes=notes), where, str(p), rows=len(y)))
        col = _label_column(xs[-1], raw_y if target == "classification" else y)
        if col is not None:
            last = col == xs[-1].shape[1] - 1
            raise UserError(f"{where}: its {'last ' if last else ''}column {col} equals the labels row for row (a "
                            "label column left in the view?): remove it from the view's file", file=str(p))
        names.append(str(name))
    if doc.get("split") is not None:
        sf, skey = _entry(doc["split"], "split", manifest)
        idx = _split_from_file(read_array(root / sf, skey, text=True), len(y), str(root / sf))
        split_source = f"file {sf}"
    else:
        idx = split_indices(len(y), seed, val_fraction, test_fraction,
                            stratify=y if target == "classification" else None)
        split_source = f"seed {seed}"
    splits = {s: take(xs, y.astype(np.float32) if target == "regression" else y, i)
              for s, i in zip(("train", "val", "test"), idx)}
    return make_task(f"multiview-{root.name}", names, splits, num_classes=k, target=target, standardize=standardize,
                     info={"source": mf, "split": split_source, **({"label_map": classes} if classes else {}),
                           **({"notes": notes} if notes else {})})


def _show(values: list) -> str:
    return ", ".join(map(str, values)) if len(values) <= 6 else f"{values[0]}, {values[1]}, …, {values[-1]}"
