"""Sequence fusion: MulT, its low-rank variant, METER's merged and co-attention, and a mean-pool baseline.

Every method here takes sequences xs[m] of shape (B, T_m, d_m) — the T_m may all differ (unaligned modalities) — and
optional boolean masks[m] of shape (B, T_m), True on valid steps. A padded step never reaches the output: it is
masked out as an attention key, its own query row is never read (the classification reads a valid step or a CLS
token), and pooling skips it. Each class states its parameter count (``expected_params``) and FLOPs at full length
(``expected_flops(batch, lengths)``), closed forms built from the blocks in ``attention_blocks``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmbench.methods.attention_blocks import (CoAttnLayer, PostLNLayer, PreLNEncoder, as_key_mask, attention_flops,
                                              cat_masks, ffn_flops, masked_last, sinusoid)
from mmbench.methods.base import Fusion
from mmbench.methods.registry import register_method
from mmbench.methods.tensor import LowRankFusion


class SequenceFusion(Fusion):
    """Base of the sequence methods: ``forward(xs, masks=None)``; FLOPs depend on the sequence lengths."""

    def _check(self, xs: Sequence[torch.Tensor], masks) -> list:
        if len(xs) != len(self.dims) or any(x.dim() != 3 for x in xs):
            raise ValueError(f"{type(self).__name__} takes {len(self.dims)} sequences (B, T_m, d_m), got shapes "
                             f"{[tuple(x.shape) for x in xs]}")
        return [None] * len(xs) if masks is None else list(masks)

    def expected_flops(self, batch: int, lengths: Sequence[int] | None = None) -> int | None:  # noqa: D401
        return None


def _positive(**values: int | None) -> None:
    for name, v in values.items():
        if v is not None and v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")


class _ResidualHead(nn.Module):
    """MulT's output: h + proj2(dropout(relu(proj1 h))), then Linear → o. 2(C² + C) + (C + 1)·o parameters."""

    def __init__(self, width: int, out_dim: int, dropout: float):
        super().__init__()
        self.proj1, self.proj2, self.out = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h):
        return self.out(h + self.proj2(self.drop(torch.relu(self.proj1(h)))))

    @staticmethod
    def params(c: int, o: int) -> int:
        return 2 * (c * c + c) + (c + 1) * o

    @staticmethod
    def flops(batch: int, c: int, o: int) -> int:
        return 2 * batch * (2 * c * c + c * o)


