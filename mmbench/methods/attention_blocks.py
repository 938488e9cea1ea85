"""Transformer building blocks for the sequence methods, every matmul visible to the FLOP counter.

Attention is q/k/v/o Linears around one of two kernels for softmax(QKᵀ/√d_h)V, chosen by shape only (see `attend`),
never by anything that changes the numbers: torch's fused scaled_dot_product_attention, or two batched GEMMs (baddbmm,
bmm). Not nn.MultiheadAttention or
nn.TransformerEncoderLayer: their eval fast paths hide every matmul from torch.utils.flop_counter. The CPU attention
kernel has no formula in torch's counter; mmbench.measure.counts registers torch's own SDPA formula for it, and the
tests hold the counts of both kernels to the closed forms below.

FLOPs (flop_counter's convention, 2 × multiply-adds; softmax, LayerNorm, masking and additions are not counted), batch
B, width e, Tq queries, Tk keys:
  attention(Tq, Tk) = B·(4·Tq·e² + 4·Tk·e² + 4·Tq·Tk·e)   (q and o projections, k and v projections, QKᵀ and AV)
  feed-forward(T)   = B·2·T·e·h·2                          (e → h → e; h = 4e)
Parameters: attention 4e² + 4e, feed-forward 2eh + h + e (8e² + 5e at h = 4e), LayerNorm 2e.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def masked_last(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The last valid step of each sequence: (B, T, e) → (B, e)."""
    if mask is None:
        return x[:, -1]
    last = mask.long().sum(1).clamp(min=1) - 1
    return x[torch.arange(x.shape[0], device=x.device), last]


