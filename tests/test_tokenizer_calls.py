"""The tokenizer call, option for option, against transformers' AutoTokenizer on the same folders.

Hundreds of randomly drawn combinations of padding, truncation, lengths, strides, overflow, pairs,
pre-split words, padding side and return flags: every returned field, the word ids of every row,
and the cases both refuse. Then the attributes and methods transformers users call, and the same
tokenizer and pipeline shared by 16 threads.
"""

from __future__ import annotations

import random
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import compactbert as cb
from conftest import tokenized_checkpoint, tokenizer_folders, transformers

WORDS = ["the", "fox", "Jumps", "over", "lazy", "dogs", "naïve", "café", "🤖", "中文", "don't", "1,234.56",
         "supercalifragilistic", "[MASK]", "<mask>", "photosynthesis", "Ünïcödé", "e-mail", "x" * 30, "a"]
COMBINATIONS = 120  # per tokenizer kind


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tokenizer_folders(tmp_path_factory.mktemp("tokenizer-calls"))


@pytest.fixture(scope="module")
def pairs(folders):
    return {name: (cb.AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder))
            for name, folder in folders.items()}


def _text(rng: random.Random, split: bool) -> str | list[str]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0 if not split else 1, 14))]
    return words if split else " ".join(words)


def _draw(rng: random.Random) -> tuple[tuple, dict]:
    split = rng.random() < 0.2
    batch = rng.random() < 0.6
    size = rng.randint(1, 4)
    texts = [_text(rng, split) for _ in range(size)] if batch else _text(rng, split)
    pair = None
    if rng.random() < 0.4:
        pair = [_text(rng, split) for _ in range(size)] if batch else _text(rng, split)
    options = {
        "padding": rng.choice([False, True, "longest", "max_length", "do_not_pad"]),
        "truncation": rng.choice([None, False, True, "longest_first", "only_first"] +
                                 (["only_second"] if pair is not None else [])),
        "max_length": rng.choice([None, 10, 16, 24, 64]),
        "add_special_tokens": rng.random() < 0.85,
        "return_token_type_ids": rng.choice([None, True, False]),
        "return_attention_mask": rng.choice([None, True, False]),
        "return_special_tokens_mask": rng.random() < 0.4,
        "return_offsets_mapping": rng.random() < 0.4,
        "return_length": rng.random() < 0.3,
        "return_tensors": rng.choice([None, None, "np", "pt"]),
        "padding_side": rng.choice([None, "left", "right"]),
        "pad_to_multiple_of": rng.choice([None, None, 8]),
    }
    if rng.random() < 0.3 and options["max_length"] is not None:
        options["return_overflowing_tokens"] = True
        options["stride"] = rng.choice([0, 1, 3])
    if split:
        options["is_split_into_words"] = True
    return (texts, pair), options


