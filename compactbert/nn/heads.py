"""Heads that sit on the encoder: pooler and masked-LM (task heads join them here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .kernels import Products, linear, packed_linear, use_packed


class Pooler(Products):
    """Sentence vector from the first token: tanh(dense(h[:, 0])), or the raw vector (MobileBERT option)."""

    def __init__(self, hidden_size: int, kind: str) -> None:
        super().__init__()
        if kind not in ("tanh", "first_token"):
            raise ValueError(f"unknown pooler {kind!r}; choose 'tanh' or 'first_token'")
        self.dense = nn.Linear(hidden_size, hidden_size) if kind == "tanh" else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        first = hidden[:, 0]  # (B, H)
        return first if self.dense is None else torch.tanh(linear(self.dense, first))


class ClassificationHead(Products):
    """RoBERTa's sequence classifier on the (dropped-out) first token: out_proj(dropout(tanh(dense(x))))."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    @property
    def out_features(self) -> int:
        """The number of labels, as on the Linear classifier of the other families."""
        return self.out_proj.out_features

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return linear(self.out_proj, self.dropout(torch.tanh(linear(self.dense, first))))  # (B, L)


class MaskedLMHead(Products):
    """transform -> act -> LayerNorm -> vocabulary logits, for every family.

    `decoder` (V, E) is the word-embedding matrix when tied, or its own parameter (BORT's file).
    MobileBERT's hidden size exceeds its embedding size E; the remaining H - E features are
    projected by `extra` (H - E, V), so logits = t[:, :E] @ decoder.T + t[:, E:] @ extra + bias.
    ALBERT's transform maps straight to E (`to_embedding_width`), so no `extra` is needed.
    """

    def __init__(self, hidden_size: int, embedding_size: int, vocab_size: int, activation: str,
                 eps: float, to_embedding_width: bool = False) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        width = embedding_size if to_embedding_width else hidden_size
        self.transform = nn.Linear(hidden_size, width)
        self.act = get_activation(activation)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.decoder = nn.Parameter(torch.empty(vocab_size, embedding_size))
        self.extra = (nn.Parameter(torch.empty(width - embedding_size, vocab_size))
                      if width > embedding_size else None)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.act(linear(self.transform, hidden)))  # (..., H)
        if use_packed(t, self.decoder):
            # Inference: one packed product over [decoder | extra^T] (V, H), the largest matrix of the model.
            sources = (self.decoder, self.extra, self.bias)
            return packed_linear(self, "vocabulary", sources, self._vocabulary_matrix, t)
        if self.extra is None:
            return F.linear(t, self.decoder, self.bias)  # (..., V)
        e = self.embedding_size
        return torch.addmm(self.bias, t[..., e:].reshape(-1, self.extra.shape[0]), self.extra).view(
            *t.shape[:-1], self.bias.shape[0]) + F.linear(t[..., :e], self.decoder)

    def _vocabulary_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.decoder if self.extra is None else torch.cat([self.decoder, self.extra.t()], dim=1)
        return weight, self.bias
