"""Synthetic checkpoints and workloads, for the benchmark and the tests: Hub-layout folders of every
registered family at its Hub (or tiny) geometry with random weights and a tokenizer trained on a
generated corpus, and generated sentences with a mask. Nothing here is needed to use a real model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from .registry import BenchModel, families


def bench_models() -> dict[str, BenchModel]:
    """The geometries every registered family asks to be measured, by name (e.g. "bort")."""
    return {model.name: model for family in families() for model in family.bench}


_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "st", "ing", "er", "qu"]


def _words(count: int, rng: random.Random) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))] = None
    return list(seen)


def make_sentences(n: int, seed: int = 0, min_words: int = 8, max_words: int = 120,
                   mask: str = "[MASK]") -> list[str]:
    """`n` sentences of min..max words from a fixed pseudo-word vocabulary, one mask each."""
    rng = random.Random(seed)
    vocab = _words(5000, random.Random(1))
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]  # Zipf-like, as in text
    out = []
    for _ in range(n):
        words = rng.choices(vocab, weights, k=rng.randint(min_words, max_words))
        words[rng.randrange(len(words))] = mask
        out.append(" ".join(words) + ".")
    return out


def _corpus() -> list[str]:
    rng = random.Random(2)
    vocab = _words(60000, random.Random(3))
    return [" ".join(rng.choices(vocab, k=20)) for _ in range(12000)]


def write_bpe_tokenizer(folder: Path, corpus: list[str], vocab_size: int) -> int:
    """Train a byte-level BPE on `corpus` and write it as amazon/bort ships one: vocab.json, merges.txt
    and special_tokens_map.json (`<mask>` with lstrip). Returns the vocabulary size, <mask> included."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size - 1, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "pad_token": "<pad>", "cls_token": "<s>",
                "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False,
                               "single_word": False}}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    return len(vocab)


def write_unigram_tokenizer(folder: Path, corpus: list[str], vocab_size: int) -> int:
    """Train a SentencePiece Unigram on `corpus` and write it as albert-base-v2 ships one: tokenizer.json
    with ALBERT's normalizer (quotes, NFKD, accents stripped, lower case), whitespace split then
    Metaspace ("▁"), and [CLS] A [SEP] (B [SEP]), plus tokenizer_config.json. Returns the vocabulary size."""
    from tokenizers import AddedToken, SentencePieceUnigramTokenizer, decoders, normalizers, pre_tokenizers, processors

    unigram = SentencePieceUnigramTokenizer()
    unigram.normalizer = normalizers.Sequence([
        normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
        normalizers.StripAccents(), normalizers.Lowercase()])
    unigram.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    unigram.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    unigram.train_from_iterator(corpus, vocab_size=vocab_size, show_progress=False, special_tokens=specials,
                                unk_token="<unk>")
    unigram.add_special_tokens([AddedToken("[MASK]", lstrip=True, normalized=False)])
    ids = {token: unigram.token_to_id(token) for token in ("[CLS]", "[SEP]")}
    unigram.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=list(ids.items()))
    unigram.save(str(folder / "tokenizer.json"))
    options = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": True, "model_max_length": 512,
               "unk_token": "<unk>", "pad_token": "<pad>", "cls_token": "[CLS]", "sep_token": "[SEP]",
               "bos_token": "[CLS]", "eos_token": "[SEP]", "mask_token": "[MASK]"}  # lstrip: in tokenizer.json
    (folder / "tokenizer_config.json").write_text(json.dumps(options))
    return unigram.get_vocab_size()


def build_checkpoint(family: str, folder: Path, tiny: bool = False) -> Path:
    """A Hub-layout folder (config, weights, tokenizer) for `family` at its Hub configuration."""
    from tokenizers import BertWordPieceTokenizer

    from .models.modeling import ForMaskedLM

    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    entry = bench_models()[family]
    config = entry.tiny() if tiny else entry.config()
    if entry.tokenizer == "bpe":
        size = write_bpe_tokenizer(folder, _corpus(), config.vocab_size)
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": entry.tokenizer_class,
                                                                  "model_max_length": 512}))
        config = config.replace(vocab_size=size, extra={"tokenizer_class": entry.tokenizer_class})
    elif entry.tokenizer == "unigram":
        config = config.replace(vocab_size=write_unigram_tokenizer(folder, _corpus(), config.vocab_size))
    else:
        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(_corpus(), vocab_size=config.vocab_size, min_frequency=1, show_progress=False,
                               special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        wp.save_model(str(folder))
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": entry.tokenizer_class,
                                                                  "do_lower_case": True,
                                                                  "model_max_length": 512}))
        lines = (folder / "vocab.txt").read_text().splitlines()
        config = config.replace(vocab_size=len(lines))
    torch.manual_seed(0)
    model = ForMaskedLM.from_config(config)
    with torch.no_grad():
        model.encoder.embeddings.word.weight.mul_(50.0)  # peaked output distributions
        if model.mlm.extra is not None:
            model.mlm.extra.mul_(50.0)
    model.save_pretrained(folder)
    return folder
