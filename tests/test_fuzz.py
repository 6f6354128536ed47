"""Fuzzing at scale: generated text (every unicode category, control characters, lone surrogates,
very long words, empty strings, only spaces, mask tokens in odd places, pairs) through the tokenizer
and every pipeline of every registered family. The only exceptions allowed are compactbert's named
errors, and outputs stay well-formed (finite scores in [0, 1], fill-mask scores summing to at most
1, spans inside their text).

The default lane runs FUZZ_EXAMPLES (>= 1,000 in all); `pytest -m full_fuzz` runs >= 10,000.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compactbert as cb
from conftest import FAMILIES, tokenized_checkpoint

TASKS = ("tokenizer", "fill-mask", "feature-extraction", "sentence-embedding", "text-classification",
         "token-classification", "question-answering")
CASES = [(family, task) for family in FAMILIES for task in TASKS]
FUZZ_EXAMPLES = -(-1000 // len(CASES))  # per case: at least 1,000 inputs in all
FULL_EXAMPLES = -(-10000 // len(CASES))

# Text from every unicode category (lone surrogates included: malformed text), long runs, spaces.
characters = st.characters(codec=None, exclude_categories=())
words = st.one_of(st.text(characters, max_size=12), st.text(st.sampled_from("ab"), min_size=200, max_size=400),
                  st.sampled_from(["[MASK]", "<mask>", " ", "\t\n", "", "[CLS]", "[SEP]", "<s>", "</s>", "##", "Ġ",
                                   "▁", "\x00", "\u200b"]))
texts = st.lists(words, max_size=12).map(" ".join)
pairs = st.tuples(texts, st.one_of(st.none(), texts))


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    out = {}
    for family in FAMILIES:
        folder = tokenized_checkpoint(root / family, family, id2label={0: "O", 1: "B-X", 2: "I-X"})
        out[family] = {task: cb.pipeline(task, model=folder) for task in TASKS if task != "tokenizer"}
        out[family]["tokenizer"] = cb.AutoTokenizer.from_pretrained(folder)
    return out


def _finite_unit(score: float) -> None:
    assert math.isfinite(score) and -1e-6 <= score <= 1 + 1e-6, score


def _check(pipe, task: str, text: str, pair: str | None) -> None:
    """Run one input; only compactbert's named errors may escape; the output must be well-formed."""
    try:
        if task == "tokenizer":
            out = pipe(text, pair, truncation=True, max_length=32)
            assert len(out["input_ids"]) == len(out["attention_mask"]) <= 32
        elif task == "fill-mask":  # a mask after the text's start (and any the text holds), then the pair
            for group in _groups(pipe(f"{text[:40]} [MASK] {pair or ''}", top_k=3)):
                for prediction in group:
                    _finite_unit(prediction["score"])
                assert sum(p["score"] for p in group) <= 1 + 1e-5
        elif task == "feature-extraction":
            out = pipe(text, return_tensors=True, truncation=True)
            assert torch.isfinite(out).all()
        elif task == "sentence-embedding":
            assert torch.isfinite(pipe([text, pair or ""])).all()
        elif task == "text-classification":
            for result in pipe({"text": text, "text_pair": pair} if pair else text, top_k=None):
                _finite_unit(result["score"])
        elif task == "token-classification":
            for entity in pipe(text, aggregation_strategy="simple"):
                _finite_unit(entity["score"])
                assert 0 <= entity["start"] <= entity["end"] <= len(text)
        else:  # a short question (the tiny models read 64 tokens; longer ones are refused by name)
            answer = pipe(question=text[:12], context=pair or text)
            _finite_unit(answer["score"])
            assert 0 <= answer["start"] <= answer["end"] <= len(pair or text)
    except cb.CompactBertError:
        pass  # a named error: the input was refused with a reason


def _groups(result):
    """Fill-mask results as a list of per-mask prediction lists, whatever the nesting."""
    if result and isinstance(result[0], dict):
        return [result]
    return [g for item in result for g in _groups(item)]


def _run(pipes, family: str, task: str, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(pairs)
    def check(sample):
        _check(pipes[family][task], task, *sample)

    check()


@pytest.mark.parametrize("family, task", CASES)
def test_generated_inputs(pipes, family, task):
    _run(pipes, family, task, FUZZ_EXAMPLES)


@pytest.mark.full_fuzz
@pytest.mark.parametrize("family, task", CASES)
def test_generated_inputs_full(pipes, family, task):
    _run(pipes, family, task, FULL_EXAMPLES)
