"""Text classification data: labelled texts (and text pairs), batching, evaluation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..devices import model_device, to_device
from .data import checked_columns, class_names, load_records, load_table, tokenized
from .metrics import classification_scores


@dataclass
class TextExample:
    text: str
    label: int
    text_pair: str | None = None


def classification_collate(tokenizer: Any, max_length: int | None = None) -> Callable[[list[TextExample]], dict]:
    """Batch text examples into padded model inputs with `labels`."""

    def collate(examples: list[TextExample]) -> dict[str, torch.Tensor]:
        pairs = [e.text_pair for e in examples]
        batch = tokenizer([e.text for e in examples], None if pairs[0] is None else pairs, padding=True,
                          truncation=True, max_length=max_length, return_tensors="pt")
        batch["labels"] = torch.tensor([e.label for e in examples])
        return dict(batch)

    return collate


def argmax_predictions(model: nn.Module, examples: Sequence[Any], collate: Callable[[list[Any]], dict],
                       batch_size: int = 32) -> list[int]:
    """The highest-scoring class of every example, batching through a training `collate`."""
    predictions: list[int] = []
    device = model_device(model)
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate(list(examples[start:start + batch_size])), device)
        batch.pop("labels")
        with torch.no_grad():
            predictions += model(**batch).logits.argmax(-1).tolist()
    return predictions


def classification_predictions(model: nn.Module, examples: Sequence[TextExample], tokenizer: Any,
                               batch_size: int = 32) -> list[int]:
    """The predicted class of every example."""
    return argmax_predictions(model, examples, classification_collate(tokenizer), batch_size)


def classification_metrics(model: nn.Module, examples: Sequence[TextExample], tokenizer: Any,
                           batch_size: int = 32) -> dict[str, float]:
    """Accuracy and macro-averaged F1 of a sequence classifier on labelled examples."""
    predictions = classification_predictions(model, examples, tokenizer, batch_size)
    return classification_scores(predictions, [e.label for e in examples])


def read_csv_examples(path: str | os.PathLike, text_column: str = "text", label_column: str = "label",
                      text_pair_column: str | None = None, label2id: dict[str, int] | None = None,
                      split: str = "train") -> list[TextExample]:
    """Labelled examples from a CSV (header row) or JSON lines file, or a `datasets` dataset by name.

    Labels are integers, or names mapped through `label2id` (see `label_mapping`).
    """
    rows = load_records(path, split, [text_column, label_column] + ([text_pair_column] if text_pair_column else []))
    first_line = 2 if str(path).endswith(".csv") else 1  # line numbers as an editor shows them
    examples = []
    for n, row in enumerate(rows, first_line):
        raw = str(row[label_column]).strip()
        try:
            label = label2id[raw] if label2id is not None else int(raw)
        except (KeyError, ValueError):
            raise ValueError(f"{path}, record {n}: label {raw!r} is not "
                             f"{'one of ' + ', '.join(label2id) if label2id else 'an integer'}") from None
        examples.append(TextExample(row[text_column], label, row[text_pair_column] if text_pair_column else None))
    return examples


def label_mapping(path: str | os.PathLike, label_column: str = "label", split: str = "train") -> dict[str, int]:
    """label name -> id for a file's labels: integers keep their value, names are numbered in sorted order."""
    names = sorted({str(row[label_column]).strip() for row in load_records(path, split, [label_column])})
    if all(name.lstrip("-").isdigit() for name in names):
        return {name: int(name) for name in names}
    return {name: i for i, name in enumerate(names)}


def tokenized_classification(source: Any, tokenizer: Any, label2id: dict[str, int], text_column: str = "text",
                             label_column: str = "label", text_pair_column: str | None = None, split: str = "train",
                             max_length: int | None = None) -> Any:
    """A `datasets.Dataset` of model inputs with `labels`, tokenised through `Dataset.map(batched=True)`
    (whose cache makes a second run over the same file and tokenizer free); for `padded_collate`."""
    table = load_table(source, split)
    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    checked_columns(table, columns, source, split)
    names = class_names(table.features[label_column])
    first_line = 2 if str(source).endswith(".csv") else 1

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        labels = []
        for index, value in zip(indices, batch[label_column]):
            raw = str(names(value) if names else value).strip()
            if raw not in label2id:
                raise ValueError(f"{source}, record {index + first_line}: label {raw!r} is not one of "
                                 f"{', '.join(label2id)}")
            labels.append(label2id[raw])
        pairs = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
        return {**dict(encoded), "labels": labels}

    return tokenized(table, encode, tokenizer, "text-classification", sorted(label2id.items()), columns, max_length)


def padded_collate(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Batch tokenised examples (lists of ids with `labels`, one per text or one per token, as
    `tokenized_classification` and `tokenized_tagging` give them) into padded tensors."""

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        types = [f["token_type_ids"] for f in features] if "token_type_ids" in features[0] else None
        batch = tokenizer.pad_ids([f["input_ids"] for f in features], types)
        labels = [f["labels"] for f in features]
        if isinstance(labels[0], list):  # one label per token: padding is ignored (-100)
            width = batch["input_ids"].shape[1]
            labels = [row + [-100] * (width - len(row)) for row in labels]
        batch["labels"] = torch.tensor(labels)
        return batch

    return collate
