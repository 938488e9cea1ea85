"""Synthetic tasks mixing the three interaction types with set weights, as classification or regression.

Each modality m carries up to three blocks (a block is left out when its part's weight is 0), each a noisy
embedding, x_block = μ(z) + σ·ε:
- redundant part: one shared binary latent r; every modality embeds it (two orthonormal means per modality);
- unique part:    an independent Gaussian u_m per modality along a unit direction; U = Σ_m u_m / √M ~ N(0, 1);
- synergistic part: independent binary s_m per modality; p = Σ_m s_m mod 2 (parity: no modality alone tells it).

The score is  f = w_r·(2r−1) + w_u·U + w_s·(2p−1).
Classification: y = 1[f > 0]. Regression: y = f + label_noise·ε.

Because the blocks live in separate coordinates and the latents are independent, the posterior factorises given x:
P(r | x) from the product of per-modality likelihoods, P(p | x) = (1 − Π_m (1 − 2 P(s_m=1 | x_m))) / 2, and
U | x ~ N(μ, v). Hence, exactly for every sample:
- classification: P(y=1 | x) = Σ_{a,b=±1} P(a) P(b) Φ((μ + (w_r a + w_s b)/w_u)/√v)  (an indicator when w_u = 0);
- regression: E[y | x] and Var(y | x) = w_r²·4q_r(1−q_r) + w_u²·v + w_s²·4q_p(1−q_p) + label_noise².
The ceilings a run is read against are the Bayes predictor's scores on the very test split that is scored: the
accuracy of argmax P(y|x) (with its binomial standard error), or the MSE and Pearson correlation of E[y|x]. Beside
them (suffix `_mc`), their expectations E[max P(y|x)] and E[Var(y|x)] as Monte Carlo averages over fresh samples
(standard error saved); the best achievable correlation in expectation is √(1 − MSE*/Var y), that of E[y|x]. The
Bayes-optimal MAE (the conditional median's) is not computed: marked unavailable.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from mmbench.data.registry import Split, TaskData, register_dataset

PARTS = ("redundancy", "uniqueness", "synergy")
_MC = 200_000


def _unit_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    g = rng.standard_normal((d, k))
    if k <= d:
        return np.linalg.qr(g)[0][:, :k].T.copy()
    return (g / np.linalg.norm(g, axis=0)).T.copy()


def _llr(x: np.ndarray, means: np.ndarray, s2: float) -> np.ndarray:
    """log P(x | z=1) − log P(x | z=0) for a binary latent with means[z] and isotropic noise variance s2."""
    return (x.astype(np.float64) @ (means[1] - means[0])) / s2 - 0.5 * ((means[1] ** 2).sum() - (means[0] ** 2).sum()) / s2


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


class MixedTask:
    def __init__(self, weights: dict, modalities: int, part_dim: int, noise: float, target: str,
                 label_noise: float, seed: int):
        unknown = sorted(set(weights) - set(PARTS))
        if unknown:
            raise ValueError(f"weights: unknown part '{unknown[0]}' (parts: {', '.join(PARTS)})")
        self.w = {p: float(weights.get(p, 0.0)) for p in PARTS}
        if any(v < 0 for v in self.w.values()) or not any(v > 0 for v in self.w.values()):
            raise ValueError(f"weights must be ≥ 0 with at least one > 0, got {self.w}")
        if modalities < 2:
            raise ValueError(f"need at least 2 modalities, got {modalities}")
        if part_dim < 2:
            raise ValueError(f"part_dim must be ≥ 2, got {part_dim}")
        if not noise > 0:
            raise ValueError(f"noise must be > 0, got {noise}")
        if target not in ("classification", "regression"):
            raise ValueError(f"target must be classification or regression, got '{target}'")
        if label_noise < 0 or (label_noise > 0 and target == "classification"):
            raise ValueError("label_noise must be ≥ 0, and only applies to target: regression")
        self.m, self.d, self.sigma, self.target, self.label_noise = modalities, part_dim, float(noise), target, label_noise
        self.active = [p for p in PARTS if self.w[p] > 0]
        rng = np.random.default_rng([seed, 30])
        self.red = [_unit_rows(rng, 2, part_dim) for _ in range(modalities)]
        self.dirs = [_unit_rows(rng, 1, part_dim)[0] for _ in range(modalities)]
        self.syn = [_unit_rows(rng, 2, part_dim) for _ in range(modalities)]

    @property
    def dims(self) -> list[int]:
        return [self.d * len(self.active)] * self.m

    def sample(self, n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        m = self.m
        r, u, s = rng.integers(0, 2, n), rng.standard_normal((n, m)), rng.integers(0, 2, (n, m))
        blocks = {"redundancy": [self.red[i][r] for i in range(m)],
                  "uniqueness": [u[:, [i]] * self.dirs[i] for i in range(m)],
                  "synergy": [self.syn[i][s[:, i]] for i in range(m)]}
        xs = [np.concatenate([blocks[p][i] for p in self.active], 1) for i in range(m)]
        xs = [(x + self.sigma * rng.standard_normal(x.shape)).astype(np.float32) for x in xs]
        f = (self.w["redundancy"] * (2 * r - 1) + self.w["uniqueness"] * u.sum(1) / math.sqrt(m)
             + self.w["synergy"] * (2 * (s.sum(1) % 2) - 1))
        if self.target == "classification":
            return xs, (f > 0).astype(np.int64)
        return xs, (f + self.label_noise * rng.standard_normal(n)).astype(np.float32)

    def posterior_parts(self, xs: list[np.ndarray]):
        """(q_r = P(r=1|x), (μ, v) of U|x, q_p = P(p=1|x)); a part with weight 0 gets its prior."""
        n, s2 = len(xs[0]), self.sigma ** 2
        cols = {p: slice(i * self.d, (i + 1) * self.d) for i, p in enumerate(self.active)}
        q_r, q_p, mu, v = np.full(n, 0.5), np.full(n, 0.5), np.zeros(n), 1.0
        if "redundancy" in cols:
            q_r = _sigmoid(sum(_llr(x[:, cols["redundancy"]], mu_, s2) for x, mu_ in zip(xs, self.red)))
        if "uniqueness" in cols:
            t = np.stack([x[:, cols["uniqueness"]].astype(np.float64) @ d for x, d in zip(xs, self.dirs)], 1)
            mu, v = t.sum(1) / (1 + s2) / math.sqrt(self.m), s2 / (1 + s2)
        if "synergy" in cols:
            prod = np.prod([1 - 2 * _sigmoid(_llr(x[:, cols["synergy"]], mu_, s2)) for x, mu_ in zip(xs, self.syn)], axis=0)
            q_p = (1 - prod) / 2
        return q_r, (mu, v), q_p

    def posterior(self, xs: list[np.ndarray]) -> np.ndarray:
        """Classification: exact P(y | x), shape (N, 2)."""
        q_r, (mu, v), q_p = self.posterior_parts(xs)
        wr, wu, ws = self.w["redundancy"], self.w["uniqueness"], self.w["synergy"]
        p1 = np.zeros(len(mu))
        for a, pa in ((1, q_r), (-1, 1 - q_r)):
            for b, pb in ((1, q_p), (-1, 1 - q_p)):
                c = wr * a + ws * b
                hit = ndtr((mu + c / wu) / math.sqrt(v)) if wu > 0 else float(c > 0)
                p1 = p1 + pa * pb * hit
        return np.stack([1 - p1, p1], 1)

    def conditional(self, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Regression: exact (E[y | x], Var(y | x))."""
        q_r, (mu, v), q_p = self.posterior_parts(xs)
        wr, wu, ws = self.w["redundancy"], self.w["uniqueness"], self.w["synergy"]
        mean = wr * (2 * q_r - 1) + wu * mu + ws * (2 * q_p - 1)
        var = wr ** 2 * 4 * q_r * (1 - q_r) + wu ** 2 * v + ws ** 2 * 4 * q_p * (1 - q_p) + self.label_noise ** 2
        return mean, var

    def ceiling(self, seed: int, n: int = _MC) -> dict:
        rng = np.random.default_rng([seed, 32])
        xs, y = self.sample(n, rng)
        if self.target == "classification":
            best = self.posterior(xs).max(1)
            return {"bayes_accuracy": float(best.mean()), "bayes_accuracy_se": float(best.std() / math.sqrt(n)),
                    "chance_accuracy": float(max(y.mean(), 1 - y.mean())),
                    "bayes_method": f"Monte Carlo of E[max P(y|x)] (exact posterior), n={n}"}
        _, var = self.conditional(xs)
        var_y = sum(w ** 2 for w in self.w.values()) + self.label_noise ** 2
        mse = float(var.mean())
        return {"bayes_mse": mse, "bayes_mse_se": float(var.std() / math.sqrt(n)),
                "bayes_corr": math.sqrt(max(0.0, 1 - mse / var_y)), "chance_mse": var_y, "bayes_mae": None,
                "bayes_method": f"Monte Carlo of E[Var(y|x)] (exact posterior), n={n}; Bayes MAE not computed"}

    def on_split(self, xs: list[np.ndarray], y: np.ndarray) -> dict:
        """The Bayes predictor's scores on one split (the test split that is scored)."""
        n = len(y)
        if self.target == "classification":
            acc = float((self.posterior(xs).argmax(1) == y).mean())
            return {"bayes_accuracy": acc, "bayes_accuracy_se": math.sqrt(acc * (1 - acc) / n)}
        mean, _ = self.conditional(xs)
        err = (np.asarray(y, dtype=np.float64) - mean) ** 2
        return {"bayes_mse": float(err.mean()), "bayes_mse_se": float(err.std() / math.sqrt(n)),
                "bayes_corr": float(np.corrcoef(mean, y)[0, 1])}


