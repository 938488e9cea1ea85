"""Synthetic multimodal tasks with a controlled cross-modal interaction and a known Bayes-optimal accuracy.

Every modality m is a noisy embedding of a latent: x_m = μ_m(z_m) + σ·ε, ε ~ N(0, I). Because the generator knows the
likelihoods, it computes the exact posterior P(y | x) of any sample, so the Bayes-optimal accuracy E[max_y P(y|x)]
is estimated by Monte Carlo on a large fresh sample (its standard error is saved too), not guessed.

- redundancy: one latent class y, every modality embeds it (z_m = y): any one modality predicts y.
- uniqueness: independent Gaussian latents u_m, x_m = u_m·v_m + σε, y = the K-quantile bin of Σ_m u_m/√M: each
  modality holds its own additive part of the label.
- synergy: independent uniform z_m ∈ {0..K-1}, y = (Σ_m z_m) mod K (parity when K = 2): every modality alone, and
  every additive combination, is at chance; only a cross-modal product recovers y.
"""
from __future__ import annotations

import math

import numpy as np

from mmbench.data.registry import Split, TaskData, register_dataset

INTERACTIONS = ("redundancy", "uniqueness", "synergy")
_BAYES_MC_SAMPLES = 200_000


class SyntheticTask:
    """The generative model: sample (xs, y) and compute exact posteriors P(y | xs)."""

    def __init__(self, interaction: str, dims: list[int], num_classes: int, noise: float, seed: int):
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {', '.join(INTERACTIONS)}, got '{interaction}'")
        if len(dims) < 2:
            raise ValueError(f"need at least 2 modalities, got {len(dims)}")
        if any(d <= 0 for d in dims):
            raise ValueError(f"input dims must be positive, got {dims}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not noise > 0:
            raise ValueError(f"noise must be > 0, got {noise}")
        self.interaction, self.dims, self.k, self.sigma = interaction, list(dims), num_classes, float(noise)
        rng = np.random.default_rng([seed, 0])
        if interaction == "uniqueness":  # one unit direction per modality
            self.dirs = [_unit_rows(rng, 1, d)[0] for d in dims]
            inner = np.sqrt(1.0 + self.sigma ** 2)
            # Class edges: equiprobable bins of N(0,1), the law of Σu_m/√M.
            from statistics import NormalDist
            self.edges = np.array([-np.inf] + [NormalDist().inv_cdf(i / self.k) for i in range(1, self.k)] + [np.inf])
            self._inner = inner
        else:  # K class means per modality, orthonormal where d >= K (pairwise distance √2)
            self.means = [_unit_rows(rng, self.k, d) for d in dims]

    def sample(self, n: int, rng: np.random.Generator) -> Split:
        m, k = len(self.dims), self.k
        if self.interaction == "uniqueness":
            u = rng.standard_normal((n, m))
            y = np.searchsorted(self.edges, u.sum(1) / math.sqrt(m), side="right") - 1
            xs = [u[:, [i]] * self.dirs[i] for i in range(m)]
        else:
            if self.interaction == "redundancy":
                y = rng.integers(0, k, n)
                z = np.repeat(y[:, None], m, 1)
            else:
                z = rng.integers(0, k, (n, m))
                y = z.sum(1) % k
            xs = [self.means[i][z[:, i]] for i in range(m)]
        xs = [(x + self.sigma * rng.standard_normal(x.shape)).astype(np.float32) for x in xs]
        return Split(xs, y.astype(np.int64))

    def posterior(self, xs: list[np.ndarray]) -> np.ndarray:
        """Exact P(y | xs), shape (N, K)."""
        m, s2 = len(self.dims), self.sigma ** 2
        if self.interaction == "uniqueness":
            from scipy.special import ndtr
            t = np.stack([x.astype(np.float64) @ v for x, v in zip(xs, self.dirs)], 1)  # sufficient statistics
            mean = t.sum(1) / (1 + s2) / math.sqrt(m)   # posterior of Σu_m/√M is Gaussian
            sd = math.sqrt(s2 / (1 + s2))
            cdf = ndtr((self.edges[None, :] - mean[:, None]) / sd)
            return np.diff(cdf, axis=1)
        # Per-modality posteriors over z_m from the Gaussian likelihoods.
        post = []
        for x, mu in zip(xs, self.means):
            logits = (x.astype(np.float64) @ mu.T) / s2 - 0.5 * (mu ** 2).sum(1) / s2
            post.append(_softmax(logits))
        if self.interaction == "redundancy":
            return _softmax(sum(np.log(p + 1e-300) for p in post))
        out = post[0]  # synergy: law of Σz_m mod K is the circular convolution of the per-modality laws
        for p in post[1:]:
            out = np.stack([sum(out[:, j] * p[:, (c - j) % self.k] for j in range(self.k)) for c in range(self.k)], 1)
        return out

    def bayes_accuracy(self, seed: int, n: int = _BAYES_MC_SAMPLES) -> tuple[float, float]:
        """(E[max_y P(y|x)], its Monte Carlo standard error) on n fresh samples."""
        rng = np.random.default_rng([seed, 2])
        best = np.concatenate([self.posterior(self.sample(c, rng).xs).max(1)
                               for c in _chunks(n, 50_000)])
        return float(best.mean()), float(best.std() / math.sqrt(n))


@register_dataset("synthetic")
def synthetic(interaction: str = "synergy", modalities: int = 3, dim: int = 16, input_dims: list[int] | None = None,
              num_classes: int = 2, noise: float = 0.4, n_train: int = 3000, n_val: int = 1000, n_test: int = 2000,
              seed: int = 0) -> TaskData:
    """Synthetic task with a controlled interaction (redundancy | uniqueness | synergy) and known Bayes accuracy."""
    dims = list(input_dims) if input_dims is not None else [dim] * modalities
    task = SyntheticTask(interaction, dims, num_classes, noise, seed)
    for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n <= 0:
            raise ValueError(f"{key} must be positive, got {n}")
    rng = np.random.default_rng([seed, 1])
    train, val, test = (task.sample(n, rng) for n in (n_train, n_val, n_test))
    bayes, se = task.bayes_accuracy(seed)
    return TaskData(
        name=f"synthetic-{interaction}", train=train, val=val, test=test,
        modalities=[f"m{i}" for i in range(len(dims))], num_classes=num_classes,
        info={"interaction": interaction, "bayes_accuracy": bayes, "bayes_accuracy_se": se,
              "chance_accuracy": 1.0 / num_classes, "bayes_method": f"Monte Carlo of E[max P(y|x)], n={_BAYES_MC_SAMPLES}"})


def _unit_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k unit vectors in R^d: orthonormal when k <= d, else random unit vectors."""
    g = rng.standard_normal((d, max(k, 1)))
    if k <= d:
        q, _ = np.linalg.qr(g)
        return q[:, :k].T.copy()
    return (g / np.linalg.norm(g, axis=0)).T.copy()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _chunks(n: int, size: int):
    while n > 0:
        yield min(n, size)
        n -= size