def _plain(value):
    """Nested lists of ints from tensors, arrays (object arrays of rows too), lists and tuples."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _call(tokenizer, args, options):
    try:
        return tokenizer(*args, **options), None
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is a BaseException; compared, not hidden
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return None, exc


@pytest.mark.parametrize("name", [
    "minilm", "wordpiece-vocab", "wordpiece-cased", "bpe", "roberta-json", "albert-json"])
def test_random_calls_equal_transformers(pairs, name):
    ours, theirs = pairs[name]
    rng = random.Random(zlib.crc32(name.encode()))
    compared = refused = 0
    for _ in range(COMBINATIONS):
        args, options = _draw(rng)
        got, our_error = _call(ours, args, options)
        want, their_error = _call(theirs, args, options)
        context = (name, args, options, our_error, their_error)
        if their_error is not None or our_error is not None:
            assert their_error is not None and isinstance(our_error, cb.InputError), context
            refused += 1
            continue
        assert set(got) == set(want), context
        for key in want:
            assert _plain(got[key]) == _plain(want[key]), (key, context)
            if options["return_tensors"] == "pt":
                assert isinstance(got[key], torch.Tensor), (key, context)
            if options["return_tensors"] == "np":
                assert isinstance(got[key], np.ndarray), (key, context)
        assert len(got.encodings) == len(want.encodings), context
        for row in range(len(want.encodings)):
            assert got.word_ids(row) == want.word_ids(row), context
            assert got.tokens(row) == want.tokens(row), context
        compared += 1
    assert compared > COMBINATIONS * 0.6 and refused > 0  # both kinds of outcome were exercised


@pytest.mark.parametrize("name", ["minilm", "bpe"])
def test_batch_encoding_helpers(pairs, name):
    ours, theirs = pairs[name]
    text = "The naïve fox jumps over dogs."
    got, want = ours(text, "And then?"), theirs(text, "And then?")
    for char in range(len(text)):
        assert got.char_to_token(char) == want.char_to_token(char)
        assert got.char_to_token(0, char) == want.char_to_token(0, char)
    assert got.sequence_ids() == want.sequence_ids()
    token = len(got["input_ids"]) // 2
    assert tuple(got.token_to_chars(token)) == tuple(want.token_to_chars(token))
    moved = ours([text], return_tensors="pt").to("cpu")
    assert moved.input_ids.device.type == "cpu" and moved.encodings is not None


@pytest.mark.parametrize("name", ["minilm", "wordpiece-cased", "bpe"])
def test_attributes_and_methods(pairs, name):
    ours, theirs = pairs[name]
    for attribute in ("cls_token", "cls_token_id", "sep_token", "sep_token_id", "pad_token", "pad_token_id",
                      "unk_token", "unk_token_id", "mask_token", "mask_token_id", "bos_token_id", "eos_token_id",
                      "vocab_size", "padding_side", "truncation_side", "model_input_names"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert len(ours) == len(theirs)
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)
    rows = theirs(["Hello there, world!", "A café."], padding=True)["input_ids"]
    for skip in (True, False):
        assert ours.batch_decode(rows, skip_special_tokens=skip) == theirs.batch_decode(rows, skip_special_tokens=skip)
        assert ours.batch_decode(torch.tensor(rows), skip) == theirs.batch_decode(torch.tensor(rows), skip)
    assert ours.decode(rows[0][1]) == theirs.decode(rows[0][1])
    assert ours.convert_tokens_to_ids(["the", "not-a-token-xyz"]) == theirs.convert_tokens_to_ids(
        ["the", "not-a-token-xyz"])
    assert ours.convert_ids_to_tokens(rows[0], skip_special_tokens=True) == theirs.convert_ids_to_tokens(
        rows[0], skip_special_tokens=True)
    assert ours.encode("Hello world", max_length=3, truncation=True) == theirs.encode("Hello world", max_length=3,
                                                                                      truncation=True)
    assert ours.tokenize("Hello naïve world") == theirs.tokenize("Hello naïve world")


def test_add_tokens(folders):
    ours = cb.AutoTokenizer.from_pretrained(folders["wordpiece-vocab"])
    theirs = transformers.AutoTokenizer.from_pretrained(folders["wordpiece-vocab"])
    ours("warm up a configured copy", padding="max_length", max_length=12)
    for tokenizer in (ours, theirs):
        assert tokenizer.add_tokens(["newword", "[NEW]"]) == 2
        assert tokenizer.add_tokens("newword") == 0
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    text = "a newword and [NEW] here"
    for options in ({}, {"padding": "max_length", "max_length": 12}):
        assert ours(text, **options)["input_ids"] == theirs(text, **options)["input_ids"]


def test_from_pretrained_accepts_transformers_arguments(folders):
    tok = cb.AutoTokenizer.from_pretrained(folders["minilm"], use_fast=True, padding_side="left",
                                           model_max_length=32)
    assert tok.padding_side == "left" and tok.model_max_length == 32
    out = tok(["short", "a much longer text than that"], padding=True)
    assert out["attention_mask"][0][0] == 0  # padded on the left
    assert len(tok("word " * 100, truncation=True)["input_ids"]) == 32


def test_no_padding_token_cannot_pad(folders, tmp_path):
    tok = cb.AutoTokenizer.from_pretrained(folders["minilm"])
    tok.special_tokens.pop("pad_token")
    assert tok.pad_token_id is None
    with pytest.raises(cb.InputError, match="no padding token"):
        tok(["a", "b c"], padding=True)


def test_shared_tokenizer_and_pipeline_across_16_threads(pairs, tmp_path):
    """No per-call reconfiguration of a shared backend: 16 threads with different truncation and
    padding settings get exactly the serial answers, and a fill-mask pipeline too."""
    ours, _ = pairs["minilm"]
    rng = random.Random(7)
    jobs = [_draw(rng) for _ in range(160)]
    serial = [_call(ours, args, options) for args, options in jobs]

    def run(job):
        return _call(ours, *job)

    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(run, jobs))
    for (args, options), (want, want_error), (got, got_error) in zip(jobs, serial, threaded):
        assert (want_error is None) == (got_error is None), (args, options, got_error)
        if want is not None:
            assert {k: _plain(v) for k, v in got.items()} == {k: _plain(v) for k, v in want.items()}

    folder = tokenized_checkpoint(tmp_path / "model", "distilbert")
    fill = cb.pipeline("fill-mask", model=folder)
    texts = [f"The {w} [MASK] over the {v} dog." for w in WORDS[:8] for v in ("lazy", "quick")]
    expected = [fill(t, top_k=3) for t in texts]
    barrier = threading.Barrier(16)

    def ask(n):
        barrier.wait()
        return [fill(texts[(n + k) % len(texts)], top_k=3) for k in range(len(texts))]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    for n, answer in enumerate(answers):
        for k, result in enumerate(answer):
            want = expected[(n + k) % len(texts)]
            assert [p["token"] for p in result] == [p["token"] for p in want]
            assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(result, want))
