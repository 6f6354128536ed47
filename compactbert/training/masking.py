"""Dynamic masking for masked-LM training and evaluation.

`mask_tokens` picks round(15%) of a batch's maskable tokens without replacement (uniformly, or
with chance proportional to count^-smoothing to favour rare tokens), then replaces 80% of them
with the mask token, 10% with a random token and leaves 10%, as BERT and DistilBERT do.
`mlm_collate` redraws masks for every batch of a `fine_tune` run (masked-LM fine-tuning);
`mlm_agreement` and `mlm_accuracy` score a model's predictions at seeded masks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import model_device, to_device


def chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of `size` items (the last may be shorter) from a stream."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def token_weights(counts: torch.Tensor, smoothing: float | None, special_ids: Sequence[int]) -> torch.Tensor:
    """Per vocabulary id, the relative chance of being picked for masking: 1 (uniform), or
    max(count, 1)^-smoothing; special tokens never."""
    weights = torch.ones(len(counts), dtype=torch.float64) if smoothing is None else (
        counts.double().clamp(min=1) ** -smoothing)
    weights[list(special_ids)] = 0.0
    return weights


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, weights: torch.Tensor, mask_id: int,
                vocab_size: int, generator: torch.Generator, probability: float = 0.15
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): round(probability * maskable tokens) positions of the batch are
    drawn without replacement with chance proportional to `weights[token]`; 80% of them become
    `mask_id`, 10% a random token, 10% stay. Labels hold the original ids there, -100 elsewhere."""
    chance = weights[input_ids].float() * attention_mask.float()  # (B, T); padding and specials 0
    maskable = int((chance > 0).sum())
    count = min(maskable, max(1, round(probability * maskable))) if maskable else 0
    labels = torch.full_like(input_ids, -100)
    if count == 0:
        return input_ids.clone(), labels
    picked = torch.multinomial(chance.flatten(), count, replacement=False, generator=generator)
    labels.view(-1)[picked] = input_ids.view(-1)[picked]
    masked = input_ids.clone().view(-1)
    roll = torch.rand(count, generator=generator)
    randoms = torch.randint(vocab_size, (count,), generator=generator)
    masked[picked[roll < 0.8]] = mask_id
    swap = (roll >= 0.8) & (roll < 0.9)
    masked[picked[swap]] = randoms[swap]
    return masked.view_as(input_ids), labels


def mlm_collate(tokenizer: Any, probability: float = 0.15, seed: int = 0, max_length: int | None = None,
                weights: torch.Tensor | None = None) -> Callable[[list[str]], dict[str, torch.Tensor]]:
    """For `fine_tune` on lines of text: fresh masks for every batch, labels at the masked tokens
    and `positions` so the model computes vocabulary logits only there."""
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token; masked-LM training needs one")
    generator = torch.Generator().manual_seed(seed)
    weights = weights if weights is not None else token_weights(torch.ones(len(tokenizer)), None,
                                                                sorted(tokenizer.all_special_ids))

    def collate(lines: list[str]) -> dict[str, torch.Tensor]:
        batch = dict(tokenizer(list(lines), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], batch["attention_mask"], weights,
                                                          tokenizer.mask_token_id, len(weights), generator,
                                                          probability)
        batch["positions"] = batch["labels"] != -100
        return batch

    return collate


def _seeded_masks(tokenizer: Any, texts: Sequence[str], seed: int, probability: float,
                  max_length: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Batches with every picked token replaced by the mask token, and their labels (same for a seed)."""
    generator = torch.Generator().manual_seed(seed)
    weights = token_weights(torch.ones(len(tokenizer)), None, sorted(tokenizer.all_special_ids))
    for chunk in chunks(iter(texts), 32):
        batch = dict(tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        _, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], weights, tokenizer.mask_token_id,
                                len(weights), generator, probability)
        batch["input_ids"] = torch.where(labels != -100, tokenizer.mask_token_id, batch["input_ids"])
        yield batch, labels


def _masked_logits(model: nn.Module, batch: dict[str, torch.Tensor], where: torch.Tensor) -> torch.Tensor:
    """(N, V) float32 logits at the masked positions, computed in eval mode on the model's device,
    returned on the CPU."""
    was_training = model.training
    model.eval()
    batch = to_device({**batch, "positions": where}, model_device(model))
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                    positions=batch["positions"])
    model.train(was_training)
    return out.logits.float().cpu()


def mlm_comparison(student: nn.Module, teacher: nn.Module, tokenizer: Any, texts: Sequence[str], seed: int = 0,
                   probability: float = 0.15, max_length: int = 128) -> tuple[float, float]:
    """(agreement, divergence) at the same seeded masks for both models and every call: the share
    of masked tokens where the student's top prediction equals the teacher's, and the mean
    KL(teacher || student) of their predicted distributions, in nats per masked token. The
    divergence is what distillation minimises; top-1 agreement on a small text is the noisier of
    the two (one token is 1/N of it)."""
    same = total = 0
    divergence = 0.0
    for batch, labels in _seeded_masks(tokenizer, texts, seed, probability, max_length):
        where = labels != -100
        s = _masked_logits(student, batch, where).log_softmax(-1)  # (N, V)
        t = _masked_logits(teacher, batch, where).log_softmax(-1)
        same += int((s.argmax(-1) == t.argmax(-1)).sum())
        divergence += float(F.kl_div(s, t, log_target=True, reduction="sum"))
        total += int(where.sum())
    return same / max(1, total), divergence / max(1, total)


def mlm_agreement(student: nn.Module, teacher: nn.Module, tokenizer: Any, texts: Sequence[str], seed: int = 0,
                  probability: float = 0.15, max_length: int = 128) -> float:
    """Share of masked tokens where the student's top prediction equals the teacher's (the same
    seeded masks for both models and for every call)."""
    return mlm_comparison(student, teacher, tokenizer, texts, seed, probability, max_length)[0]


def mlm_accuracy(model: nn.Module, tokenizer: Any, texts: Sequence[str], seed: int = 0, probability: float = 0.15,
                 max_length: int = 128) -> float:
    """Share of masked tokens the model predicts exactly (seeded masks)."""
    return mlm_scores(model, tokenizer, texts, seed, probability, max_length)[1]


def mlm_scores(model: nn.Module, tokenizer: Any, texts: Sequence[str], seed: int = 0, probability: float = 0.15,
               max_length: int = 128) -> tuple[float, float]:
    """(cross-entropy in nats, accuracy) of the model's predictions at seeded masked tokens: the
    mean -log p(true token) and the share predicted exactly."""
    loss, right, total = 0.0, 0, 0
    for batch, labels in _seeded_masks(tokenizer, texts, seed, probability, max_length):
        where = labels != -100
        logits = _masked_logits(model, batch, where)
        loss += float(F.cross_entropy(logits, labels[where], reduction="sum"))
        right += int((logits.argmax(-1) == labels[where]).sum())
        total += int(where.sum())
    return loss / max(1, total), right / max(1, total)
