"""Extractive question answering over contexts of any length, following transformers' conventions.

A long context is read in windows of `max_seq_len` tokens (question first, then a slice of the
context) that overlap by `doc_stride` tokens. In every window, start and end probabilities are
softmaxes over the context tokens (and the first token, which stands for "no answer"); a span's
score is p(start) * p(end), with start <= end < start + max_answer_len. Candidates are mapped back
to character offsets of the context, widened to whole words (`align_to_words`), and candidates
with the same text (ignoring case) add up their scores across windows.

Result per question: {"score", "start", "end", "answer"}, or a list of `top_k` of them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..tasks.question_answering import encode_windows
from .base import Pipeline, Prepared

_EXCLUDED = -10000.0  # logit given to tokens that cannot be part of an answer, as in transformers


class QuestionAnsweringPipeline(Pipeline):
    def __call__(self, question: str | Sequence[str] | None = None, context: str | Sequence[str] | None = None,
                 *, inputs: dict | Sequence[dict] | None = None, top_k: int = 1, max_seq_len: int | None = None,
                 doc_stride: int | None = None, max_answer_len: int = 15, handle_impossible_answer: bool = False,
                 align_to_words: bool = True, batch_size: int | None = None) -> Any:
        """Answer `question` from `context` (both strings, or equal-length lists), or `inputs`: one
        or more {"question", "context"} dicts (also accepted as the first argument). `max_seq_len` defaults to min(384, the model's limit),
        `doc_stride` to min(max_seq_len // 2, 128). With `handle_impossible_answer`, the empty answer
        competes with a score from the first token."""
        questions, contexts, single = _examples(question, context, inputs)
        if top_k < 1 or max_answer_len < 1:
            raise InputError(f"top_k and max_answer_len must be at least 1, got {top_k} and {max_answer_len}")
        if max_seq_len is not None and max_seq_len > self.max_length:
            raise InputError(f"max_seq_len {max_seq_len} exceeds this model's limit of {self.max_length} tokens")
        max_seq_len = max_seq_len or min(384, self.max_length)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        windows = encode_windows(self.tokenizer, questions, contexts, max_seq_len, doc_stride)
        flat = [(n, w) for n, example in enumerate(windows) for w in example]
        items = [Prepared(w.ids, w.type_ids, [], []) for _, w in flat]
        logits: list[tuple[np.ndarray, np.ndarray]] = [None] * len(items)  # type: ignore[list-item]
        for chunk in self._batches(items, batch_size):
            with torch.inference_mode():
                out = self.model(*self._pad([items[i] for i in chunk]))
            for row, i in enumerate(chunk):
                n = len(items[i].ids)
                logits[i] = (out.start_logits[row, :n].float().cpu().numpy(), out.end_logits[row, :n].float().cpu().numpy())
        per_example: list[list[tuple[Any, np.ndarray, np.ndarray]]] = [[] for _ in questions]
        for (n, window), (start, end) in zip(flat, logits):
            per_example[n].append((window, start, end))
        results = [self._answers(contexts[n], spans, top_k, max_answer_len, handle_impossible_answer, align_to_words)
                   for n, spans in enumerate(per_example)]
        return results[0] if single else results

    def _answers(self, context: str, windows: list[tuple[Any, np.ndarray, np.ndarray]], top_k: int,
                 max_answer_len: int, handle_impossible: bool, align_to_words: bool) -> Any:
        cls_id = self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens.get("cls_token", ""))
        null_score = 1e6
        answers: list[dict[str, Any]] = []
        # Word alignment can merge candidates, so more are decoded than returned.
        wanted = top_k * 2 + 10 if align_to_words else top_k
        for window, start, end in windows:
            allowed = np.array([s == 1 for s in window.sequence_ids])  # context tokens ...
            allowed |= np.array(window.ids) == cls_id  # ... and the first token, the "no answer" slot
            p_start, p_end = _softmax(np.where(allowed, start, _EXCLUDED)), _softmax(np.where(allowed, end, _EXCLUDED))
            if handle_impossible:
                null_score = min(null_score, float(p_start[0] * p_end[0]))
            p_start[0] = p_end[0] = 0.0
            for s, e, score in _best_spans(p_start, p_end, wanted, max_answer_len, allowed):
                first, last = _char_span(window, s, e, align_to_words)
                text = context[first:last]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score
                else:
                    answers.append({"score": score, "start": first, "end": last, "answer": text})
        if handle_impossible:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _examples(question: Any, context: Any, inputs: Any) -> tuple[list[str], list[str], bool]:
    """(questions, contexts, whether a single example was given), with specific errors."""
    if context is None and inputs is None and (isinstance(question, dict) or (
            isinstance(question, (list, tuple)) and question and isinstance(question[0], dict))):
        question, inputs = None, question  # qa({"question": ..., "context": ...}) as in transformers
    if inputs is not None:
        if question is not None or context is not None:
            raise InputError("pass either question= and context= or inputs=, not both")
        single = isinstance(inputs, dict)
        records = [inputs] if single else list(inputs)
        for n, record in enumerate(records):
            if not isinstance(record, dict) or not {"question", "context"} <= set(record):
                raise InputError(f"input {n} must be a dict with 'question' and 'context'")
        questions, contexts = [r["question"] for r in records], [r["context"] for r in records]
    else:
        if question is None or context is None:
            raise InputError("question answering needs both a question and a context")
        single = isinstance(question, str) and isinstance(context, str)
        questions = [question] if isinstance(question, str) else list(question)
        contexts = [context] if isinstance(context, str) else list(context)
        if len(contexts) == 1 and len(questions) > 1:
            contexts = contexts * len(questions)  # several questions about one context
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts")
    for n, (q, c) in enumerate(zip(questions, contexts)):
        if not isinstance(q, str) or not isinstance(c, str):
            raise InputError(f"question and context {n} must be strings")
        if not q.strip() or not c.strip():
            raise InputError(f"question or context {n} is empty")
    return questions, contexts, single


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _best_spans(p_start: np.ndarray, p_end: np.ndarray, k: int, max_answer_len: int,
                allowed: np.ndarray) -> list[tuple[int, int, float]]:
    """The k best (start, end, p_start * p_end) with start <= end < start + max_answer_len, best first."""
    scores = np.tril(np.triu(np.outer(p_start, p_end)), max_answer_len - 1)  # (T, T), invalid spans 0
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    out = []
    for index in order:
        s, e = divmod(int(index), scores.shape[1])
        if allowed[s] and allowed[e]:
            out.append((s, e, float(flat[index])))
    return out


def _char_span(window: Any, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """Character offsets in the context of tokens s..e, widened to whole words if asked."""
    if align_to_words:
        first_word, last_word = window.token_to_word(s), window.token_to_word(e)
        if first_word is not None and last_word is not None:
            return (window.word_to_chars(first_word, sequence_index=1)[0],
                    window.word_to_chars(last_word, sequence_index=1)[1])
    return window.offsets[s][0], window.offsets[e][1]
