"""Evaluation metrics as pure functions of predictions and gold labels.

* `classification_scores`: accuracy and macro-averaged F1 over classes;
* `entity_scores`: entity-level precision, recall and F1 over BIO/IOB tag sequences, counted as
  conlleval and seqeval's default mode count them (an I- tag after O or another type opens an
  entity; an entity is right only if its type, first and last word all match);
* `squad_scores`: SQuAD v1.1 exact match and token F1 (lower case, no punctuation, no articles,
  whitespace collapsed; the best over the gold answers), in percent as the official script.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence


def classification_scores(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """{"accuracy", "f1"}: F1 is the unweighted mean over classes seen in labels or predictions."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    f1s = []
    for c in sorted(set(labels) | set(predictions)):
        tp = sum(p == c and g == c for p, g in zip(predictions, labels))
        fp = sum(p == c and g != c for p, g in zip(predictions, labels))
        fn = sum(p != c and g == c for p, g in zip(predictions, labels))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    accuracy = sum(p == g for p, g in zip(predictions, labels)) / max(1, len(labels))
    return {"accuracy": accuracy, "f1": sum(f1s) / max(1, len(f1s))}


def _split_tag(tag: str) -> tuple[str, str | None]:
    """(prefix, type): "B-PER" -> ("B", "PER"); "O" -> ("O", None); a bare "PER" counts as inside."""
    if tag == "O":
        return "O", None
    if tag[:2] in ("B-", "I-", "E-", "S-"):
        return tag[0], tag[2:]
    return "I", tag


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of every entity in one tag sequence (BIO, IOB1 or BIOES)."""
    spans, open_type, open_start = set(), None, 0
    for i, tag in enumerate([*tags, "O"]):  # the trailing "O" closes an entity that runs to the end
        prefix, kind = _split_tag(tag)
        starts = prefix in ("B", "S") or (prefix in ("I", "E") and kind != open_type)
        if open_type is not None and (prefix == "O" or starts):
            spans.add((open_type, open_start, i - 1))
            open_type = None
        if starts:
            open_type, open_start = kind, i
        if prefix in ("E", "S"):  # these tags end their entity on this word
            spans.add((kind, open_start, i))
            open_type = None
    return spans


def entity_scores(predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity {"precision", "recall", "f1"} and word-level "accuracy"."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predicted sequences for {len(labels)} labelled ones")
    found = correct = gold = words = right = 0
    for n, (pred, true) in enumerate(zip(predictions, labels)):
        if len(pred) != len(true):
            raise ValueError(f"sequence {n}: {len(pred)} predicted tags for {len(true)} words")
        predicted, expected = entity_spans(pred), entity_spans(true)
        found, gold, correct = found + len(predicted), gold + len(expected), correct + len(predicted & expected)
        words, right = words + len(true), right + sum(p == t for p, t in zip(pred, true))
    precision = correct / found if found else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": right / max(1, words)}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if not pred or not gold:  # an empty answer is right only against an empty answer
        return float(pred == gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent; each prediction is scored against its best gold answer."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
    exact = f1 = 0.0
    for n, (prediction, golds) in enumerate(zip(predictions, answers)):
        if not golds:
            raise ValueError(f"question {n} has no gold answer")
        exact += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
        f1 += max(_token_f1(prediction, g) for g in golds)
    count = max(1, len(predictions))
    return {"exact_match": 100.0 * exact / count, "f1": 100.0 * f1 / count}
