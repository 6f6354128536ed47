"""The building blocks of the shared encoder: norms, embeddings, attention, feed-forward.

Every module reads an `EncoderSpec`, never a family config, so one set of blocks serves BERT/BORT,
MobileBERT and DistilBERT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .config import EncoderSpec


class NoNorm(nn.Module):
    """MobileBERT's affine 'normalisation': x * weight + bias, no statistics."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


def make_norm(kind: str, size: int, eps: float) -> nn.Module:
    """LayerNorm or NoNorm, by the name used in MobileBERT's `normalization_type`."""
    if kind == "layer_norm":
        return nn.LayerNorm(size, eps=eps)
    if kind == "no_norm":
        return NoNorm(size)
    raise ValueError(f"unknown norm {kind!r}; choose 'layer_norm' or 'no_norm'")


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """DistilBERT's sinusoidal position table: sin on even columns, cos on odd ones."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]  # (P, 1)
    rate = torch.pow(10000.0, 2 * (torch.arange(dim) // 2).to(torch.float64) / dim)  # (D,)
    angles = pos / rate  # (P, D)
    table = torch.empty(positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class Embeddings(nn.Module):
    """Word (+ trigram transform) + position (+ token type) embeddings, then a norm."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.trigram_input = spec.trigram_input
        self.word = nn.Embedding(spec.vocab_size, spec.embedding_size)
        width_in = spec.embedding_size * (3 if spec.trigram_input else 1)
        self.transform = nn.Linear(width_in, spec.hidden_size) if spec.embedding_transform else None
        self.position = nn.Embedding(spec.max_positions, spec.hidden_size)
        self.token_type = nn.Embedding(spec.type_vocab_size, spec.hidden_size) if spec.type_vocab_size else None
        self.norm = make_norm(spec.norm, spec.hidden_size, spec.embedding_norm_eps)
        self.dropout = nn.Dropout(spec.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.word(input_ids)  # (B, T, E)
        if self.trigram_input:
            if attention_mask is not None:
                # Padding must not leak into the last real token through its 'next' neighbour,
                # whatever the padding row of the table holds.
                x = x * attention_mask[..., None].to(x.dtype)
            x = torch.cat([F.pad(x[:, 1:], (0, 0, 0, 1)), x, F.pad(x[:, :-1], (0, 0, 1, 0))], dim=-1)  # (B, T, 3E)
        if self.transform is not None:
            x = self.transform(x)  # (B, T, H)
        positions = self.position.weight[: input_ids.shape[1]]  # (T, H)
        if self.token_type is None:
            x = x + positions
        else:
            types = self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids)
            # Same summation order as the reference implementations (BERT adds types first).
            x = (x + positions) + types if self.transform is not None else (x + types) + positions
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head attention through torch's scaled_dot_product_attention.

    Query and key read `qk_size`-wide inputs, value reads `v_size`-wide ones (they differ in
    MobileBERT). `mask` is additive, (B, 1, 1, T), with finfo.min at padding: a row with every
    key masked becomes uniform instead of NaN.
    """

    def __init__(self, qk_size: int, v_size: int, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.q = nn.Linear(qk_size, width)
        self.k = nn.Linear(qk_size, width)
        self.v = nn.Linear(v_size, width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = q_in.shape
        q, k, v = self._heads(self.q(q_in)), self._heads(self.k(k_in)), self._heads(self.v(v_in))
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            scale=self.head_dim ** -0.5,
        )  # (B, H, T, D)
        return self.out(ctx.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class Projection(nn.Module):
    """norm(dense(x) [+ residual]): MobileBERT's bottlenecks in and out."""

    def __init__(self, size_in: int, size_out: int, norm: str, eps: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)
        self.norm = make_norm(norm, size_out, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dropout(self.dense(x))
        return self.norm(y if residual is None else y + residual)


class FeedForward(nn.Module):
    """norm(fc_out(act(fc_in(x))) + x), post-LN as in all three families."""

    def __init__(self, size: int, ffn_size: int, activation: str, norm: str, eps: float, dropout: float) -> None:
        super().__init__()
        self.fc_in = nn.Linear(size, ffn_size)
        self.fc_out = nn.Linear(ffn_size, size)
        self.norm = make_norm(norm, size, eps)
        self.act = get_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.fc_out(self.act(self.fc_in(x)))) + x)


class EncoderLayer(nn.Module):
    """One post-LN transformer layer; with `spec.bottleneck`, MobileBERT's narrow layer."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        inner = spec.inner_size
        self.bottleneck_in = (Projection(spec.hidden_size, inner, spec.norm, spec.norm_eps)
                              if spec.bottleneck else None)
        self.bottleneck_qk = (Projection(spec.hidden_size, inner, spec.norm, spec.norm_eps)
                              if spec.shared_qk_bottleneck else None)
        self.bottleneck_attention = spec.bottleneck_attention
        self.attention = SelfAttention(inner, spec.value_input_size, inner, spec.num_heads, spec.attention_dropout)
        self.attention_norm = make_norm(spec.norm, inner, spec.norm_eps)
        self.dropout = nn.Dropout(spec.hidden_dropout)
        self.stacked_ffns = nn.ModuleList(
            FeedForward(inner, spec.ffn_size, spec.activation, spec.norm, spec.norm_eps, 0.0)
            for _ in range(spec.num_ffn - 1)
        )
        self.ffn = FeedForward(inner, spec.ffn_size, spec.activation, spec.norm, spec.final_ffn_norm_eps,
                               0.0 if spec.bottleneck else spec.hidden_dropout)
        self.bottleneck_out = (Projection(inner, spec.hidden_size, spec.norm, spec.norm_eps, spec.hidden_dropout)
                               if spec.bottleneck else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        layer_input = q_in = v_in = x
        if self.bottleneck_in is not None:
            layer_input = self.bottleneck_in(x)  # (B, T, inner)
            if self.bottleneck_attention:
                q_in = v_in = layer_input
            elif self.bottleneck_qk is not None:
                q_in = self.bottleneck_qk(x)  # shared by query and key; value reads x
        a = self.attention_norm(self.dropout(self.attention(q_in, q_in, v_in, mask)) + layer_input)
        for ffn in self.stacked_ffns:
            a = ffn(a)
        a = self.ffn(a)
        if self.bottleneck_out is not None:
            a = self.bottleneck_out(a, residual=x)  # back to hidden_size
        return a
