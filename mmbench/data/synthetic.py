"""Synthetic multimodal tasks with a controlled cross-modal interaction and a known Bayes-optimal accuracy.

Every modality m is a noisy embedding of a latent: x_m = μ_m(z_m) + σ·ε, ε ~ N(0, I). Because the generator knows the
likelihoods, it computes the exact posterior P(y | x) of any sample. The ceiling a method's test accuracy is read
against is the Bayes classifier's accuracy on the very test split that is scored (`bayes_accuracy`, with that split's
binomial standard error `bayes_accuracy_se`): the same samples, so the same luck. Its expectation E[max_y P(y|x)],
by Monte Carlo on a large fresh sample, is kept beside it (`bayes_accuracy_mc`, `bayes_accuracy_mc_se`).

- redundancy: one latent class y, every modality embeds it (z_m = y): any one modality predicts y.
- uniqueness: independent Gaussian latents u_m, x_m = u_m·v_m + σε, y = the K-quantile bin of Σ_m u_m/√M: each
  modality holds its own additive part of the label.
- synergy: independent uniform z_m ∈ {0..K-1}, y = (Σ_m z_m) mod K (parity when K = 2): every modality alone, and
  every additive combination, is at chance; only a cross-modal product recovers y.

Sequences (``seq_len`` given): modality m is a sequence of T_m steps (T_m differs per modality: different lengths and
rates, unaligned). Its latent embedding μ_m is spread over the valid steps by a known envelope sampled at the
modality's own rate: x_m[t] = a_t·μ_m + σ·ε_t, a_t ∝ sin(π(t+½)/L) with Σ_t a_t² = 1 (L = the sample's valid
length, T_m unless ``variable_length``; steps t ≥ L are zero padding). Then s_m = Σ_t a_t x_m[t] ~ N(μ_m, σ²I) is a
sufficient statistic (what is orthogonal to the envelope is pure noise), so the exact posterior is the vector task's
posterior of (s_1, …, s_M), and the Bayes-optimal accuracy is exactly the vector task's at the same σ (computed by the
same Monte Carlo). No single step carries the label: a model must integrate over time.
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
        clean, y = self._clean(n, rng)
        xs = [(x + self.sigma * rng.standard_normal(x.shape)).astype(np.float32) for x in clean]
        return Split(xs, y)

    def _clean(self, n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """The noiseless embeddings μ_m(z_m), (n, d_m) each, and the labels."""
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
        return xs, y.astype(np.int64)

    def sample_sequences(self, n: int, rng: np.random.Generator, seq_len: list[int],
                         variable_length: bool) -> Split:
        """Sequences (n, T_m, d_m): the latent spread over time by the envelope, zero padding past each length."""
        clean, y = self._clean(n, rng)
        xs, lengths = [], []
        for mu, t_max in zip(clean, seq_len):
            lens = rng.integers((t_max + 1) // 2, t_max + 1, n) if variable_length else np.full(n, t_max)
            a = envelope(lens, t_max)  # (n, T)
            x = a[:, :, None] * mu[:, None, :] + self.sigma * rng.standard_normal((n, t_max, mu.shape[1]))
            x[a == 0] = 0.0            # padding (a is zero exactly there)
            xs.append(x.astype(np.float32))
            lengths.append(lens.astype(np.int64))
        return Split(xs, y, lengths if variable_length else None)

    def sequence_posterior(self, xs: list[np.ndarray], lengths: list[np.ndarray] | None = None) -> np.ndarray:
        """Exact P(y | sequences): the vector posterior of the sufficient statistics s_m = Σ_t a_t x_m[t]."""
        stats = []
        for i, x in enumerate(xs):
            lens = lengths[i] if lengths is not None else np.full(len(x), x.shape[1])
            stats.append(np.einsum("nt,ntd->nd", envelope(lens, x.shape[1]), x.astype(np.float64)))
        return self.posterior(stats)

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


def _nbytes(modalities=3, dim=16, input_dims=None, n_train=3000, n_val=1000, n_test=2000, seq_len=None,
            **_) -> int:
    """float32 arrays of the three splits (and one Monte Carlo chunk of the Bayes estimate)."""
    dims = list(input_dims) if input_dims is not None else [dim] * modalities
    steps = [1] * len(dims) if seq_len is None else ([seq_len] * len(dims) if isinstance(seq_len, int) else seq_len)
    return 4 * (n_train + n_val + n_test + 50_000) * sum(d * t for d, t in zip(dims, steps))


@register_dataset("synthetic", nbytes=_nbytes)
def synthetic(interaction: str = "synergy", modalities: int = 3, dim: int = 16, input_dims: list[int] | None = None,
              num_classes: int = 2, noise: float = 0.4, n_train: int = 3000, n_val: int = 1000, n_test: int = 2000,
              seed: int = 0, seq_len: int | list[int] | None = None, variable_length: bool = False) -> TaskData:
    """Synthetic task with a controlled interaction (redundancy | uniqueness | synergy) and known Bayes accuracy."""
    dims = list(input_dims) if input_dims is not None else [dim] * modalities
    task = SyntheticTask(interaction, dims, num_classes, noise, seed)
    for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n <= 0:
            raise ValueError(f"{key} must be positive, got {n}")
    lens = _seq_lens(seq_len, len(dims), variable_length)
    rng = np.random.default_rng([seed, 1])
    if lens is None:
        train, val, test = (task.sample(n, rng) for n in (n_train, n_val, n_test))
    else:
        train, val, test = (task.sample_sequences(n, rng, lens, variable_length) for n in (n_train, n_val, n_test))
    # Sequences: s_m is sufficient and s_m ~ N(μ_m, σ²I), so the expected ceiling is the vector task's (module
    # docstring); the test split's own figure uses the sequences' exact posterior.
    mc, mc_se = task.bayes_accuracy(seed)
    post = task.posterior(test.xs) if lens is None else task.sequence_posterior(test.xs, test.lengths)
    bayes = float((post.argmax(1) == test.y).mean())
    info = {"interaction": interaction, "bayes_accuracy": bayes,
            "bayes_accuracy_se": math.sqrt(bayes * (1 - bayes) / n_test), "bayes_accuracy_mc": mc,
            "bayes_accuracy_mc_se": mc_se, "chance_accuracy": 1.0 / num_classes,
            "bayes_method": f"the Bayes classifier (argmax of the exact posterior) on the test split (n={n_test}), "
                            f"binomial standard error; beside it E[max P(y|x)] by Monte Carlo, n={_BAYES_MC_SAMPLES}"}
    if lens is not None:
        info.update(seq_len=lens, variable_length=variable_length)
        info["bayes_method"] += " (of the sufficient statistics s_m = Σ_t a_t x_m[t], exact for the sequences)"
    return TaskData(
        name=f"synthetic-{interaction}", train=train, val=val, test=test,
        modalities=[f"m{i}" for i in range(len(dims))], num_classes=num_classes, info=info,
        kind="vectors" if lens is None else "sequences")


def envelope(lengths: np.ndarray, t_max: int) -> np.ndarray:
    """a[n, t] = sin(π(t+½)/L_n) on the valid steps t < L_n, zero after, scaled so that Σ_t a[n, t]² = 1."""
    lengths = np.asarray(lengths)
    t = np.arange(t_max)[None, :] + 0.5
    a = np.where(t < lengths[:, None], np.sin(np.pi * t / lengths[:, None]), 0.0)
    return a / np.sqrt((a ** 2).sum(1, keepdims=True))


def _seq_lens(seq_len, m: int, variable_length: bool) -> list[int] | None:
    if seq_len is None:
        if variable_length:
            raise ValueError("variable_length needs seq_len")
        return None
    lens = [seq_len] * m if isinstance(seq_len, int) and not isinstance(seq_len, bool) else seq_len
    if not (isinstance(lens, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in lens)):
        raise ValueError(f"seq_len must be an integer or a list of integers, got {seq_len!r}")
    if len(lens) != m:
        raise ValueError(f"seq_len {lens} has {len(lens)} entries but the task has {m} modalities")
    if any(t <= 0 for t in lens):
        raise ValueError(f"seq_len must be positive, got {lens}")
    return list(lens)


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
