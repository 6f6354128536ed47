"""Evaluation metrics against their references: seqeval for entities, the SQuAD v1.1 rules for QA."""

from __future__ import annotations

import random

import pytest

from compactbert.training import classification_scores, entity_scores, entity_spans, normalize_answer, squad_scores


def _random_tags(rng: random.Random, length: int) -> list[str]:
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]  # includes I- without B- (IOB1 style)
    return [rng.choice(tags) for _ in range(length)]


def test_entity_scores_equal_seqeval():
    from seqeval import metrics as seqeval  # the reference implementation (test extra)
    rng = random.Random(0)
    for trial in range(200):
        gold = [_random_tags(rng, rng.randint(1, 12)) for _ in range(rng.randint(1, 6))]
        pred = [[t if rng.random() < 0.6 else rng.choice(["O", "B-PER", "I-PER", "I-LOC", "B-ORG"]) for t in seq]
                for seq in gold]
        ours = entity_scores(pred, gold)
        assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred, zero_division=0)), trial
        assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred, zero_division=0)), trial
        assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred, zero_division=0)), trial
        assert ours["accuracy"] == pytest.approx(seqeval.accuracy_score(gold, pred)), trial


def test_entity_spans_by_hand():
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER"]) == {
        ("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5), ("PER", 6, 6)}
    assert entity_spans(["S-PER", "B-LOC", "E-LOC"]) == {("PER", 0, 0), ("LOC", 1, 2)}  # BIOES
    assert entity_spans(["O", "O"]) == set()
    with pytest.raises(ValueError, match="sequence 0: 1 predicted tags for 2 words"):
        entity_scores([["O"]], [["O", "O"]])


def test_squad_scores_follow_the_official_rules():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    scores = squad_scores(["the Eiffel tower", "in Paris France", "1889", ""],
                          [["Eiffel Tower"], ["Paris", "in Paris"], ["1887", "in 1889"], ["London"]])
    # exact: 1 + 0 + 0 + 0; F1: 1 + max(2/4, 2/3) + max(0, 2/3) + 0 (an empty answer scores 0)
    assert scores["exact_match"] == pytest.approx(25.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3) / 4)
    with pytest.raises(ValueError, match="question 0 has no gold answer"):
        squad_scores(["x"], [[]])


def test_classification_scores():
    scores = classification_scores([0, 1, 1, 2], [0, 1, 2, 2])
    assert scores["accuracy"] == 0.75
    assert scores["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        classification_scores([0, 1, 1], [0, 1])
