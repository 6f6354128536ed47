"""Extractive QA data (SQuAD format): windows over long contexts with answer positions, and
evaluation through the question-answering pipeline (exact match and F1).

Training reads each context in the pipeline's windows (`max_seq_len`, `doc_stride`). A window
that holds the whole first gold answer is labelled with its first and last token; a window that
does not is labelled with the first token, the "no answer" slot, as in the SQuAD recipes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..tasks.question_answering import encode_windows
from .data import checked_columns, load_records, load_table, tokenized
from .metrics import squad_scores


@dataclass
class QAExample:
    question: str
    context: str
    answers: list[str]  # gold answer texts; the first is the training target
    answer_starts: list[int] = field(default_factory=list)  # character offsets of the answers in the context

    def __post_init__(self) -> None:
        if not self.answers:
            raise ValueError(f"question {self.question[:60]!r} has no answer")
        if not self.answer_starts:  # find the answers in the context
            self.answer_starts = [self.context.find(a) for a in self.answers]
        if len(self.answer_starts) != len(self.answers):
            raise ValueError(f"{len(self.answers)} answers but {len(self.answer_starts)} answer starts")
        for text, start in zip(self.answers, self.answer_starts):
            if start < 0 or self.context[start:start + len(text)] != text:
                raise ValueError(f"answer {text!r} is not in the context at {start}")


def read_qa_examples(path: str | os.PathLike, split: str = "train") -> list[QAExample]:
    """Examples from JSON lines in SQuAD's layout, one question per line:
    {"question": ..., "context": ..., "answers": {"text": [...], "answer_start": [...]}};
    "answers" may also be a list of strings (found in the context), or a Hub dataset named hf:NAME ("hf:squad")."""
    examples = []
    for n, record in enumerate(load_records(path, split, ["question", "context", "answers"]), 1):
        try:
            examples.append(_example(record["question"], record["context"], record["answers"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, record {n}: {exc}") from None
    return examples


def _example(question: str, context: str, answers: Any) -> QAExample:
    """SQuAD's {"text": [...], "answer_start": [...]}, or a list of answer texts found in the context."""
    if isinstance(answers, dict):
        return QAExample(question, context, list(answers["text"]), [int(s) for s in answers.get("answer_start", [])])
    return QAExample(question, context, [str(a) for a in answers])


@dataclass
class QAWindow:
    ids: list[int]
    type_ids: list[int]
    start: int  # token index of the answer's first token, 0 when the answer is not in this window
    end: int


def qa_windows(tokenizer: Any, examples: Sequence[QAExample], max_seq_len: int = 384,
               doc_stride: int = 128) -> list[QAWindow]:
    """Training windows of every example, labelled with the first gold answer's tokens."""
    windows = encode_windows(tokenizer, [e.question for e in examples], [e.context for e in examples],
                                       max_seq_len, doc_stride)
    out = []
    for example, encodings in zip(examples, windows):
        first = example.answer_starts[0]
        last = first + len(example.answers[0])  # one past the answer's last character
        for enc in encodings:
            context = [i for i, s in enumerate(enc.sequence_ids) if s == 1]
            start = end = 0
            if enc.offsets[context[0]][0] <= first and enc.offsets[context[-1]][1] >= last:
                start = next(i for i in context if enc.offsets[i][1] > first)
                end = next(i for i in reversed(context) if enc.offsets[i][0] < last)
            out.append(QAWindow(enc.ids, enc.type_ids, start, end))
    return out


def tokenized_windows(source: Any, tokenizer: Any, max_seq_len: int = 384, doc_stride: int = 128,
                      split: str = "train") -> Any:
    """`qa_windows` of every record of `source` as a `datasets.Dataset` (columns ids, type_ids,
    start, end; several rows per long context), made through `Dataset.map(batched=True)` and its
    cache; for `window_collate`. Read the examples with `read_qa_examples` first: it checks them."""
    table = load_table(source, split)
    checked_columns(table, ["question", "context", "answers"], source, split)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        examples = [_example(q, c, a) for q, c, a in zip(batch["question"], batch["context"], batch["answers"])]
        windows = qa_windows(tokenizer, examples, max_seq_len, doc_stride)
        return {name: [getattr(w, name) for w in windows] for name in ("ids", "type_ids", "start", "end")}

    return tokenized(table, encode, tokenizer, "question-answering", max_seq_len, doc_stride)


def window_collate(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """`qa_collate` for the rows of `tokenized_windows`."""
    collate = qa_collate(tokenizer)
    return lambda rows: collate([QAWindow(**row) for row in rows])


def qa_collate(tokenizer: Any) -> Callable[[list[QAWindow]], dict[str, torch.Tensor]]:
    """Batch windows into padded model inputs with start_positions and end_positions."""

    def collate(windows: list[QAWindow]) -> dict[str, torch.Tensor]:
        batch = tokenizer.pad_ids([w.ids for w in windows], [w.type_ids for w in windows])
        batch["start_positions"] = torch.tensor([w.start for w in windows])
        batch["end_positions"] = torch.tensor([w.end for w in windows])
        return batch

    return collate


def qa_metrics(model: nn.Module, examples: Sequence[QAExample], tokenizer: Any, max_seq_len: int = 384,
               doc_stride: int = 128, batch_size: int = 32) -> dict[str, float]:
    """SQuAD exact match and F1 (percent) of the pipeline's best answer to every question."""
    from ..pipelines import QuestionAnsweringPipeline

    was_training = model.training
    qa = QuestionAnsweringPipeline(model, tokenizer, batch_size=batch_size)  # puts the model in eval mode
    answers = qa(question=[e.question for e in examples], context=[e.context for e in examples],
                 max_seq_len=max_seq_len, doc_stride=doc_stride)
    model.train(was_training)
    return squad_scores([a["answer"] for a in answers], [e.answers for e in examples])
