"""Test-time robustness, one modality at a time (what MultiBench measures per modality).

For each modality m: Gaussian noise x_m + level·scale_m·ε at each level (scale_m: the per-feature standard deviation
of the training split, so level 1 is noise as large as the feature's own spread), and the modality removed (replaced
by zeros — after train-fitted standardisation, the training mean). The other modalities stay clean. The noise ε of a
modality is drawn once (seeded) and scaled, so the curve over levels is smooth and the same for every method.

Summary per modality: ``auc`` = trapezoidal area under score-versus-level divided by the level span (the mean score
over the range: 1.0 would be a perfect score at every level), and ``rel`` = auc / clean score (1.0: no loss at all).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

DEFAULT_LEVELS = tuple(round(0.1 * i, 1) for i in range(11))


def feature_scale(train_x: np.ndarray) -> torch.Tensor:
    """Per-feature std over the training split (over samples and steps for sequences)."""
    flat = np.asarray(train_x, np.float64).reshape(-1, train_x.shape[-1])
    return torch.as_tensor(flat.std(0), dtype=torch.float32)


@torch.no_grad()
def curves(score: Callable[[list[torch.Tensor]], float], xs: list[torch.Tensor], scales: Sequence[torch.Tensor],
           levels: Sequence[float] = DEFAULT_LEVELS, missing: bool = True, seed: int = 0) -> dict[str, dict]:
    """{modality index: {"noise": [score at each level], "missing": score with it zeroed}} plus "clean"."""
    clean = score(xs)
    out: dict[str, dict] = {"clean": {"score": clean}}
    for m, (x, scale) in enumerate(zip(xs, scales)):
        g = torch.Generator().manual_seed(seed * 1009 + m)
        eps = torch.randn(x.shape, generator=g).to(x.device)
        scale = scale.to(x.device)
        series = []
        for lv in levels:
            noisy = list(xs)
            noisy[m] = x + float(lv) * scale * eps
            series.append(score(noisy))
        entry = {"levels": [float(v) for v in levels], "noise": series}
        if missing:
            gone = list(xs)
            gone[m] = torch.zeros_like(x)
            entry["missing"] = score(gone)
        out[str(m)] = entry
    return out


def summarise(curve: dict[str, dict], names: Sequence[str]) -> dict[str, float]:
    """Per modality name: area (normalised by the level span), relative robustness, score with the modality missing."""
    clean = curve["clean"]["score"]
    row: dict[str, float] = {}
    for m, name in enumerate(names):
        c = curve[str(m)]
        lv, s = np.asarray(c["levels"]), np.asarray(c["noise"])
        span = lv[-1] - lv[0]
        auc = float(((s[1:] + s[:-1]) / 2 * np.diff(lv)).sum() / span) if span > 0 else float(s.mean())
        row[f"rob_{name}_auc"] = auc
        row[f"rob_{name}_rel"] = auc / clean if clean else float("nan")
        if "missing" in c:
            row[f"rob_{name}_missing"] = c["missing"]
    return row