def sinusoid(steps: int, width: int, device, dtype, start: int = 0) -> torch.Tensor:
    """(steps, width) sinusoidal positions start, start+1, …: sin on the first half of the features, cos on the
    second (as in MulT's and fairseq's tables); an odd width gets a zero last column. MulT's table reserves position 0
    for padding (fairseq's padding_idx), so its first step is position 1: its encoders pass ``start=1``."""
    half = width // 2
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -(math.log(10000.0) / max(half - 1, 1)))
    angle = torch.arange(start, start + steps, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    pe = torch.cat([torch.sin(angle), torch.cos(angle)], 1)
    if width % 2:
        pe = torch.cat([pe, pe.new_zeros(steps, 1)], 1)
    return pe.to(dtype)


# Which kernel. torch's fused CPU kernel walks the queries in blocks, a few small GEMMs per block and head; for short
# sequences two batched GEMMs over all heads at once are faster (MulT at batch 32, 2 threads: 57 vs 68 ms), for long
# ones the fused kernel, which never holds the (B·h, Tq, Tk) scores, wins (METER merged attention, 100 steps: 13 vs
# 23 ms). Measured in the models, where the allocator's state differs from a lone kernel's, by
# benchmarks/attention_kernels.py. The score cap bounds the memory the batched path holds (scores and weights are
# kept for the backward). Below the score floor the whole call is so small that the batched path's extra ops (bias,
# softmax, two GEMMs, views) cost more than the fused kernel's one: at sequence_fusion's sizes (lengths 16 and 6,
# width 16, 4 heads, one thread) the fused kernel is 7-11% faster for MulT and LMF-MulT at batch 1 and 64 and for
# every attention method at batch 1, while METER's merged attention at batch 64 (64·4·24² = 147k scores a call) is
# 18% faster batched (benchmarks/methods_vs_naive.py --orders-only). On GPUs the fused kernels always win.
BATCHED_MAX_STEPS = 64 * 64   # Tq·Tk per head
BATCHED_MAX_SCORES = 1 << 22  # B·h·Tq·Tk elements (16 MiB in float32)
BATCHED_MIN_SCORES = 1 << 17  # B·h·Tq·Tk elements


class KeyMask:
    """Which keys each query may attend, True = attend: a key padding mask (B, Tk), the same for every query, or a
    per-query mask (B or 1, Tq, Tk) (a padding mask combined with a future mask, see `future_mask`). The additive bias
    the batched kernel needs is derived on first use and then shared by every attention call over the same keys (an
    encoder's layers), not rebuilt per call: at batch 1 rebuilding it cost more than the attention itself saves."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask
        self._bias: dict = {}

    @functools.cached_property
    def rows(self) -> torch.Tensor:
        """The mask as (B or 1, Tq or 1, Tk)."""
        return self.mask[:, None, :] if self.mask.dim() == 2 else self.mask

    @functools.cached_property
    def empty(self) -> torch.Tensor | None:
        """(B or 1, Tq or 1) True for a query row with no valid key (a sample missing a whole modality, or a future
        mask over padding), or None when there is none (a host sync: CPU path only)."""
        empty = ~self.rows.any(-1)
        return empty if bool(empty.any()) else None

    def per_head(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        return t if t.shape[0] == 1 else t.repeat_interleave(heads, 0)

    def bias(self, heads: int, dtype: torch.dtype) -> torch.Tensor:
        """(B·heads or 1, Tq or 1, Tk): 0 where allowed, -inf elsewhere. A row with no valid key keeps 0 (finite
        weights, zeroed after the softmax, so no NaN reaches the backward)."""
        if (heads, dtype) not in self._bias:
            keep = self.rows if self.empty is None else self.rows | self.empty[..., None]
            bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, float("-inf"))
            self._bias[heads, dtype] = self.per_head(bias, heads)
        return self._bias[heads, dtype]


def as_key_mask(mask: torch.Tensor | KeyMask | None) -> KeyMask | None:
    return mask if mask is None or isinstance(mask, KeyMask) else KeyMask(mask)


def _raw(mask: torch.Tensor | KeyMask | None) -> torch.Tensor | None:
    return mask.mask if isinstance(mask, KeyMask) else mask


def future_mask(tq: int, tk: int, q_mask=None, k_mask=None, device=None) -> torch.Tensor:
    """MulT's future (causal) mask combined with the key padding: query i may attend key j when j − i ≤ |L_k − L_q|
    and key j is valid. L_q, L_k are the valid lengths (padding masks' sums; full length without a mask), so a padded
    sample is masked as its unpadded sequences would be; without padding this is the reference code's
    triu(−inf, 1 + |T_k − T_q|). Returns (B, Tq, Tk), or (1, Tq, Tk) when neither side has a padding mask."""
    q_mask, k_mask = _raw(q_mask), _raw(k_mask)
    lq = q_mask.sum(1) if q_mask is not None else torch.tensor([tq], device=device)
    lk = k_mask.sum(1) if k_mask is not None else torch.tensor([tk], device=device)
    device = lq.device
    ahead = torch.arange(tk, device=device)[None, :] - torch.arange(tq, device=device)[:, None]  # j − i
    allowed = ahead[None] <= (lk - lq).abs()[:, None, None]
    return allowed if k_mask is None else allowed & k_mask[:, None, :]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | KeyMask | None = None,
           dropout: float = 0.0) -> torch.Tensor:
    """softmax(Q Kᵀ/√d_h) V for heads (B, h, T, d_h) → (B, h, Tq, d_h). Keys where ``key_mask`` ((B, Tk), or per query
    (B or 1, Tq, Tk)) is False get zero weight; a query with no valid key gets a zero output (as torch's SDPA gives)."""
    b, h, tq, d = q.shape
    tk = k.shape[2]
    key_mask = as_key_mask(key_mask)
    if (q.device.type != "cpu" or tq * tk >= BATCHED_MAX_STEPS
            or not BATCHED_MIN_SCORES <= b * h * tq * tk <= BATCHED_MAX_SCORES):
        mask = None if key_mask is None else key_mask.rows[:, None]  # True = attend (SDPA's convention)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    q3, k3, v3 = (t.reshape(b * h, -1, d) for t in (q, k, v))
    bias = q3.new_zeros(1, 1, 1) if key_mask is None else key_mask.bias(h, q3.dtype)
    w = torch.softmax(torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=d ** -0.5), -1)
    if key_mask is not None and key_mask.empty is not None:
        w = w.masked_fill(key_mask.per_head(key_mask.empty, h)[..., None], 0.0)
    if dropout:
        w = F.dropout(w, dropout)
    return torch.bmm(w, v3).view(b, h, tq, d)


class Attention(nn.Module):
    """Multi-head attention: softmax(Q Kᵀ/√d_h) V per head, then the output projection. Keys where ``key_mask`` is
    False (padding) get zero weight, so whatever a padded step holds cannot reach the output."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if heads <= 0 or width % heads:
            raise ValueError(f"width {width} must be a positive multiple of heads ({heads})")
        self.heads, self.dropout = heads, float(dropout)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | KeyMask | None = None
                ) -> torch.Tensor:
        b, tq, e = x.shape
        tk, h = kv.shape[1], self.heads
        q = self.q(x).view(b, tq, h, -1).transpose(1, 2)
        k = self.k(kv).view(b, tk, h, -1).transpose(1, 2)
        v = self.v(kv).view(b, tk, h, -1).transpose(1, 2)
        out = attend(q, k, v, key_mask, self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(b, tq, e))


class FeedForward(nn.Sequential):
    def __init__(self, width: int, hidden: int, act: Callable[[], nn.Module] = nn.ReLU, dropout: float = 0.0):
        super().__init__(nn.Linear(width, hidden), act(), nn.Dropout(dropout), nn.Linear(hidden, width))


def attention_flops(batch: int, tq: int, tk: int, e: int) -> int:
    return batch * (4 * tq * e * e + 4 * tk * e * e + 4 * tq * tk * e)


def ffn_flops(batch: int, t: int, e: int, hidden: int) -> int:
    return 4 * batch * t * e * hidden


# --- MulT's pre-LN encoder (crossmodal or self) -------------------------------------------------------------------

class PreLNLayer(nn.Module):
    """Z += MHA(LN Z, LN X, LN X); Z += FFN(LN Z). One LayerNorm serves query and source (as MulT's code):
    12e² + 13e parameters."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln_attn, self.ln_ffn = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.ffn = FeedForward(width, 4 * width, nn.ReLU, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor, src: torch.Tensor | None, mask: KeyMask | None) -> torch.Tensor:
        """``mask``: which keys (``src``'s steps, or z's own without ``src``) each query may attend."""
        h = self.ln_attn(z)
        kv = h if src is None else self.ln_attn(src)
        z = z + self.drop(self.attn(h, kv, mask))
        return z + self.drop(self.ffn(self.ln_ffn(z)))


class PreLNEncoder(nn.Module):
    """D pre-LN layers and a final LayerNorm: D·(12e² + 13e) + 2e parameters.

    Inputs (and the fixed crossmodal source) are scaled by √e and get sinusoidal positions from 1 (MulT's table:
    fairseq's, whose position 0 is the padding index), as in MulT. With ``src`` the layers are crossmodal (queries
    from z, keys/values from src), else self-attention. ``causal``: MulT's future mask (`future_mask`) on top of the
    key padding, as the reference code applies by default."""

    def __init__(self, width: int, layers: int, heads: int, dropout: float, causal: bool = False):
        super().__init__()
        if layers <= 0:
            raise ValueError(f"layers must be positive, got {layers}")
        self.width, self.causal = width, bool(causal)
        self.layers = nn.ModuleList(PreLNLayer(width, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x * math.sqrt(self.width) + sinusoid(x.shape[1], self.width, x.device, x.dtype, start=1))

    def forward(self, z, z_mask=None, src=None, src_mask=None) -> torch.Tensor:
        keys, key_mask = (z, z_mask) if src is None else (src, src_mask)
        if self.causal:
            mask = KeyMask(future_mask(z.shape[1], keys.shape[1], z_mask, key_mask, z.device))
        else:
            mask = as_key_mask(key_mask)  # derived once for all the layers
        z = self.embed(z)
        src = None if src is None else self.embed(src)
        for layer in self.layers:
            z = layer(z, src, mask)
        return self.ln(z)

    @staticmethod
    def params(width: int, layers: int) -> int:
        return layers * (12 * width ** 2 + 13 * width) + 2 * width

    @staticmethod
    def flops(batch: int, t: int, t_src: int | None, width: int, layers: int) -> int:
        tk = t if t_src is None else t_src
        return layers * (attention_flops(batch, t, tk, width) + ffn_flops(batch, t, width, 4 * width))


# --- METER's post-LN (BERT) layers ---------------------------------------------------------------------------------

class PostLNLayer(nn.Module):
    """BERT layer: x = LN(x + SelfAttn(x)); x = LN(x + FFN(x)), GELU, FFN width 4H: 12H² + 13H parameters."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.attn, self.ln_attn = Attention(width, heads, dropout), nn.LayerNorm(width)
        self.ffn, self.ln_ffn = FeedForward(width, 4 * width, nn.GELU, dropout), nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = self.ln_attn(x + self.drop(self.attn(x, x, mask)))
        return self.ln_ffn(x + self.drop(self.ffn(x)))


class CoAttnLayer(PostLNLayer):
    """METER co-attention layer of one stream: self-attention, cross-attention (queries from this stream, keys and
    values from the other stream(s)' previous layer), FFN, each followed by a residual and LayerNorm (post-LN):
    16H² + 19H parameters."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__(width, heads, dropout)
        self.cross, self.ln_cross = Attention(width, heads, dropout), nn.LayerNorm(width)

    def forward(self, x, mask=None, other=None, other_mask=None):
        x = self.ln_attn(x + self.drop(self.attn(x, x, mask)))
        x = self.ln_cross(x + self.drop(self.cross(x, other, other_mask)))
        return self.ln_ffn(x + self.drop(self.ffn(x)))


def cat_masks(masks: Sequence[torch.Tensor | None], xs: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """One mask for sequences concatenated along time (None if none of them has one)."""
    if all(m is None for m in masks):
        return None
    return torch.cat([torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if m is None else m
                      for m, x in zip(masks, xs)], 1)
