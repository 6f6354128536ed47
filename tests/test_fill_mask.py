"""The fill-mask pipeline: equal to transformers' pipeline, plus the cases it gets wrong."""

from __future__ import annotations

import re

import pytest
import torch

import compactbert as cb
from conftest import FAMILIES, tokenized_checkpoint, transformers


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fill-mask")
    return {family: tokenized_checkpoint(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def pipes(folders):
    return {family: (cb.pipeline("fill-mask", model=folder),
                     transformers.pipeline("fill-mask", model=str(folder), device="cpu"))
            for family, folder in folders.items()}


def _flatten(result):
    if isinstance(result, dict):
        return [result]
    return [leaf for item in result for leaf in _flatten(item)]


def assert_same(got, want):
    assert type(got) is type(want) and len(got) == len(want)
    got, want = _flatten(got), _flatten(want)
    assert [g["token"] for g in got] == [w["token"] for w in want]
    assert [g["token_str"] for g in got] == [w["token_str"] for w in want]
    assert [g["sequence"] for g in got] == [w["sequence"] for w in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) <= 1e-5


def _texts(mask):
    return [f"The quick brown {mask} jumps over the lazy dog.", f"Paris is the {mask} of France.",
            f"{mask} and {mask} again, with {mask}.", f"Hello {mask}"]


@pytest.mark.parametrize("family", FAMILIES)
def test_equal_to_transformers(pipes, family):
    ours, theirs = pipes[family]
    texts = _texts(ours.tokenizer.mask_token)
    assert_same(ours(texts[0]), theirs(texts[0]))  # one text, one mask
    assert_same(ours(texts[2], top_k=3), theirs(texts[2], top_k=3))  # several masks
    assert_same(ours(texts, top_k=7), theirs(texts, top_k=7))  # a list
    assert_same(ours([texts[1]]), theirs([texts[1]]))  # a list of one is unwrapped, as there


@pytest.mark.parametrize("family", FAMILIES)
def test_targets_equal_to_transformers(pipes, family):
    ours, theirs = pipes[family]
    tok = ours.tokenizer
    # Exact vocabulary tokens: the words as they follow a space ("Ġdog", "▁dog"; WordPiece: "dog")
    vocab = tok.get_vocab()
    vocab_targets = [t for t in ((tok.word_start or "") + w for w in ("dog", "cat", "fox", "the")) if t in vocab]
    assert len(vocab_targets) >= 2
    text = _texts(tok.mask_token)[0]
    assert_same(ours(text, targets=vocab_targets), theirs(text, targets=vocab_targets))
    assert_same(ours(text, targets=vocab_targets, top_k=2), theirs(text, targets=vocab_targets, top_k=2))


@pytest.mark.parametrize("family", FAMILIES)
def test_both_mask_spellings(pipes, family):
    ours, _ = pipes[family]
    a = ours("The quick brown [MASK] jumps.")
    b = ours("The quick brown <mask> jumps.")
    assert [p["token"] for p in a] == [p["token"] for p in b]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_mask_names_the_mask_token(pipes, family):
    ours, _ = pipes[family]
    mask = re.escape(ours.tokenizer.mask_token)
    with pytest.raises(cb.InputError, match=rf"no mask token in input 1 .*mask token is '{mask}'"):
        ours(["A [MASK] here.", "but not here"])


def test_long_text_truncated_with_warning(pipes, caplog):
    ours, _ = pipes["distilbert"]
    long_text = "The [MASK] is here. " + "more words follow " * 40
    with caplog.at_level("WARNING", logger="compactbert"):
        result = ours(long_text)
    assert len(result) == 5 and "truncated" in caplog.text
    direct = ours("The [MASK] is here. " + "more words follow " * 3)
    assert len(direct) == 5


def test_mask_beyond_limit_is_an_error(pipes):
    ours, _ = pipes["mobilebert"]
    with pytest.raises(cb.InputError, match="mask at token .* beyond this model's limit of 64 tokens"):
        ours("word " * 80 + "[MASK].")


def test_bpe_target_gets_leading_space_variant(pipes, caplog):
    ours, _ = pipes["bert"]
    tok = ours.tokenizer
    vocab = tok.get_vocab()
    word = next(w for w in sorted(vocab) if w.isalpha() and len(w) > 2 and "Ġ" + w in vocab)
    with caplog.at_level("WARNING", logger="compactbert"):
        result = ours("The <mask> barked.", targets=[word])
    assert result[0]["token"] == vocab["Ġ" + word]
    assert f"Ġ{word}" in caplog.text
    at_start = ours("<mask> barked.", targets=[word])  # no space before the mask: the no-space variant
    assert at_start[0]["token"] == vocab[word]


def test_multi_token_target_scored_as_whole_word(pipes, caplog):
    ours, _ = pipes["distilbert"]
    tok, model = ours.tokenizer, ours.model
    word = "photosynthesizers"
    pieces = tok.encode(word, add_special_tokens=False)
    assert len(pieces) > 1
    with caplog.at_level("WARNING", logger="compactbert"):
        result = ours("Plants are [MASK].", targets=[word, "green"])
    assert "not one token" in caplog.text
    entry = next(r for r in result if r["token"] == pieces)
    # Direct computation: every piece masked at once, product of the pieces' probabilities.
    ids = tok.encode("Plants are " + " ".join(["[MASK]"] * len(pieces)) + ".")
    positions = torch.tensor([[i == tok.mask_token_id for i in ids]])
    with torch.no_grad():
        probs = model(torch.tensor([ids]), positions=positions).logits.softmax(-1)
    expected = float(torch.prod(probs[torch.arange(len(pieces)), torch.tensor(pieces)]))
    assert abs(entry["score"] - expected) <= 1e-6 * max(expected, 1e-30) + 1e-12
    assert entry["token_str"] == tok.decode(pieces)
    assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)


def test_batch_size_does_not_change_results(pipes):
    ours, _ = pipes["mobilebert"]
    texts = [f"Sentence number {i} has a [MASK] in it" + " and more" * (i % 7) for i in range(23)]
    small, large = ours(texts, batch_size=4), ours(texts, batch_size=64)
    for a, b in zip(small, large):
        scores_a, scores_b = [p["score"] for p in a], [p["score"] for p in b]
        assert max(abs(x - y) / y for x, y in zip(scores_a, scores_b)) <= 1e-5
        for k in range(len(a)):  # tokens agree wherever the ranking is not a near-tie
            gaps = [abs(scores_a[k] - scores_a[j]) for j in (k - 1, k + 1) if 0 <= j < len(a)]
            if min(gaps) > 1e-5 * scores_a[k]:
                assert a[k]["token"] == b[k]["token"]


def test_argument_errors(pipes):
    ours, _ = pipes["distilbert"]
    assert ours([]) == []
    with pytest.raises(cb.InputError, match="top_k must be a positive integer"):
        ours("a [MASK]", top_k=0)
    with pytest.raises(cb.InputError, match="input 0 is a int"):
        ours([3])
    with pytest.raises(cb.InputError, match="unknown task 'summarize'"):
        cb.pipeline("summarize", model="x")
