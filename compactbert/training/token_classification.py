"""Token classification data (named entities): tagged words, label alignment, entity-level evaluation.

Words are joined with single spaces and tokenized as text, the way the token-classification
pipeline reads text, so a model is trained on the tokens it later sees. The first piece of each
word carries the word's tag; the other pieces and the special tokens get -100 (ignored by the loss).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..devices import model_device, to_device
from .data import checked_columns, class_names, load_records, load_table, tokenized
from .metrics import entity_scores


@dataclass
class TaggedExample:
    words: list[str]
    tags: list[str]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags: {' '.join(self.words)[:80]!r}")
        if not self.words:
            raise ValueError("an example has no words")
        for word in self.words:
            if not word or any(ch.isspace() for ch in word):
                raise ValueError(f"word {word!r} is empty or holds whitespace; words must be pre-split")


def read_tagged_examples(path: str | os.PathLike, words_field: str = "tokens", tags_field: str = "tags",
                         split: str = "train") -> list[TaggedExample]:
    """Tagged sentences from a JSON lines file ({"tokens": [...], "tags": ["B-PER", ...]} per line)
    or a `datasets` dataset by name (e.g. conll2003 with tags_field="ner_tags")."""
    examples = []
    for n, record in enumerate(load_records(path, split, [words_field, tags_field]), 1):
        try:
            examples.append(TaggedExample(list(record[words_field]), [str(t) for t in record[tags_field]]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}, record {n}: {exc}") from None
    return examples


def tokenized_tagging(source: Any, tokenizer: Any, tag2id: dict[str, int], words_field: str = "tokens",
                      tags_field: str = "tags", split: str = "train", max_length: int | None = None) -> Any:
    """A `datasets.Dataset` of model inputs with per-token `labels` (the first piece of each word
    labelled, every other position -100), tokenised through `Dataset.map(batched=True)` and its
    cache; for `padded_collate`. Read the examples with `read_tagged_examples` first: it checks them."""
    table = load_table(source, split)
    checked_columns(table, [words_field, tags_field], source, split)
    names = class_names(table.features[tags_field])

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "token_type_ids": [], "labels": []}
        for words, tags in zip(batch[words_field], batch[tags_field]):
            tags = names(tags) if names else [str(t) for t in tags]
            encoding, word_of = word_pieces(tokenizer, words, max_length)
            out["input_ids"].append(encoding.ids)
            out["token_type_ids"].append(encoding.type_ids)
            out["labels"].append(_first_piece_labels(word_of, [tag2id[t] for t in tags]))
        return out

    return tokenized(table, encode, tokenizer, "token-classification", sorted(tag2id.items()),
                     [words_field, tags_field], max_length)


def tag_mapping(examples: Sequence[TaggedExample]) -> dict[str, int]:
    """tag -> id: "O" first, then entity types in sorted order with B- before I-."""
    tags = {t for e in examples for t in e.tags}
    return {tag: i for i, tag in enumerate(sorted(tags, key=lambda t: (t != "O", t[2:], t)))}


def word_pieces(tokenizer: Any, words: Sequence[str], max_length: int | None = None) -> tuple[Any, list[int | None]]:
    """The encoding of the words joined by spaces, and for each token the index of its word
    (None for special tokens). Tokens never straddle words: every pre-tokenizer splits at spaces."""
    text = " ".join(words)
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    encoding = tokenizer.encode_batch([text], max_length=max_length or tokenizer.model_max_length)[0]
    word_of: list[int | None] = []
    for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask):
        # The token's last character lies inside its word even when the offsets include a leading space.
        word_of.append(None if special or end <= start else bisect.bisect_right(starts, end - 1) - 1)
    return encoding, word_of


def token_collate(tokenizer: Any, tag2id: dict[str, int], max_length: int | None = None
                  ) -> Callable[[list[TaggedExample]], dict[str, torch.Tensor]]:
    """Batch tagged examples: the first piece of each word labelled, every other position -100."""

    def collate(examples: list[TaggedExample]) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        for example in examples:
            encoding, word_of = word_pieces(tokenizer, example.words, max_length)
            rows.append(encoding)
            labels.append(_first_piece_labels(word_of, [tag2id[t] for t in example.tags]))
        return _pad(tokenizer, rows, labels)

    return collate


def _first_piece_labels(word_of: list[int | None], word_labels: list[int]) -> list[int]:
    out, previous = [], None
    for word in word_of:
        out.append(word_labels[word] if word is not None and word != previous else -100)
        previous = word
    return out


def _pad(tokenizer: Any, encodings: list[Any], labels: list[list[int]]) -> dict[str, torch.Tensor]:
    batch = tokenizer.pad_ids([e.ids for e in encodings], [e.type_ids for e in encodings])
    width = batch["input_ids"].shape[1]
    batch["labels"] = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
    return batch


def predict_tags(model: nn.Module, tokenizer: Any, examples: Sequence[TaggedExample], id2tag: dict[int, str],
                 batch_size: int = 32, max_length: int | None = None) -> list[list[str]]:
    """Each word's tag from its first piece; words cut off by truncation get "O"."""
    predictions = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        pieces = [word_pieces(tokenizer, e.words, max_length) for e in chunk]
        batch = _pad(tokenizer, [p[0] for p in pieces], [[0] * len(p[0].ids) for p in pieces])
        batch.pop("labels")
        with torch.no_grad():
            best = model(**to_device(batch, model_device(model))).logits.argmax(-1).tolist()  # (B, T)
        for example, (_, word_of), row in zip(chunk, pieces, best):
            tags = ["O"] * len(example.words)
            for position, label in zip(_first_piece_labels(word_of, list(range(len(example.words)))), row):
                if position != -100:
                    tags[position] = id2tag[label]
            predictions.append(tags)
    return predictions


def token_metrics(model: nn.Module, examples: Sequence[TaggedExample], tokenizer: Any,
                  id2tag: dict[int, str], batch_size: int = 32) -> dict[str, float]:
    """Entity-level precision, recall, F1 (seqeval's default counting) and word accuracy."""
    predictions = predict_tags(model, tokenizer, examples, id2tag, batch_size)
    return entity_scores(predictions, [e.tags for e in examples])
