"""What every pipeline shares: model + tokenizer, inputs prepared as id lists, length-sorted batching."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..models.modeling import PreTrainedModel
from ..tokenization import Tokenizer

logger = logging.getLogger("compactbert.pipelines")


@dataclass
class Prepared:
    ids: list[int]
    type_ids: list[int]
    masks: list[int]  # token positions of the mask tokens
    space_before: list[bool]  # per mask: whitespace precedes it in the text (BPE leading-space variant)


class Pipeline:
    """Model + tokenizer + batching shared by every pipeline: length-sorted batches, little padding."""

    def __init__(self, model: PreTrainedModel, tokenizer: Tokenizer, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        limits = [n for n in (tokenizer.model_max_length, model.config.max_input_length) if n]
        self.max_length = min(limits)

    def _pad(self, items: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        with_types = bool(self.model.encoder.spec.type_vocab_size)
        batch = self.tokenizer.pad_ids([p.ids for p in items], [p.type_ids for p in items] if with_types else None)
        device = self.model.device
        types = batch.get("token_type_ids")
        return (batch["input_ids"].to(device), batch["attention_mask"].to(device),
                None if types is None else types.to(device))

    def _batches(self, items: Sequence[Prepared], batch_size: int | None) -> Iterator[list[int]]:
        """Indices of `items` in batches of similar length."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
        size = batch_size or self.batch_size
        for start in range(0, len(order), size):
            yield order[start:start + size]


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)
