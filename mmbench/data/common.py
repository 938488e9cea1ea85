"""What every real dataset does the same way: check the arrays, split by seed, standardise on train only.

Checks raise UserError naming the file (and key) at fault, so a bad input stops the suite before any training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mmbench.data.registry import Split, TaskData
from mmbench.errors import UserError


def resolve_path(path: str | Path, base_dir: str | Path | None) -> Path:
    """A relative path is relative to the suite file's folder (``base_dir``), not to the working directory."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def read_numpy(path: Path, key: str | None = None, *, all_arrays: bool = False):
    """An array from an NPY file, or from an NPZ the one under ``key`` (or its only one; ``all_arrays``: a dict of
    every array). Never unpickles: object arrays are refused. Damage is a UserError naming the file."""
    import zipfile

    file = str(path)
    if not path.is_file():
        raise UserError("no such file", file=file)
    if path.stat().st_size == 0:
        raise UserError("empty file (0 bytes)", file=file)
    npz = path.suffix.lower() == ".npz"
    with open(path, "rb") as f:
        head = f.read(6)
    if npz and head[:2] != b"PK":
        raise UserError("not an NPZ file (NPZ is a zip archive of NPY arrays; this one is not a zip)", file=file)
    if not npz and head != b"\x93NUMPY":
        raise UserError("not an NPY file (it does not begin with NumPy's header; was it saved with np.save?)",
                        file=file)
    try:
        if not npz:
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            if all_arrays:
                return {k: z[k] for k in z.files}
            if key is None:
                if len(z.files) != 1:
                    raise UserError(f"holds {len(z.files)} arrays ({', '.join(z.files)}): name one with `key`",
                                    file=file)
                key = z.files[0]
            if key not in z.files:
                raise UserError(f"{key}: no such array (it holds: {', '.join(z.files)})", file=file)
            return z[key]
    except UserError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise UserError("holds Python objects (an object array), which mmbench never unpickles: save numeric "
                            "arrays", file=file) from None
        raise UserError(f"damaged {'NPZ' if npz else 'NPY'} file: {str(exc).splitlines()[0][:200]}",
                        file=file) from None
    except (EOFError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"damaged or truncated {'NPZ' if npz else 'NPY'} file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else 'no data'})", file=file) from None


