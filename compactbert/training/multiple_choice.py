"""Multiple-choice data (SWAG-style): a context and its candidate continuations, one of them right.

Each (context, choice) pair is encoded like a sentence pair; the model scores every pair and the
highest score is the prediction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .data import checked_columns, load_records, load_table, tokenized
from .metrics import classification_scores
from .text_classification import argmax_predictions


@dataclass
class ChoiceExample:
    context: str
    choices: list[str]
    label: int  # index of the right choice

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"a multiple-choice example needs at least 2 choices, got {len(self.choices)}")
        if not 0 <= self.label < len(self.choices):
            raise ValueError(f"label {self.label} is not the index of one of the {len(self.choices)} choices")


def read_choice_examples(path: str | os.PathLike, context_field: str = "context", choices_field: str = "choices",
                         label_field: str = "label", split: str = "train") -> list[ChoiceExample]:
    """Examples from JSON lines ({"context": ..., "choices": [...], "label": 1} per line) or a
    Hub dataset named hf:NAME with those fields."""
    examples = []
    for n, record in enumerate(load_records(path, split, [context_field, choices_field, label_field]), 1):
        try:
            examples.append(ChoiceExample(str(record[context_field]), [str(c) for c in record[choices_field]],
                                          int(record[label_field])))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}, record {n}: {exc}") from None
    counts = {len(e.choices) for e in examples}
    if len(counts) > 1:
        raise ValueError(f"{path}: every example needs the same number of choices, found {sorted(counts)}")
    return examples


def tokenized_choices(source: Any, tokenizer: Any, context_field: str = "context", choices_field: str = "choices",
                      label_field: str = "label", split: str = "train", max_length: int | None = None) -> Any:
    """Every (context, choice) pair of `source` tokenised through `Dataset.map(batched=True)` and its
    cache: columns input_ids and token_type_ids (one list per choice) and labels; for
    `padded_choice_collate`. Read the examples with `read_choice_examples` first: it checks them."""
    table = load_table(source, split)
    checked_columns(table, [context_field, choices_field, label_field], source, split)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "token_type_ids": [], "labels": []}
        for context, choices, label in zip(batch[context_field], batch[choices_field], batch[label_field]):
            choices = [str(c) for c in choices]
            encoded = tokenizer([str(context)] * len(choices), choices, truncation=True, max_length=max_length,
                                return_token_type_ids=True)
            out["input_ids"].append(encoded["input_ids"])
            out["token_type_ids"].append(encoded["token_type_ids"])
            out["labels"].append(int(label))
        return out

    return tokenized(table, encode, tokenizer, "multiple-choice", [context_field, choices_field, label_field],
                     max_length)


def padded_choice_collate(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Batch rows of `tokenized_choices` into (B, choices, T) inputs with `labels`."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        flat = tokenizer.pad_ids([ids for row in rows for ids in row["input_ids"]],
                                 [types for row in rows for types in row["token_type_ids"]])
        shape = (len(rows), len(rows[0]["input_ids"]), -1)
        out = {name: value.view(shape) for name, value in flat.items()}
        out["labels"] = torch.tensor([row["labels"] for row in rows])
        return out

    return collate


def choice_collate(tokenizer: Any, max_length: int | None = None) -> Callable[[list[ChoiceExample]], dict]:
    """Batch examples into (B, choices, T) inputs with `labels`."""

    def collate(examples: list[ChoiceExample]) -> dict[str, torch.Tensor]:
        contexts = [e.context for e in examples for _ in e.choices]
        endings = [c for e in examples for c in e.choices]
        batch = tokenizer(contexts, endings, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        shape = (len(examples), len(examples[0].choices), -1)
        out = {name: value.view(shape) for name, value in batch.items()}
        out["labels"] = torch.tensor([e.label for e in examples])
        return out

    return collate


def choice_metrics(model: nn.Module, examples: Sequence[ChoiceExample], tokenizer: Any,
                   batch_size: int = 16) -> dict[str, float]:
    """Accuracy (and macro-F1 over choice positions) of a multiple-choice model."""
    predictions = argmax_predictions(model, examples, choice_collate(tokenizer), batch_size)
    return classification_scores(predictions, [e.label for e in examples])
