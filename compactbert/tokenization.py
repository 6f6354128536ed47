"""Tokenizers on the `tokenizers` library: WordPiece (DistilBERT, MobileBERT) and byte-level BPE (BORT).

`AutoTokenizer.from_pretrained` reads `tokenizer.json` when the checkpoint has one (its settings
win), else builds the tokenizer from `vocab.txt` or `vocab.json` + `merges.txt` with the options in
`tokenizer_config.json`, exactly as the reference tokenizers do, so ids are identical.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tokenizers import AddedToken, Encoding, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, WordPiece

from .errors import CheckpointError, InputError
from .hub import find_file, split_hub_kwargs

_UNSET_MAX_LENGTH = 10**20  # transformers writes int(1e30) when a checkpoint sets no limit

_WORDPIECE_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}
_BPE_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                 "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
# Spellings of the mask token users type; each is mapped to the model's own mask token.
MASK_SPELLINGS = ("[MASK]", "<mask>")


class BatchEncoding(dict):
    """A dict of model inputs (`input_ids`, `attention_mask`, maybe `token_type_ids`) with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: torch.device | str) -> "BatchEncoding":
        return BatchEncoding({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


@dataclass
class _Specials:
    tokens: dict[str, str]
    mask_lstrip: bool


class Tokenizer:
    """A `tokenizers.Tokenizer` with the calling conventions of transformers' tokenizers."""

    def __init__(self, backend: Backend, specials: dict[str, str], model_max_length: int | None,
                 returns_token_type_ids: bool, clean_up_tokenization_spaces: bool = False,
                 byte_level: bool = False) -> None:
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.special_tokens = dict(specials)
        self.model_max_length = model_max_length
        self.returns_token_type_ids = returns_token_type_ids
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.byte_level = byte_level  # byte-level BPE: a leading space is part of the token ("Ġdog")
        for name, token in specials.items():
            if backend.token_to_id(token) is None:
                raise CheckpointError(f"the {name} {token!r} is not in the tokenizer's vocabulary")

    # ---------------------------------------------------------------- special tokens
    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def mask_token(self) -> str | None:
        return self.special_tokens.get("mask_token")

    @property
    def mask_token_id(self) -> int | None:
        return self._special_id("mask_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id("unk_token")

    @property
    def pad_token(self) -> str | None:
        return self.special_tokens.get("pad_token")

    @property
    def pad_token_id(self) -> int:
        pad = self._special_id("pad_token")
        return 0 if pad is None else pad

    @property
    def all_special_ids(self) -> set[int]:
        return {self.backend.token_to_id(t) for t in self.special_tokens.values()} - {None}  # type: ignore[return-value]

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    # ---------------------------------------------------------------- encoding
    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     add_special_tokens: bool = True, max_length: int | None = None,
                     strategy: str = "longest_first", stride: int = 0) -> list[Encoding]:
        """Unpadded encodings, truncated to `max_length` when given (`strategy`: longest_first,
        only_first or only_second). With a `stride`, the cut-off tokens are kept as overlapping
        windows in each encoding's `overflowing` list (see `encode_windows`)."""
        for n, text in enumerate(list(texts) + list(pairs or [])):
            if not isinstance(text, str):
                raise InputError(f"text {n} is a {type(text).__name__}, not a string")
        if max_length is not None:
            self.backend.enable_truncation(max_length, stride=stride, strategy=strategy)
        try:
            inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
            return self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as exc:  # the backend reports pair truncation that cannot fit, etc.
            raise InputError(f"could not encode the input: {exc}") from exc
        finally:
            self.backend.no_truncation()

    def encode_windows(self, texts: Sequence[str], pairs: Sequence[str], max_length: int,
                       stride: int) -> list[list[Encoding]]:
        """Per (text, pair): windows of at most `max_length` tokens over a long pair, each repeating
        the whole first text and overlapping the previous window's pair tokens by `stride`
        (how extractive QA reads a long context after its question)."""
        if stride >= max_length:
            raise InputError(f"doc_stride ({stride}) must be smaller than max_seq_len ({max_length})")
        firsts = self.encode_batch(texts, add_special_tokens=False)
        room = max_length - self.backend.num_special_tokens_to_add(True) - max((len(e.ids) for e in firsts), default=0)
        if room <= stride:  # the backend would abort the process (a Rust panic) rather than raise
            raise InputError(f"a question of {max_length - room - self.backend.num_special_tokens_to_add(True)} "
                             f"tokens leaves {max(room, 0)} of max_seq_len={max_length} for the context, not "
                             f"more than doc_stride={stride}; shorten the question, raise max_seq_len or "
                             f"lower doc_stride")
        encodings = self.encode_batch(texts, pairs, max_length=max_length, strategy="only_second", stride=stride)
        return [[e, *e.overflowing] for e in encodings]

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None,
                 padding: bool | str = True, truncation: bool = True, max_length: int | None = None,
                 return_tensors: str | None = "pt", add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False) -> BatchEncoding:
        """Encode one text or a batch, like transformers' tokenizers.

        padding: True / "longest" pads to the longest in the batch, "max_length" to `max_length`.
        truncation: cut to `max_length`, or to the model's limit when `max_length` is None.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        pairs = None
        if single and text_pair == "":
            text_pair = None  # as in transformers: an empty pair for one text means no pair
        if text_pair is not None:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise InputError(f"{len(texts)} texts but {len(pairs)} text pairs")
        limit = (max_length or self.model_max_length) if truncation else None
        encodings = self.encode_batch(texts, pairs, add_special_tokens, limit)
        ids = [e.ids for e in encodings]
        target = None
        if padding == "max_length":
            if max_length is None:
                raise InputError("padding='max_length' needs max_length=...")
            target = max_length
        elif padding in (True, "longest"):
            target = max(len(i) for i in ids) if ids else 0
        elif padding not in (False, "do_not_pad"):
            raise InputError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        out = BatchEncoding()
        rows = {"input_ids": ids, "attention_mask": [e.attention_mask for e in encodings]}
        if self.returns_token_type_ids:
            rows["token_type_ids"] = [e.type_ids for e in encodings]
        if return_offsets_mapping:
            rows["offset_mapping"] = [e.offsets for e in encodings]
        for key, values in rows.items():
            fill = {"input_ids": self.pad_token_id, "offset_mapping": (0, 0)}.get(key, 0)
            if target is not None:
                values = [v + [fill] * (target - len(v)) for v in values]
            out[key] = values
        if return_tensors == "pt":
            lengths = {len(v) for v in out["input_ids"]}
            if len(lengths) > 1:
                raise InputError("texts of different lengths cannot form a tensor without padding; pass padding=True")
            out = BatchEncoding({k: torch.tensor(v, dtype=torch.long) for k, v in out.items()})
        elif return_tensors is not None:
            raise InputError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        elif single:
            out = BatchEncoding({k: v[0] for k, v in out.items()})
        return out

    def pad_ids(self, ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None = None
                ) -> dict[str, torch.Tensor]:
        """Right-pad already encoded rows into (B, T) tensors: input_ids, attention_mask, and
        token_type_ids when `type_ids` are given and this tokenizer returns them."""
        width = max(len(row) for row in ids)
        batch = {
            "input_ids": torch.tensor([list(row) + [self.pad_token_id] * (width - len(row)) for row in ids]),
            "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
        }
        if type_ids is not None and self.returns_token_type_ids:
            batch["token_type_ids"] = torch.tensor([list(row) + [0] * (width - len(row)) for row in type_ids])
        return batch

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        pairs = None if text_pair is None else [text_pair]
        return self.encode_batch([text], pairs, add_special_tokens)[0].ids

    def tokenize(self, text: str) -> list[str]:
        return self.encode_batch([text], add_special_tokens=False)[0].tokens

    # ---------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return _clean_up(text) if self.clean_up_tokenization_spaces else text

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    def normalize_mask_spelling(self, text: str) -> str:
        """Replace `[MASK]` / `<mask>` with this model's own mask token."""
        mask = self.mask_token
        if mask is None:
            return text
        for spelling in MASK_SPELLINGS:
            if spelling != mask:
                text = text.replace(spelling, mask)
        return text

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json (transformers reads both)."""
        from .checkpoints.files import save_folder, write_json

        config = {**self.special_tokens, "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        if not self.returns_token_type_ids:
            config["model_input_names"] = ["input_ids", "attention_mask"]
        save_folder(directory, {
            "tokenizer.json": lambda path: self.backend.save(str(path)),
            "tokenizer_config.json": lambda path: write_json(config, path),
        })

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "Tokenizer":
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)


def _clean_up(text: str) -> str:
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _special_tokens(defaults: dict[str, str], *sources: dict[str, Any]) -> _Specials:
    tokens = dict(defaults)
    mask_lstrip = defaults is _BPE_SPECIALS
    for source in sources:
        for name in defaults:
            value = source.get(name)
            if isinstance(value, dict):
                if name == "mask_token" and "lstrip" in value:
                    mask_lstrip = bool(value["lstrip"])
                value = value.get("content")
            if isinstance(value, str):
                tokens[name] = value
    return _Specials(tokens, mask_lstrip)


def _wordpiece(vocab_path: Path, options: dict[str, Any], specials: dict[str, str]) -> Backend:
    vocab: dict[str, int] = {}
    with open(vocab_path, encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            vocab.setdefault(line.rstrip("\n"), index)
    backend = Backend(WordPiece(vocab, unk_token=specials["unk_token"], max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=options.get("tokenize_chinese_chars", True),
        strip_accents=options.get("strip_accents"), lowercase=options.get("do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_token, sep_token = specials["cls_token"], specials["sep_token"]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials.values()])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0",
        pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=[(cls_token, backend.token_to_id(cls_token) or 0),
                        (sep_token, backend.token_to_id(sep_token) or 0)],
    )
    return backend


def _byte_level_bpe(vocab_path: Path, merges_path: Path, options: dict[str, Any], specials: _Specials) -> Backend:
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{vocab_path} is not valid JSON ({exc})") from exc
    merges = []
    for line in merges_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"{merges_path} has a malformed merge line: {line!r}")
        merges.append((parts[0], parts[1]))
    add_prefix_space = bool(options.get("add_prefix_space", False))
    trim_offsets = bool(options.get("trim_offsets", True))
    backend = Backend(BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                          fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    tokens = specials.tokens
    added = []
    for name, token in tokens.items():
        lstrip = specials.mask_lstrip and name == "mask_token"
        added.append(AddedToken(token, special=True, normalized=False, lstrip=lstrip))
    backend.add_special_tokens(added)
    backend.post_processor = processors.RobertaProcessing(
        (tokens["sep_token"], backend.token_to_id(tokens["sep_token"])),
        (tokens["cls_token"], backend.token_to_id(tokens["cls_token"])),
        trim_offsets=trim_offsets, add_prefix_space=add_prefix_space,
    )
    return backend


class AutoTokenizer:
    """Builds a `Tokenizer` from a checkpoint folder or Hub repository."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is a factory: use AutoTokenizer.from_pretrained(...)")

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> Tokenizer:
        hub, rest = split_hub_kwargs(kwargs)
        if rest:
            raise TypeError(f"AutoTokenizer.from_pretrained() got unexpected arguments: {', '.join(rest)}")

        def find(filename: str) -> Path | None:
            return find_file(name_or_path, filename, **hub)

        options = _read_json(find("tokenizer_config.json"))
        model_config = _read_json(find("config.json"))
        options = {**_read_json(find("special_tokens_map.json")), **options}
        tokenizer_class = str(options.get("tokenizer_class") or model_config.get("tokenizer_class") or "")
        model_type = model_config.get("model_type", "")

        tokenizer_json = find("tokenizer.json")
        if tokenizer_json is not None:
            try:
                backend = Backend.from_file(str(tokenizer_json))
            except Exception as exc:
                raise CheckpointError(f"{tokenizer_json} is not a readable tokenizer file ({exc})") from exc
            byte_level = isinstance(backend.model, BPE)
            defaults = _BPE_SPECIALS if byte_level else _WORDPIECE_SPECIALS
            specials = _special_tokens(defaults, options)
            tokens = {k: v for k, v in specials.tokens.items() if backend.token_to_id(v) is not None}
        else:
            vocab_txt = find("vocab.txt")
            if vocab_txt is not None:
                byte_level = False
                specials = _special_tokens(_WORDPIECE_SPECIALS, options)
                backend = _wordpiece(vocab_txt, options, specials.tokens)
            else:
                vocab_json, merges = find("vocab.json"), find("merges.txt")
                if vocab_json is None or merges is None:
                    raise CheckpointError(
                        f"no tokenizer files in {name_or_path}: expected tokenizer.json, vocab.txt, "
                        "or vocab.json with merges.txt")
                byte_level = True
                specials = _special_tokens(_BPE_SPECIALS, options)
                backend = _byte_level_bpe(vocab_json, merges, options, specials)
            tokens = specials.tokens

        max_length = options.get("model_max_length")
        if not isinstance(max_length, int) or max_length >= _UNSET_MAX_LENGTH:
            max_length = model_config.get("max_position_embeddings")
        if "model_input_names" in options:
            type_ids = "token_type_ids" in options["model_input_names"]
        else:
            type_ids = not (byte_level or "Roberta" in tokenizer_class or "DistilBert" in tokenizer_class
                            or model_type == "distilbert")
        return Tokenizer(backend, tokens, max_length, type_ids,
                         clean_up_tokenization_spaces=bool(options.get("clean_up_tokenization_spaces", False)),
                         byte_level=byte_level)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt")
