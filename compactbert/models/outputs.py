"""Model outputs with transformers' access patterns: fields, string keys, integer indices and
`to_tuple()`, in transformers' order (the loss first when there is one). Fields left None are
absent from keys, indices and tuples, as in transformers; `return_dict=False` gives the tuple.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import torch

# Metadata of a field that is an attribute only: compactbert extras outside keys, indices and tuples.
EXTRA = {"extra": True}


@dataclass
class ModelOutput:
    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if not f.metadata.get("extra") and getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not in this output (its keys: {', '.join(self.keys())})")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


Tensors = tuple[torch.Tensor, ...]


@dataclass
class EncoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H); None for families without a pooler
    hidden_states: Tensors | None = None  # output_hidden_states: embeddings, then every layer, (B, T, H) each
    attentions: Tensors | None = None  # output_attentions: per layer (B, heads, T, T) probabilities


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean cross-entropy over labels != -100
    logits: torch.Tensor | None = None  # (B, T, V), or (N, V) when `positions` selected N tokens
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    # The encoder's last hidden state, (B, T, H) or (N, H) at `positions`: an attribute only.
    last_hidden_state: torch.Tensor | None = field(default=None, metadata=EXTRA)


@dataclass
class ClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, labels), (B, T, labels) for tokens, (B, choices) for multiple choice
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean of the start and end cross-entropies
    start_logits: torch.Tensor | None = None  # (B, T)
    end_logits: torch.Tensor | None = None  # (B, T)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class PreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # masked-LM loss + next-sentence loss
    prediction_logits: torch.Tensor | None = None  # (B, T, V)
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class SentenceOrderPreTrainingOutput(ModelOutput):
    """ALBERT's pretraining output: the sentence-order head's logits under transformers' name."""

    loss: torch.Tensor | None = None  # masked-LM loss + sentence-order loss
    prediction_logits: torch.Tensor | None = None  # (B, T, V)
    sop_logits: torch.Tensor | None = None  # (B, num_labels)
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