def split_indices(n: int, seed: int, val_fraction: float, test_fraction: float,
                  stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic train/val/test indices: the same (n, seed, fractions, labels) give the same split everywhere.

    With ``stratify`` (class labels) each class is split in the same proportions, so a small test split still holds
    every class.
    """
    for key, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < f < 1:
            raise ValueError(f"{key} must be in (0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    rng = np.random.default_rng([seed, 17])
    groups = [np.arange(n)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    parts: list[list[np.ndarray]] = [[], [], []]
    for g in groups:
        g = rng.permutation(g)
        n_test, n_val = int(round(len(g) * test_fraction)), int(round(len(g) * val_fraction))
        parts[2].append(g[:n_test])
        parts[1].append(g[n_test:n_test + n_val])
        parts[0].append(g[n_test + n_val:])
    out = tuple(np.sort(np.concatenate(p)) for p in parts)
    if any(len(p) == 0 for p in out):
        raise ValueError(f"{n} rows are too few for a train/val/test split with these fractions")
    return out  # type: ignore[return-value]


def standardise(train: list[np.ndarray], *others: list[np.ndarray]) -> tuple[list[list[np.ndarray]], list[dict]]:
    """Per-feature z-scores with mean and std fitted on the train split only (sequences: over samples and steps).

    Features constant on train get std 1 (left centred, not blown up). Returns the transformed splits and, per
    modality, the fitted statistics (to record, and so robustness noise can be set relative to the feature scale).
    """
    stats = []
    for x in train:
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        mean, std = flat.mean(0), flat.std(0)
        std[std < 1e-8] = 1.0
        stats.append({"mean": mean, "std": std})
    out = [[((x - s["mean"]) / s["std"]).astype(np.float32) for x, s in zip(split, stats)]
           for split in (train, *others)]
    return out, stats


def check_features(x: np.ndarray, where: str, file: str | None, *, rows: int | None = None) -> np.ndarray:
    """A numeric, finite 2-D (N, d) or 3-D (N, T, d) array, with ``rows`` rows if given."""
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise UserError(f"{where}: features are not numeric", file=file) from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim not in (2, 3) or x.shape[0] == 0 or x.shape[-1] == 0:
        raise UserError(f"{where}: expected a (rows, features) or (rows, steps, features) array, got shape "
                        f"{tuple(x.shape)}", file=file)
    if rows is not None and x.shape[0] != rows:
        raise UserError(f"{where}: has {x.shape[0]} rows but the labels have {rows}", file=file)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        what = "NaN" if np.isnan(x).any() else "inf"
        raise UserError(f"{where}: contains {what} (first at row {row}); clean the features or impute them first",
                        file=file)
    return x


def check_class_labels(y: np.ndarray, where: str, file: str | None,
                       num_classes: int | None = None) -> tuple[np.ndarray, int, list[int] | None]:
    """Integer class labels. With ``num_classes`` K they must lie in 0..K-1 (a class may be absent). Without it, K is
    the number of distinct labels: labels 0..K-1 are kept, any other set (1..K, {-1, 1}, {3, 7}) is remapped in sorted
    order to 0..K-1 — never padded with classes no row has. Returns (labels as int64, K, the original label of each
    class when remapped, else None)."""
    y = np.asarray(y).reshape(-1)
    if y.size == 0:
        raise UserError(f"{where}: no labels", file=file)
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}: labels are not numbers", file=file) from None
    if not np.isfinite(yf).all() or not np.all(yf == np.round(yf)):
        i = int(np.flatnonzero(~np.isfinite(yf) | (yf != np.round(yf)))[0])
        raise UserError(f"{where}: label {y[i]!r} at row {i} is not an integer class", file=file)
    classes = np.unique(yf)
    if num_classes is None:
        k = len(classes)
        if k < 2:
            raise UserError(f"{where}: need at least 2 classes, found {k}", file=file)
        if np.array_equal(classes, np.arange(k)):
            return yf.astype(np.int64), k, None
        return np.searchsorted(classes, yf).astype(np.int64), k, [int(c) for c in classes]
    k = int(num_classes)
    out = (yf < 0) | (yf >= k)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        hint = " (labels 1..K? leave num_classes out and they are remapped to 0..K-1)" if classes.min() >= 1 else ""
        raise UserError(f"{where}: label {int(yf[i])} at row {i} is out of range 0..{k - 1}{hint}", file=file)
    if k < 2:
        raise UserError(f"{where}: need at least 2 classes, found {k}", file=file)
    return yf.astype(np.int64), k, None


def make_task(name: str, modalities: Sequence[str], splits: dict[str, tuple[list[np.ndarray], np.ndarray]], *,
              num_classes: int, target: str = "classification", standardize: bool = True,
              info: dict | None = None) -> TaskData:
    """Standardise (fitted on train), wrap in a TaskData, record split sizes and the standardisation's source."""
    xs = [splits[k][0] for k in ("train", "val", "test")]
    if standardize:
        (tr, va, te), _ = standardise(*xs)
    else:
        tr, va, te = ([x.astype(np.float32) for x in s] for s in xs)
    kind = "sequences" if tr[0].ndim == 3 else "vectors"
    meta = {"standardized": "per feature, fitted on train" if standardize else "no", **(info or {})}
    if target == "classification":
        meta.setdefault("chance_accuracy", float(np.bincount(splits["test"][1], minlength=num_classes).max()
                                                  / len(splits["test"][1])))
    return TaskData(name=name, train=Split(tr, splits["train"][1]), val=Split(va, splits["val"][1]),
                    test=Split(te, splits["test"][1]), modalities=list(modalities), num_classes=num_classes,
                    info=meta, kind=kind, target=target)


def take(xs: list[np.ndarray], y: np.ndarray, idx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    return [x[idx] for x in xs], y[idx]
