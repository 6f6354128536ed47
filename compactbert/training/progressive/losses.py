"""The losses of progressive transfer: stage 1's four transfer terms of one layer, stage 2's
masked-LM term against a target mixing the label and the teacher's distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TransferTerms:
    total: torch.Tensor
    feature: torch.Tensor  # MSE of parameter-free LayerNorm'd block outputs
    attention: torch.Tensor  # cross-entropy of the student's attention against the teacher's
    mean: torch.Tensor  # MSE of per-token means
    variance: torch.Tensor  # L1 of per-token variances


def transfer_terms(teacher_hidden: torch.Tensor, student_hidden: torch.Tensor, teacher_scores: torch.Tensor,
                   student_scores: torch.Tensor, queries: torch.Tensor | None,
                   weights: tuple[float, float, float, float] = (100.0, 1.0, 5000.0, 5.0),
                   tokens: int | None = None, query_rows: int | None = None) -> TransferTerms:
    """Stage-1 losses of one layer: hidden states (N, H) of the N real tokens, attention scores
    (B, heads, T, T) with padding keys at a very negative value, `queries` (B, T) marking the real
    query tokens (None: all). `weights` = (feature, attention, mean, variance). The terms are sums
    divided by `tokens` (default N) and `query_rows` (default the real queries x heads here): pass a
    whole batch's counts when these rows are one part of it."""
    width = teacher_hidden.shape[-1]
    tokens = tokens or teacher_hidden.shape[0]
    normed = [F.layer_norm(h.float(), (width,), eps=1e-12) for h in (teacher_hidden, student_hidden)]
    feature = (normed[0] - normed[1]).pow(2).sum() / (tokens * width)
    t_var, t_mean = torch.var_mean(teacher_hidden.float(), dim=-1, correction=0)
    s_var, s_mean = torch.var_mean(student_hidden.float(), dim=-1, correction=0)
    mean = (t_mean - s_mean).pow(2).sum() / tokens
    variance = (t_var - s_var).abs().sum() / tokens
    # -sum_k p_t log q_s per (batch, head, query); padding keys have p_t = 0 and a finite log q_s.
    cross = -(teacher_scores.float().softmax(-1) * student_scores.float().log_softmax(-1)).sum(-1)  # (B, h, T)
    if queries is not None:
        cross = cross.transpose(1, 2)[queries]  # (Nq, heads): real queries only
    query_rows = query_rows or cross.numel()
    attention = cross.sum() / query_rows
    total = weights[0] * feature + weights[1] * attention + weights[2] * mean + weights[3] * variance
    return TransferTerms(total, feature, attention, mean, variance)


def soft_mlm_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  ground_truth_ratio: float = 0.5, temperature: float = 1.0, masked: int | None = None
                  ) -> torch.Tensor:
    """Stage 2's masked-LM term at M masked tokens: logits (M, V), labels (M,); the target is
    ratio x one-hot + (1 - ratio) x softmax(teacher / T); summed and divided by `masked` (default M)."""
    target = (1 - ground_truth_ratio) * (teacher_logits.float() / temperature).softmax(-1)
    target = target.scatter_add(1, labels[:, None], torch.full_like(target[:, :1], ground_truth_ratio))
    return -(target * student_logits.float().log_softmax(-1)).sum() / (masked or max(1, labels.numel()))
