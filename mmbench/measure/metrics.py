"""Scores from predictions: plain numpy in, plain floats out (no model, no torch)."""
from __future__ import annotations

import numpy as np


def _f1s(pred: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 (0 where a class has no true or predicted row: sklearn's zero_division=0) and support.
    Written out, not sklearn.metrics.f1_score: that import costs every worker process a second, for a count."""
    pred, y = np.asarray(pred, np.int64).reshape(-1), np.asarray(y, np.int64).reshape(-1)
    tp = np.bincount(y[pred == y], minlength=k)[:k].astype(np.float64)
    support = np.bincount(y, minlength=k)[:k].astype(np.float64)
    predicted = np.bincount(pred, minlength=k)[:k].astype(np.float64)
    denom = support + predicted  # F1 = 2·tp / (2·tp + fp + fn)
    return np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0), support


def macro_f1(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """Mean over all K classes of per-class F1; a class absent from both prediction and truth scores 0."""
    return float(_f1s(pred, y, num_classes)[0].mean())


def weighted_f1(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """Per-class F1 weighted by each class's share of the true labels (0 with no rows)."""
    f1, support = _f1s(pred, y, num_classes)
    return float((f1 * support).sum() / support.sum()) if support.sum() > 0 else 0.0


def classification(logits: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, float]:
    pred = logits.argmax(1)
    return {"acc": float((pred == y).mean()), "f1": macro_f1(pred, y, num_classes)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (a constant prediction carries no linear information)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt((da ** 2).sum() * (db ** 2).sum())
    return float((da * db).sum() / denom) if denom > 0 else 0.0


def regression(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred, y = np.asarray(pred, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    err = pred - y
    return {"mae": float(np.abs(err).mean()), "mse": float((err ** 2).mean()), "corr": pearson(pred, y)}


def affect(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """CMU-MOSI/MOSEI metrics, as MMSA computes them (``metricsTop.py``) from a sentiment score in [-3, 3]:

    acc2: sign accuracy over the samples whose true label is non-zero (neutral ones left out); f1: weighted F1 of
    that same binary task; acc7: accuracy after clipping both to [-3, 3] and rounding to the nearest integer
    (7 classes); mae; corr (Pearson).
    """
    pred, y = np.asarray(pred, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    out = regression(pred, y)
    nz = y != 0
    truth, guess = y[nz] > 0, pred[nz] > 0
    out["acc2"] = float((truth == guess).mean()) if nz.any() else float("nan")
    out["f1"] = weighted_f1(guess, truth, 2) if nz.any() else float("nan")
    out["acc7"] = float((np.round(np.clip(pred, -3, 3)) == np.round(np.clip(y, -3, 3))).mean())
    return out


def recall_at_k(query: np.ndarray, gallery: np.ndarray, ks=(1, 5, 10), chunk: int = 1024) -> dict[int, float]:
    """Cross-modal retrieval: row i of ``query`` should find row i of ``gallery`` (inner-product similarity; with
    L2-normalised embeddings, cosine). Rank = number of gallery items scored strictly higher than the true match, so
    ties count in the query's favour only as far as exact equality goes."""
    n = len(query)
    ranks = np.empty(n, dtype=np.int64)
    for i in range(0, n, chunk):
        s = query[i:i + chunk] @ gallery.T
        true = s[np.arange(len(s)), np.arange(i, i + len(s))]
        ranks[i:i + chunk] = (s > true[:, None]).sum(1)
    return {k: float((ranks < k).mean()) for k in ks}


def retrieval(embeddings: list[np.ndarray], ks=(1, 5, 10)) -> dict[str, float]:
    """recall{k}_fwd: modality i → j for i < j, recall{k}_bwd: j → i, each averaged over modality pairs; and the same
    per pair (``recall{k}_{i}to{j}``)."""
    out: dict[str, float] = {}
    fwd: dict[int, list[float]] = {k: [] for k in ks}
    bwd: dict[int, list[float]] = {k: [] for k in ks}
    m = len(embeddings)
    for i in range(m):
        for j in range(i + 1, m):
            for (a, b), acc in (((i, j), fwd), ((j, i), bwd)):
                r = recall_at_k(embeddings[a], embeddings[b], ks)
                for k in ks:
                    out[f"recall{k}_{a}to{b}"] = r[k]
                    acc[k].append(r[k])
    for k in ks:
        out[f"recall{k}_fwd"], out[f"recall{k}_bwd"] = float(np.mean(fwd[k])), float(np.mean(bwd[k]))
    return out
