"""Tokenizer ids equal transformers' on the same files, for awkward and generated text."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compactbert as cb
from conftest import FAMILIES, tokenized_checkpoint, tokenizer_folders, transformers, write_wordpiece_tokenizer

AWKWARD = [
    "", " ", "Hello World!", "Ünïcödé café naïve résumé", "中文字符和日本語のテキスト", "emoji 🤖🎉👍🏽 flags 🇫🇷",
    "zero\u200bwidth\u200djoiner\ufeff", "control\x00\x07\x1bchars\ttab\nnewline\r\n", "a" * 150,
    "supercalifragilisticexpialidocious" * 5, "Plants create [MASK] through photosynthesis.",
    "The <mask> barked.", "  leading and trailing spaces  ", "don't won't it's", "1,234.56 $%&*()",
    "\u0301combining\u0308marks", "Ω≈ç√∫ ǅ ﬁ ligature", "x" * 600,
]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> (ours, theirs) tokenizers built from the same files."""
    return {name: (cb.AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder))
            for name, folder in tokenizer_folders(tmp_path_factory.mktemp("tokenizers")).items()}


NAMES = ["minilm", "wordpiece-json", "wordpiece-vocab", "wordpiece-cased", "bpe", "roberta-json", "albert-json"]


def _same(ours, theirs, text, pair=None):
    got = ours(text, pair)
    want = theirs(text, pair)
    assert got["input_ids"] == want["input_ids"], (text, pair)
    assert got["attention_mask"] == want["attention_mask"]
    assert ("token_type_ids" in got) == ("token_type_ids" in want)
    if "token_type_ids" in got:
        assert got["token_type_ids"] == want["token_type_ids"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_text(pairs, name, text):
    _same(*pairs[name], text)


@pytest.mark.parametrize("name", NAMES)
def test_text_pairs_and_decode(pairs, name):
    ours, theirs = pairs[name]
    _same(ours, theirs, "The fox jumps.", "Over the lazy dog, twice!")
    _same(ours, theirs, "", "only the second")
    ids = theirs("Hello, world. It's here!")["input_ids"]
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.mask_token == theirs.mask_token and ours.mask_token_id == theirs.mask_token_id
    assert ours.pad_token_id == theirs.pad_token_id


@pytest.mark.parametrize("name", NAMES)
def test_batches_padding_truncation(pairs, name):
    ours, theirs = pairs[name]
    texts = ["short", "a somewhat longer sentence with more words in it", ""]
    got = ours(texts, padding=True, truncation=True, max_length=6, return_tensors="pt")
    want = theirs(texts, padding=True, truncation=True, max_length=6, return_tensors="pt")
    for key in want:
        assert torch.equal(got[key], want[key]), key
    got = ours(texts, ["pair one", "pair two is longer", "x"], padding="max_length", max_length=12,
               truncation=True, return_tensors="pt")
    want = theirs(texts, ["pair one", "pair two is longer", "x"], padding="max_length", max_length=12,
                  truncation=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80), pair=st.one_of(st.none(), st.text(max_size=40)))
def test_generated_text(pairs, text, pair):
    for name in NAMES:
        _same(*pairs[name], text, pair)


def test_model_max_length_falls_back_to_positions(tmp_path):
    write_wordpiece_tokenizer(tmp_path, with_json=False)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mobilebert", "max_position_embeddings": 512}))
    tok = cb.AutoTokenizer.from_pretrained(tmp_path)
    assert tok.model_max_length == 512
    assert tok(["word " * 1000], truncation=True, return_tensors="pt")["input_ids"].shape == (1, 512)


def test_distilbert_tokenizer_has_no_token_types(tmp_path):
    write_wordpiece_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    out = cb.AutoTokenizer.from_pretrained(tmp_path)("hello", "world")
    assert set(out) == {"input_ids", "attention_mask"}


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(cb.CheckpointError, match="no tokenizer files"):
        cb.AutoTokenizer.from_pretrained(tmp_path)


def test_bad_inputs(pairs):
    ours, _ = pairs["minilm"]
    with pytest.raises(cb.InputError, match="not a string"):
        ours([b"bytes"])
    with pytest.raises(cb.InputError, match="2 texts but 1 text pairs"):
        ours(["a", "b"], ["c"])
    with pytest.raises(cb.InputError, match="padding=True"):
        ours(["a", "a b c"], return_tensors="pt")


@pytest.mark.parametrize("name", ["wordpiece-vocab", "bpe"])
def test_save_pretrained_round_trip(pairs, name, tmp_path):
    ours, theirs = pairs[name]
    ours.save_pretrained(tmp_path / "saved")
    again = cb.AutoTokenizer.from_pretrained(tmp_path / "saved")
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    for text in AWKWARD[:12]:
        want = theirs(text)["input_ids"]
        assert again(text)["input_ids"] == want
        assert loaded(text)["input_ids"] == want
    assert again.mask_token == ours.mask_token and again.model_max_length == ours.model_max_length
    assert again.returns_token_type_ids == ours.returns_token_type_ids


def test_word_start_marker_follows_the_pre_tokenizer(pairs, tmp_path):
    """The mark of a token that follows a space: byte-level BPE "Ġ", SentencePiece "▁", WordPiece none
    (fill-mask scores a bare target word as the word after a space where the tokenizer marks it)."""
    from tokenizers import SentencePieceUnigramTokenizer

    from compactbert.tasks.fill_mask import spaced_target

    assert pairs["minilm"][0].word_start is None and pairs["bpe"][0].word_start == "Ġ"
    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=40,
                                special_tokens=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], unk_token="<unk>")
    unigram.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"unk_token": "<unk>", "pad_token": "<pad>", '
                                                    '"mask_token": "[MASK]"}')
    ours = cb.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.word_start == "▁"
    assert spaced_target(ours, "fox") and not spaced_target(ours, "▁fox")
    assert not spaced_target(pairs["minilm"][0], "fox")


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-tokenizers")
    return {family: tokenized_checkpoint(root / family, family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_tokenizer_equals_transformers(family_folders, family):
    """Each registered family's test checkpoint (its own tokenizer kind and conventions, from the
    registry): ids, token types and masks equal transformers' on awkward text, alone and in pairs."""
    ours = cb.AutoTokenizer.from_pretrained(family_folders[family])
    theirs = transformers.AutoTokenizer.from_pretrained(family_folders[family])
    for text in AWKWARD:
        _same(ours, theirs, text)
    _same(ours, theirs, "The fox jumps.", "Over the lazy dog, twice!")
    assert ours.mask_token == theirs.mask_token and ours.pad_token_id == theirs.pad_token_id