@register_method("mult", family="transformer", inputs="sequences")
class MulT(SequenceFusion):
    """Multimodal Transformer (Tsai 2019): crossmodal attention for every ordered pair of unaligned sequences.

    Each modality is projected to width d (Conv1d k=1 without bias, i.e. a bias-free Linear per step: Σ d_m·d over
    the modalities whose width is not already d, which the reference code passes through unprojected). For
    every ordered pair α→β a crossmodal encoder of ``layers`` pre-LN layers lets β's sequence (queries) attend to α's
    (keys/values), inputs scaled by √d plus sinusoidal positions, final LayerNorm: M(M−1)·[D(12d²+13d) + 2d]. Per
    target β the M−1 crossmodal outputs are concatenated (width e = (M−1)d) and go through a self-attention stack of
    ``self_layers`` layers (default max(layers, 3), as the reference code): M·[S(12e²+13e) + 2e]. The last valid step
    of every target is taken, all are concatenated (C = M·e) and pass the residual MLP and Linear → o:
    2(C² + C) + (C + 1)·o. Defaults d=30, D=5, 5 heads are the reference code's.

    Positions start at 1, as the reference's fairseq table (position 0 is its padding index). ``attn_mask`` (default
    True, the reference code's: its ``--attn_mask`` flag is store_false) applies the code's future mask in every
    crossmodal and self-attention layer: query step i attends key step j only when j − i ≤ |L_k − L_q| (see
    attention_blocks.future_mask; L = valid lengths, so padding is masked as the unpadded sequences would be). The
    paper describes no such mask: ``attn_mask: false`` is the paper's model. The mask changes no matmul: parameters
    and FLOPs are the same either way.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, width: int = 30, layers: int = 5, heads: int = 5,
                 self_layers: int | None = None, dropout: float = 0.1, attn_mask: bool = True):
        super().__init__(dims, out_dim)
        _positive(width=width, layers=layers, heads=heads, self_layers=self_layers)
        if not isinstance(attn_mask, bool):
            raise ValueError(f"attn_mask must be true or false, got {attn_mask!r}")
        m = len(self.dims)
        self.width, self.layers, self.heads, self.attn_mask = width, layers, heads, attn_mask
        self.self_layers = self_layers if self_layers is not None else max(layers, 3)
        self.proj = nn.ModuleList(nn.Identity() if d == width else nn.Linear(d, width, bias=False) for d in self.dims)
        self.pairs = [(a, b) for b in range(m) for a in range(m) if a != b]  # (source α, target β)
        self.cross = nn.ModuleList(PreLNEncoder(width, layers, heads, dropout, attn_mask) for _ in self.pairs)
        e = (m - 1) * width
        self.self_attn = nn.ModuleList(PreLNEncoder(e, self.self_layers, heads, dropout, attn_mask) for _ in range(m))
        self.head = _ResidualHead(m * e, out_dim, dropout)

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        masks = self._check(xs, masks)
        ps = [p(x) for p, x in zip(self.proj, xs)]
        keys = [as_key_mask(mk) for mk in masks]  # a modality's keys serve M - 1 crossmodal encoders
        lasts = []
        for b in range(len(xs)):
            outs = [enc(ps[b], keys[b], ps[a], keys[a]) for enc, (a, t) in zip(self.cross, self.pairs) if t == b]
            h = self.self_attn[b](torch.cat(outs, -1), keys[b])
            lasts.append(masked_last(h, masks[b]))
        return self.head(torch.cat(lasts, -1))

    def expected_params(self) -> int:
        m, d, o = len(self.dims), self.width, self.out_dim
        e = (m - 1) * d
        return (sum(dm for dm in self.dims if dm != d) * d + len(self.pairs) * PreLNEncoder.params(d, self.layers)
                + m * PreLNEncoder.params(e, self.self_layers) + _ResidualHead.params(m * e, o))

    def expected_flops(self, batch: int, lengths: Sequence[int] | None = None) -> int:
        m, d, o, t = len(self.dims), self.width, self.out_dim, list(lengths)
        e = (m - 1) * d
        return (2 * batch * d * sum(tm * dm for tm, dm in zip(t, self.dims) if dm != d)
                + sum(PreLNEncoder.flops(batch, t[b], t[a], d, self.layers) for a, b in self.pairs)
                + sum(PreLNEncoder.flops(batch, t[b], None, e, self.self_layers) for b in range(m))
                + _ResidualHead.flops(batch, m * e, o))


def resample(x: torch.Tensor, mask: torch.Tensor | None, steps: int) -> torch.Tensor:
    """Nearest-step resampling of each sequence's valid part onto ``steps`` points of normalised time: step i reads
    position ⌊(i + ½)/steps · L⌋ of a sequence of valid length L (so padding is never read)."""
    b, t, d = x.shape
    lengths = (mask.sum(1) if mask is not None else torch.full((b,), t, device=x.device)).clamp(min=1)
    grid = (torch.arange(steps, device=x.device, dtype=torch.float32) + 0.5) / steps
    idx = torch.minimum((grid[None, :] * lengths[:, None]).long(), lengths[:, None] - 1)
    return x.gather(1, idx[:, :, None].expand(b, steps, d))


@register_method("lmf_mult", family="transformer", inputs="sequences", rank_param="rank")
class LMFMulT(SequenceFusion):
    """Low-rank fusion based transformer (Sahay 2020): each modality attends to one LMF-fused sequence (M blocks).

    The paper has no public code; this wiring is ours. (1) Fused sequence: the modality sequences are unaligned, so
    each one's valid part is resampled (nearest step) onto a common grid of ``fused_len`` points of normalised time
    (default: the longest T_m); at every grid point an LMF of rank ``rank`` fuses the M inputs into width d:
    r·d·Σ(d_m+1) + r + d. (2) Each modality is projected to width d (bias-free per-step Linear, Σ d_m·d, as MulT) and
    its sequence attends to the fused sequence with a crossmodal pre-LN encoder of ``layers`` layers, both scaled by
    √d plus sinusoidal positions: M·[D(12d²+13d) + 2d] — M crossmodal blocks instead of MulT's M(M−1). (3) A
    self-attention stack per modality (width d, ``self_layers`` layers, default max(layers, 3)): M·[S(12d²+13d) + 2d].
    (4) Last valid step of each, concatenated (C = V·M·d), MulT's residual MLP and Linear → o: 2(C² + C) + (C + 1)·o.
    ``variant=2`` is the paper's second model: the fused sequence also attends to each modality, through M more
    crossmodal encoders (queries from the fused grid, keys/values from modality m, its padding masked) each followed
    by its own self-attention stack, and the last grid step of each joins the head input (V = 2): another
    M·[D(12d²+13d) + 2d] + M·[S(12d²+13d) + 2d], 2M crossmodal blocks in all.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, width: int = 30, layers: int = 5, heads: int = 5,
                 rank: int = 4, self_layers: int | None = None, fused_len: int | None = None, variant: int = 1,
                 dropout: float = 0.1):
        super().__init__(dims, out_dim)
        _positive(width=width, layers=layers, heads=heads, rank=rank, self_layers=self_layers, fused_len=fused_len)
        if variant not in (1, 2):
            raise ValueError(f"variant must be 1 (modalities attend to the fused sequence) or 2 (and the fused "
                             f"sequence attends to each modality), got {variant}")
        m = len(self.dims)
        self.width, self.layers, self.heads, self.rank, self.fused_len = width, layers, heads, rank, fused_len
        self.variant = variant
        self.self_layers = self_layers if self_layers is not None else max(layers, 3)
        self.proj = nn.ModuleList(nn.Linear(d, width, bias=False) for d in self.dims)
        self.lmf = LowRankFusion(self.dims, width, rank)

        def encoders(n_layers):
            return nn.ModuleList(PreLNEncoder(width, n_layers, heads, dropout) for _ in range(m))

        self.cross, self.self_attn = encoders(layers), encoders(self.self_layers)
        if variant == 2:  # the fused sequence's side: queries from the fused grid
            self.fused_cross, self.fused_self = encoders(layers), encoders(self.self_layers)
        self.head = _ResidualHead(variant * m * width, out_dim, dropout)

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        masks = self._check(xs, masks)
        b, steps = xs[0].shape[0], self.fused_len or max(x.shape[1] for x in xs)
        grid = [resample(x, mk, steps).reshape(b * steps, -1) for x, mk in zip(xs, masks)]
        fused = self.lmf(grid).view(b, steps, self.width)
        lasts, fused_lasts = [], []
        for i, (p, x, mk) in enumerate(zip(self.proj, xs, masks)):
            px = p(x)
            h = self.cross[i](px, mk, fused, None)
            lasts.append(masked_last(self.self_attn[i](h, mk), mk))
            if self.variant == 2:  # every grid step is valid (resampled from valid steps only): no query mask
                f = self.fused_cross[i](fused, None, px, mk)
                fused_lasts.append(self.fused_self[i](f)[:, -1])
        return self.head(torch.cat(lasts + fused_lasts, -1))

    def expected_params(self) -> int:
        m, d, o, r, v = len(self.dims), self.width, self.out_dim, self.rank, self.variant
        return (sum(self.dims) * d + r * d * sum(dm + 1 for dm in self.dims) + r + d
                + v * m * (PreLNEncoder.params(d, self.layers) + PreLNEncoder.params(d, self.self_layers))
                + _ResidualHead.params(v * m * d, o))

    def expected_flops(self, batch: int, lengths: Sequence[int] | None = None) -> int:
        m, d, o, r, t = len(self.dims), self.width, self.out_dim, self.rank, list(lengths)
        tf = self.fused_len or max(t)
        fused_side = 0 if self.variant == 1 else sum(
            PreLNEncoder.flops(batch, tf, tb, d, self.layers) + PreLNEncoder.flops(batch, tf, None, d, self.self_layers)
            for tb in t)
        return (2 * batch * d * sum(tm * dm for tm, dm in zip(t, self.dims))
                + 2 * batch * tf * r * d * (sum(self.dims) + 1)
                + sum(PreLNEncoder.flops(batch, tb, tf, d, self.layers)
                      + PreLNEncoder.flops(batch, tb, None, d, self.self_layers) for tb in t)
                + fused_side + _ResidualHead.flops(batch, self.variant * m * d, o))


