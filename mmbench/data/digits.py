"""scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes, no download) as a multi-view task.

Views (``views``):
- ``left_right``: the left 4 columns and the right 4 columns of each image (32 pixels each).
- ``top_bottom``: the top 4 rows and the bottom 4 rows (32 pixels each).
- ``quadrants``: four 4×4 quadrants (16 pixels each): a four-modality task.
- ``pixels_features``: all 64 pixels, and 24 derived features (8 row sums, 8 column sums, 8 bins of the gradient
  orientation histogram weighted by magnitude): two views of the same image at different abstraction levels.
"""
from __future__ import annotations

import numpy as np

from mmbench.data.common import make_task, split_indices, take
from mmbench.data.registry import TaskData, register_dataset

VIEWS = ("left_right", "top_bottom", "quadrants", "pixels_features")


def _views(images: np.ndarray, views: str) -> tuple[list[str], list[np.ndarray]]:
    n = len(images)
    if views == "left_right":
        return ["left", "right"], [images[:, :, :4].reshape(n, -1), images[:, :, 4:].reshape(n, -1)]
    if views == "top_bottom":
        return ["top", "bottom"], [images[:, :4, :].reshape(n, -1), images[:, 4:, :].reshape(n, -1)]
    if views == "quadrants":
        q = [images[:, r:r + 4, c:c + 4].reshape(n, -1) for r in (0, 4) for c in (0, 4)]
        return ["top_left", "top_right", "bottom_left", "bottom_right"], q
    if views == "pixels_features":
        gy, gx = np.gradient(images, axis=(1, 2))
        mag, ang = np.hypot(gx, gy), np.arctan2(gy, gx)
        bins = np.clip(((ang + np.pi) / (2 * np.pi) * 8).astype(int), 0, 7)
        hist = np.stack([(mag * (bins == b)).sum((1, 2)) for b in range(8)], 1)
        derived = np.concatenate([images.sum(2), images.sum(1), hist], 1)
        return ["pixels", "derived"], [images.reshape(n, -1), derived]
    raise ValueError(f"views must be one of {', '.join(VIEWS)}, got '{views}'")


@register_dataset("digits")
def digits(views: str = "left_right", val_fraction: float = 0.15, test_fraction: float = 0.2,
           standardize: bool = True, seed: int = 0) -> TaskData:
    """scikit-learn's handwritten digits as a multi-view task (left_right | top_bottom | quadrants | pixels_features)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, y = bunch.images.astype(np.float64), bunch.target.astype(np.int64)
    names, xs = _views(images, views)
    idx = split_indices(len(y), seed, val_fraction, test_fraction, stratify=y)
    splits = {k: take(xs, y, i) for k, i in zip(("train", "val", "test"), idx)}
    return make_task(f"digits-{views}", names, splits, num_classes=10, standardize=standardize,
                     info={"source": "sklearn.datasets.load_digits", "views": views, "split_seed": seed})
