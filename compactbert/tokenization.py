"""The tokenizer call with transformers' conventions, on a `tokenizers` backend: WordPiece
(DistilBERT, MobileBERT) or byte-level BPE (BORT). Building one from checkpoint files is
`tokenizer_files.AutoTokenizer`."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tokenizers import AddedToken, Encoding
from tokenizers import Tokenizer as Backend

from .encoding import BatchEncoding, as_tensors
from .errors import CheckpointError, InputError
from .io.hub import PushToHubMixin, check_push_options, push_folder

# Spellings of the mask token users type; each is mapped to the model's own mask token.


_PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
_TRUNCATION = {None: None, False: None, "do_not_truncate": None, True: "longest_first",
               "longest_first": "longest_first", "only_first": "only_first", "only_second": "only_second"}
_CONFIGURED_LIMIT = 16  # backends kept per tokenizer, one per truncation and padding setting in use


def _special(name: str) -> tuple[property, property]:
    """The `<name>` and `<name>_id` properties of a special token (None when the tokenizer has none)."""
    return (property(lambda self: self.special_tokens.get(name), doc=f"the {name}, or None"),
            property(lambda self: self._special_id(name), doc=f"the id of the {name}, or None"))


class Tokenizer(PushToHubMixin):
    """A `tokenizers.Tokenizer` with the calling conventions of transformers' fast tokenizers.

    Safe to share between threads: the shared backend is never reconfigured per call. Each
    truncation and padding setting gets its own configured copy, made once and cached.
    """

    def __init__(self, backend: Backend, specials: dict[str, str], model_max_length: int | None,
                 returns_token_type_ids: bool, clean_up_tokenization_spaces: bool = False,
                 byte_level: bool = False, padding_side: str = "right", truncation_side: str = "right") -> None:
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.special_tokens = dict(specials)
        self.model_max_length = model_max_length
        self.returns_token_type_ids = returns_token_type_ids
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.byte_level = byte_level  # byte-level BPE: a leading space is part of the token ("Ġdog")
        self.word_start = _word_start(backend)
        self.padding_side = _side(padding_side, "padding_side")
        self.truncation_side = _side(truncation_side, "truncation_side")
        self._configured: dict[tuple, Backend] = {}
        self._lock = threading.Lock()
        for name, token in specials.items():
            if backend.token_to_id(token) is None:
                raise CheckpointError(f"the {name} {token!r} is not in the tokenizer's vocabulary")

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "token_type_ids", "attention_mask"] if self.returns_token_type_ids else \
            ["input_ids", "attention_mask"]

    # ---------------------------------------------------------------- special tokens
    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    mask_token, mask_token_id = _special("mask_token")
    unk_token, unk_token_id = _special("unk_token")
    pad_token, pad_token_id = _special("pad_token")
    cls_token, cls_token_id = _special("cls_token")
    sep_token, sep_token_id = _special("sep_token")
    bos_token, bos_token_id = _special("bos_token")
    eos_token, eos_token_id = _special("eos_token")
    pad_token_type_id = 0

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self.special_tokens.values()))

    @property
    def all_special_ids(self) -> list[int]:
        ids = (self.backend.token_to_id(t) for t in self.all_special_tokens)
        return [i for i in ids if i is not None]

    @property
    def vocab_size(self) -> int:
        """The base vocabulary, without added tokens (as in transformers; `len(tokenizer)` counts them)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def add_tokens(self, new_tokens: str | AddedToken | Sequence[str | AddedToken],
                   special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary; returns how many were new. The model's embedding matrix must
        grow to `len(tokenizer)` before it sees their ids."""
        tokens = [new_tokens] if isinstance(new_tokens, (str, AddedToken)) else list(new_tokens)
        with self._lock:
            added = (self.backend.add_special_tokens(tokens) if special_tokens else self.backend.add_tokens(tokens))
            self._configured.clear()  # configured copies predate the new tokens
        return added

    # ---------------------------------------------------------------- configured backends
    def _backend_for(self, truncation: dict[str, Any] | None, padding: dict[str, Any] | None) -> Backend:
        """The backend with this truncation and padding, made once per setting; the shared one when neither."""
        if truncation is None and padding is None:
            return self.backend
        key = (tuple(sorted((truncation or {}).items())), tuple(sorted((padding or {}).items())))
        with self._lock:
            configured = self._configured.get(key)
            if configured is None:
                configured = Backend.from_str(self.backend.to_str())
                configured.no_truncation()
                configured.no_padding()
                if truncation is not None:
                    configured.enable_truncation(**truncation)
                if padding is not None:
                    configured.enable_padding(**padding)
                if len(self._configured) >= _CONFIGURED_LIMIT:
                    self._configured.pop(next(iter(self._configured)))
                self._configured[key] = configured
        return configured

    def _encode(self, inputs: list[Any], add_special_tokens: bool, truncation: dict[str, Any] | None = None,
                padding: dict[str, Any] | None = None, is_pretokenized: bool = False) -> list[Encoding]:
        backend = self._backend_for(truncation, padding)
        try:
            return backend.encode_batch(inputs, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)
        except Exception as exc:  # the backend reports pair truncation that cannot fit, etc.
            raise InputError(f"could not encode the input: {exc}") from exc
        except BaseException as exc:  # a Rust panic (pyo3's PanicException), e.g. a stride too long for max_length
            if type(exc).__name__ != "PanicException":
                raise
            raise InputError(f"could not encode the input with these settings: {exc}") from None

    # ---------------------------------------------------------------- encoding (internal callers)
    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     add_special_tokens: bool = True, max_length: int | None = None,
                     strategy: str = "longest_first", stride: int = 0) -> list[Encoding]:
        """Unpadded encodings, truncated to `max_length` when given (`strategy`: longest_first,
        only_first or only_second). With a `stride`, the cut-off tokens are kept as overlapping
        windows in each encoding's `overflowing` list (see `encode_windows`)."""
        _check_texts(list(texts) + list(pairs or []))
        truncation = None if max_length is None else self._truncation(max_length, stride, strategy)
        inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
        return self._encode(inputs, add_special_tokens, truncation)

    def _truncation(self, max_length: int, stride: int, strategy: str) -> dict[str, Any]:
        return {"max_length": max_length, "stride": stride, "strategy": strategy, "direction": self.truncation_side}

    # ---------------------------------------------------------------- encoding (transformers' call)
    def __call__(self, text: str | Sequence[str] | Sequence[Sequence[str]],
                 text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, stride: int = 0, is_split_into_words: bool = False,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None,
                 return_tensors: str | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_overflowing_tokens: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False) -> BatchEncoding:
        """Encode one text (or pair) or a batch, with transformers' defaults: no padding, no
        truncation, Python lists.

        padding: True / "longest" pads to the longest in the batch, "max_length" to `max_length`
            (the model's limit when None). truncation: True / "longest_first", "only_first",
            "only_second"; when None it is on only if `max_length` is given without padding.
        return_tensors: "pt" (torch), "np" (numpy) or None (lists; one text gives flat lists).
        return_overflowing_tokens: the tokens truncation cuts off become extra rows, overlapping by
            `stride`, with `overflow_to_sample_mapping` saying which input each row comes from.
        """
        batched = _is_batched(text, is_split_into_words)
        texts = list(text) if batched else [text]
        pairs = None
        if text_pair is not None and (batched or text_pair):  # one text with an empty pair: no pair
            if batched and isinstance(text_pair, str):
                raise InputError("a batch of texts needs a list of text pairs, not one string")
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(texts):
                raise InputError(f"{len(texts)} texts but {len(pairs)} text pairs")
        _check_texts(texts + (pairs or []), is_split_into_words)

        truncation_setting, padding_setting = self._strategies(padding, truncation, max_length, stride,
                                                               pad_to_multiple_of, padding_side)
        inputs = list(zip(texts, pairs)) if pairs is not None else texts
        encodings = self._encode(inputs, add_special_tokens, truncation_setting, padding_setting, is_split_into_words)

        rows = [[e, *e.overflowing] if return_overflowing_tokens else [e] for e in encodings]
        flat = [e for group in rows for e in group]
        with_types = self.returns_token_type_ids if return_token_type_ids is None else return_token_type_ids
        with_mask = True if return_attention_mask is None else return_attention_mask
        fields: dict[str, Any] = {"input_ids": [e.ids for e in flat]}
        if with_types:
            fields["token_type_ids"] = [e.type_ids for e in flat]
        if with_mask:
            fields["attention_mask"] = [e.attention_mask for e in flat]
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = [e.special_tokens_mask for e in flat]
        if return_offsets_mapping:
            fields["offset_mapping"] = [e.offsets for e in flat]
        if return_length:
            fields["length"] = [len(e.ids) for e in flat]
        if return_overflowing_tokens:
            fields["overflow_to_sample_mapping"] = [n for n, group in enumerate(rows) for _ in group]
        if return_tensors is not None:
            return BatchEncoding(as_tensors(fields, return_tensors), flat)
        if not batched and not return_overflowing_tokens:  # one input: its rows unwrapped (not `length`)
            fields = {k: v[0] if v and isinstance(v[0], list) else v for k, v in fields.items()}
        return BatchEncoding(fields, flat)

    def _strategies(self, padding: bool | str, truncation: bool | str | None, max_length: int | None, stride: int,
                    pad_to_multiple_of: int | None, padding_side: str | None
                    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Backend truncation and padding settings from transformers' arguments, with its rules."""
        if padding not in _PADDING:
            raise InputError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if truncation not in _TRUNCATION:
            raise InputError("truncation must be True, False, None, 'longest_first', 'only_first', 'only_second' or "
                             f"'do_not_truncate', got {truncation!r}")
        pad, cut = _PADDING[padding], _TRUNCATION[truncation]
        if max_length is not None and padding is False and truncation is None:
            cut = "longest_first"
        if max_length is None and (pad == "max_length" or cut is not None):
            if self.model_max_length is None:
                pad = None if pad == "max_length" else pad
                cut = None
            else:
                max_length = self.model_max_length
        if pad is not None and self.pad_token_id is None:
            raise InputError("this tokenizer has no padding token, so it cannot pad; pass padding=False")
        if cut is not None and pad is not None and pad_to_multiple_of and max_length % pad_to_multiple_of:
            raise InputError(f"truncating to max_length={max_length} cannot give a multiple of "
                             f"pad_to_multiple_of={pad_to_multiple_of}")
        truncation_setting = None if cut is None else self._truncation(max_length, stride, cut)
        padding_setting = None if pad is None else {
            "direction": _side(padding_side or self.padding_side, "padding_side"), "pad_id": self.pad_token_id,
            "pad_type_id": self.pad_token_type_id, "pad_token": self.pad_token,
            "length": max_length if pad == "max_length" else None, "pad_to_multiple_of": pad_to_multiple_of}
        return truncation_setting, padding_setting

    def pad_ids(self, ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None = None
                ) -> dict[str, torch.Tensor]:
        """Right-pad already encoded rows into (B, T) tensors: input_ids, attention_mask, and
        token_type_ids when `type_ids` are given and this tokenizer returns them."""
        width = max(len(row) for row in ids)
        pad = self.pad_token_id if self.pad_token_id is not None else 0  # masked out either way
        batch = {
            "input_ids": torch.tensor([list(row) + [pad] * (width - len(row)) for row in ids]),
            "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids]),
        }
        if type_ids is not None and self.returns_token_type_ids:
            batch["token_type_ids"] = torch.tensor([list(row) + [0] * (width - len(row)) for row in type_ids])
        return batch

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               **kwargs: Any) -> list[int]:
        """The ids of one text (or pair); the other keyword arguments are those of a call."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        inputs = [text] if pair is None else [(text, pair)]
        _check_texts([text] + ([] if pair is None else [pair]))
        return self._encode(inputs, add_special_tokens)[0].tokens

    # ---------------------------------------------------------------- decoding
    def decode(self, token_ids: int | Iterable[int] | torch.Tensor, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self.backend.decode([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)
        clean = clean_up_tokenization_spaces
        return _clean_up(text) if (self.clean_up_tokenization_spaces if clean is None else clean) else text

    def batch_decode(self, sequences: Iterable[Iterable[int]] | torch.Tensor, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | None | list[int | None]:
        """Ids of tokens; a token not in the vocabulary gives the unknown token's id (None without one)."""
        if isinstance(tokens, str):
            found = self.backend.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]  # type: ignore[misc]

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike, push_to_hub: bool = False, **push_options: Any) -> Path:
        """Write tokenizer.json and tokenizer_config.json (transformers reads both); with
        push_to_hub=True, then upload the folder (push options as in PreTrainedModel.save_pretrained)."""
        from .io.atomic import save_folder

        check_push_options(push_to_hub, push_options, "save_pretrained")
        saved = save_folder(directory, *self.folder_files(directory))
        if push_to_hub:
            push_folder(saved, **push_options)
        return saved

    def folder_files(self, directory: str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
        """(file name -> writer, files to remove) of a save: tokenizer.json and tokenizer_config.json."""
        from .io.files import write_json

        config = {**self.special_tokens, "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side}
        if not self.returns_token_type_ids:
            config["model_input_names"] = ["input_ids", "attention_mask"]
        return {"tokenizer.json": lambda path: self.backend.save(str(path)),
                "tokenizer_config.json": lambda path: write_json(config, path)}, []

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "Tokenizer":
        from .tokenizer_files import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)


def _word_start(backend: Backend) -> str | None:
    """The mark a token carries when a space precedes it: "Ġ" (byte-level BPE), "▁" (SentencePiece's
    Metaspace), or None (WordPiece marks continuations, "##", instead)."""
    found = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
    kinds = {step.get("type") for step in found.get("pretokenizers", [found])}
    return "Ġ" if "ByteLevel" in kinds else "▁" if "Metaspace" in kinds else None


def _side(value: str, name: str) -> str:
    if value not in ("right", "left"):
        raise InputError(f"{name} must be 'right' or 'left', got {value!r}")
    return value


def _is_batched(text: Any, is_split_into_words: bool) -> bool:
    if isinstance(text, str):
        return False
    if not isinstance(text, (list, tuple)):
        raise InputError(f"text must be a string or a list of strings, got {type(text).__name__}")
    if is_split_into_words:
        return bool(text) and isinstance(text[0], (list, tuple))
    return True


def _check_texts(texts: Sequence[Any], is_split_into_words: bool = False) -> None:
    for n, text in enumerate(texts):
        if is_split_into_words:
            if not isinstance(text, (list, tuple)) or not all(isinstance(w, str) for w in text):
                raise InputError(f"input {n} is not a list of words (strings), as is_split_into_words=True needs")
        elif not isinstance(text, str):
            raise InputError(f"text {n} is a {type(text).__name__}, not a string")


def _clean_up(text: str) -> str:
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