class _MeterBase(SequenceFusion):
    """METER's token embedding and pooling around the fusion layers.

    Each modality: Linear(d_m → H) per step plus sinusoidal positions (our per-step encoders carry no position, which
    METER's unimodal encoders would), a learned CLS token in front, a learned modality-type embedding added to every
    token: Σ(d_m+1)·H + 2·M·H. Output: per modality a pooler tanh(Linear(H → H)) on its CLS token, concatenated,
    Linear(M·H → o): M(H² + H) + (M·H + 1)·o (METER's VQA head is a 2-layer MLP; a Linear keeps the head minimal).
    METER's own setting is H=768, 12 heads, 6 fusion layers; the defaults here are sized for CPU benchmarks.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, width: int, layers: int, heads: int):
        super().__init__(dims, out_dim)
        _positive(width=width, layers=layers, heads=heads)
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads ({heads})")
        m = len(self.dims)
        self.width, self.n_layers, self.heads = width, layers, heads
        self.proj = nn.ModuleList(nn.Linear(d, width) for d in self.dims)
        self.cls = nn.Parameter(torch.empty(m, width))
        self.type_embedding = nn.Parameter(torch.empty(m, width))
        self.pool = nn.ModuleList(nn.Linear(width, width) for _ in range(m))
        self.out = nn.Linear(m * width, out_dim)
        nn.init.normal_(self.cls, std=0.02)  # BERT's initialiser
        nn.init.normal_(self.type_embedding, std=0.02)

    def tokens(self, xs, masks) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        toks, tmasks = [], []
        for i, (p, x, mk) in enumerate(zip(self.proj, xs, masks)):
            b, t, _ = x.shape
            h = p(x) + sinusoid(t, self.width, x.device, x.dtype)
            h = torch.cat([self.cls[i].to(h.dtype).expand(b, 1, -1), h], 1) + self.type_embedding[i].to(h.dtype)
            toks.append(h)
            tmasks.append(None if mk is None else torch.cat([mk.new_ones(b, 1), mk], 1))
        return toks, tmasks

    def classify(self, cls_states: list[torch.Tensor]) -> torch.Tensor:
        return self.out(torch.cat([torch.tanh(p(c)) for p, c in zip(self.pool, cls_states)], -1))

    def _embed_params(self) -> int:
        m, h, o = len(self.dims), self.width, self.out_dim
        return sum(d + 1 for d in self.dims) * h + 2 * m * h + m * (h * h + h) + (m * h + 1) * o

    def _embed_flops(self, batch: int, t: list[int]) -> int:
        m, h, o = len(self.dims), self.width, self.out_dim
        return 2 * batch * h * sum(tm * dm for tm, dm in zip(t, self.dims)) + 2 * batch * m * h * (h + o)


@register_method("merged_attn", family="transformer", inputs="sequences")
class MergedAttention(_MeterBase):
    """METER merged attention (single stream): all modalities' tokens concatenated through shared BERT layers.

    The M token sequences (each with its CLS token and modality-type embedding, see _MeterBase) are concatenated along
    time, N = Σ(T_m + 1) tokens, and pass ``layers`` post-LN BERT layers (self-attention + GELU FFN of width 4H)
    shared by all modalities: L·(12H² + 13H). Padded tokens are masked as keys. Each modality's CLS state is pooled.
    Total: Σ(d_m+1)·H + 2MH + L(12H² + 13H) + M(H² + H) + (MH + 1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, width: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__(dims, out_dim, width, layers, heads)
        self.layers = nn.ModuleList(PostLNLayer(width, heads, dropout) for _ in range(layers))

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        toks, tmasks = self.tokens(xs, self._check(xs, masks))
        x, mask = torch.cat(toks, 1), as_key_mask(cat_masks(tmasks, toks))
        for layer in self.layers:
            x = layer(x, mask)
        starts = [0]
        for t in toks[:-1]:
            starts.append(starts[-1] + t.shape[1])
        return self.classify([x[:, s] for s in starts])

    def expected_params(self) -> int:
        h = self.width
        return self._embed_params() + self.n_layers * (12 * h * h + 13 * h)

    def expected_flops(self, batch: int, lengths: Sequence[int] | None = None) -> int:
        h, t = self.width, list(lengths)
        n = sum(tm + 1 for tm in t)
        layer = attention_flops(batch, n, n, h) + ffn_flops(batch, n, h, 4 * h)
        return self._embed_flops(batch, t) + self.n_layers * layer


@register_method("co_attn", family="transformer", inputs="sequences")
class CoAttention(_MeterBase):
    """METER co-attention: one stream per modality, each cross-attending to the others' previous layer.

    Each modality's tokens (CLS + type embedding, see _MeterBase) form a stream of ``layers`` post-LN layers with
    separate weights per stream: self-attention, cross-attention (queries from this stream, keys/values from the other
    stream's output of the previous layer), FFN — L·(16H² + 19H) per stream. METER has two streams; with M > 2 a
    stream's keys/values are the concatenation of all other streams' previous-layer tokens (same parameters per
    stream). Total: Σ(d_m+1)·H + 2MH + M·L(16H² + 19H) + M(H² + H) + (MH + 1)·o.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, width: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__(dims, out_dim, width, layers, heads)
        self.streams = nn.ModuleList(nn.ModuleList(CoAttnLayer(width, heads, dropout) for _ in range(layers))
                                     for _ in self.dims)

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        hs, ms = self.tokens(xs, self._check(xs, masks))
        others = [[j for j in range(len(hs)) if j != i] for i in range(len(hs))]
        # The key masks are the same in every layer: derived once.
        own = [as_key_mask(mk) for mk in ms]
        other_masks = [as_key_mask(cat_masks([ms[j] for j in oth], [hs[j] for j in oth])) for oth in others]
        for layer in range(self.n_layers):
            prev = hs  # every stream reads the others' previous layer, not this layer's update
            hs = [stream[layer](prev[i], own[i], torch.cat([prev[j] for j in others[i]], 1), other_masks[i])
                  for i, stream in enumerate(self.streams)]
        return self.classify([h[:, 0] for h in hs])

    def expected_params(self) -> int:
        h = self.width
        return self._embed_params() + len(self.dims) * self.n_layers * (16 * h * h + 19 * h)

    def expected_flops(self, batch: int, lengths: Sequence[int] | None = None) -> int:
        h, t = self.width, list(lengths)
        n = [tm + 1 for tm in t]
        per_layer = sum(attention_flops(batch, nm, nm, h) + attention_flops(batch, nm, sum(n) - nm, h)
                        + ffn_flops(batch, nm, h, 4 * h) for nm in n)
        return self._embed_flops(batch, t) + self.n_layers * per_layer


@register_method("pool_early", family="joint", inputs="sequences")
class PooledEarlyFusion(SequenceFusion):
    """Baseline: mean of each sequence's valid steps, concatenated, Linear → o: (Σd_m + 1)·o; no cross-time model.

    Being additive across modalities it cannot represent a cross-modal product (chance on synergy tasks): the
    control that shows what the attention methods add."""

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__(dims, out_dim)
        self.linear = nn.Linear(sum(self.dims), out_dim)

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        pooled = []
        for x, mk in zip(xs, self._check(xs, masks)):
            if mk is None:
                pooled.append(x.mean(1))
            else:  # masked_fill, not a product: padding holding inf or nan cannot leak
                pooled.append(x.masked_fill(~mk[:, :, None], 0).sum(1) / mk.sum(1, keepdim=True).clamp(min=1))
        return self.linear(torch.cat(pooled, -1))

    def expected_params(self) -> int:
        return (sum(self.dims) + 1) * self.out_dim

    def expected_flops(self, batch: int, lengths: Sequence[int] | None = None) -> int:
        return 2 * batch * sum(self.dims) * self.out_dim