_MC_KEYS = {"bayes_accuracy": "bayes_accuracy_mc", "bayes_accuracy_se": "bayes_accuracy_mc_se",
            "bayes_mse": "bayes_mse_mc", "bayes_mse_se": "bayes_mse_mc_se", "bayes_corr": "bayes_corr_mc"}


def _nbytes(modalities=2, part_dim=4, n_train=3000, n_val=1000, n_test=2000, **_) -> int:
    """float32 arrays of the three splits and the Monte Carlo sample of the ceiling (every part active)."""
    return 4 * (n_train + n_val + n_test + _MC) * modalities * part_dim * len(PARTS)


@register_dataset("synthetic_mix", nbytes=_nbytes)
def synthetic_mix(weights: dict | None = None, modalities: int = 2, part_dim: int = 4, noise: float = 0.4,
                  target: str = "classification", label_noise: float = 0.0, n_train: int = 3000, n_val: int = 1000,
                  n_test: int = 2000, seed: int = 0) -> TaskData:
    """Redundant + unique + synergistic parts with set weights in one task; classification or regression."""
    w = dict(weights) if weights is not None else {p: 1.0 for p in PARTS}
    task = MixedTask(w, modalities, part_dim, noise, target, label_noise, seed)
    for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n <= 0:
            raise ValueError(f"{key} must be positive, got {n}")
    rng = np.random.default_rng([seed, 31])
    train, val, test = (Split(*task.sample(n, rng)) for n in (n_train, n_val, n_test))
    return TaskData(name="synthetic_mix", train=train, val=val, test=test,
                    modalities=[f"m{i}" for i in range(modalities)],
                    num_classes=2 if target == "classification" else 1, target=target,
                    info={"weights": task.w, **{_MC_KEYS.get(k, k): v for k, v in task.ceiling(seed).items()},
                          **task.on_split(test.xs, test.y)})
