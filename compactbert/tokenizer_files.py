"""Building a `Tokenizer` from checkpoint files: `AutoTokenizer.from_pretrained` reads
`tokenizer.json` when the checkpoint has one (its settings win), else builds the backend from
`vocab.txt` or `vocab.json` + `merges.txt` with the options in `tokenizer_config.json`, exactly as
the reference tokenizers do, so ids are identical.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, Unigram, WordPiece

from .io.files import read_json
from .errors import CheckpointError, ConfigError
from .io.hub import find_file, split_hub_kwargs
from .registry import get_family
from .tokenization import Tokenizer

_MAX_TOKENIZER_BYTES = 512 * 2**20  # the largest real tokenizer.json files are about 30 MiB
_UNSET_MAX_LENGTH = 10**20  # transformers writes int(1e30) when a checkpoint sets no limit

_WORDPIECE_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}
_BPE_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                 "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
_SENTENCEPIECE_SPECIALS = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
                           "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"}  # ALBERT's


@dataclass
class _Specials:
    tokens: dict[str, str]
    mask_lstrip: bool


def _special_tokens(defaults: dict[str, str], *sources: dict[str, Any]) -> _Specials:
    tokens = dict(defaults)
    mask_lstrip = defaults is not _WORDPIECE_SPECIALS  # RoBERTa's <mask> and ALBERT's [MASK] take the space
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


def _sentencepiece(model_path: Path, options: dict[str, Any], specials: _Specials) -> Backend:
    """A SentencePiece Unigram model (`spiece.model`) as ALBERT's tokenizer class reads it: quotes
    normalised, NFKD with accents stripped (unless keep_accents), lower case (do_lower_case), the
    model's own character map, whitespace split then "▁" word starts, [CLS] A [SEP] (B [SEP]).

    The protobuf is parsed by the `sentencepiece` package's own schema (an optional dependency: the
    format is sentencepiece's, and so is the reader); the pipeline around it is built here with
    `tokenizers`, as transformers' converter builds it."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise CheckpointError(f"{model_path} is a SentencePiece model; reading it needs the sentencepiece "
                              "package (pip install 'compactbert[sentencepiece]'), or give the folder a "
                              "tokenizer.json") from None
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_path.read_bytes())
    except Exception as exc:  # the protobuf runtime's DecodeError
        raise CheckpointError(f"{model_path} is not a readable SentencePiece model ({exc})") from exc
    if proto.trainer_spec.model_type != 1:
        raise CheckpointError(f"{model_path} is a SentencePiece {'BPE' if proto.trainer_spec.model_type == 2 else ''} "
                              "model; compactbert reads Unigram models (ALBERT's)")
    backend = Backend(Unigram([(p.piece, p.score) for p in proto.pieces], proto.trainer_spec.unk_id, False))
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not options.get("keep_accents", False):
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if options.get("do_lower_case", True):
        steps.append(normalizers.Lowercase())
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokens = specials.tokens
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False,
                                           lstrip=specials.mask_lstrip and name == "mask_token")
                                for name, token in tokens.items()])
    cls_token, sep_token = tokens["cls_token"], tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0", pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=[(cls_token, backend.token_to_id(cls_token)), (sep_token, backend.token_to_id(sep_token))])
    return backend


class AutoTokenizer:
    """Builds a `Tokenizer` from a checkpoint folder or Hub repository."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is a factory: use AutoTokenizer.from_pretrained(...)")

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, use_fast: bool = True, padding_side: str | None = None,
                        truncation_side: str | None = None, model_max_length: int | None = None,
                        **kwargs: Any) -> Tokenizer:
        """use_fast is accepted for transformers' callers: there is one implementation, on the
        `tokenizers` library, whose ids equal both of transformers' tokenizers. padding_side,
        truncation_side and model_max_length override the checkpoint's settings."""
        hub, rest = split_hub_kwargs(kwargs)
        if rest:
            raise TypeError(f"AutoTokenizer.from_pretrained() got unexpected arguments: {', '.join(rest)}")

        def find(filename: str) -> Path | None:
            return find_file(name_or_path, filename, **hub)

        options = read_json(find("tokenizer_config.json"))
        model_config = read_json(find("config.json"))
        options = {**read_json(find("special_tokens_map.json")), **options}
        tokenizer_class = str(options.get("tokenizer_class") or model_config.get("tokenizer_class") or "")
        model_type = model_config.get("model_type", "")

        tokenizer_json = find("tokenizer.json")
        if tokenizer_json is not None:
            size = tokenizer_json.stat().st_size
            if size > _MAX_TOKENIZER_BYTES:
                raise CheckpointError(f"{tokenizer_json} is {size / 2**20:.0f} MiB; tokenizer files are at most tens of "
                                      f"MiB, and compactbert refuses those over {_MAX_TOKENIZER_BYTES // 2**20} MiB")
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
            elif find("spiece.model") is not None:
                byte_level = False
                specials = _special_tokens(_SENTENCEPIECE_SPECIALS, options)
                backend = _sentencepiece(find("spiece.model"), options, specials)
            else:
                vocab_json, merges = find("vocab.json"), find("merges.txt")
                if vocab_json is None or merges is None:
                    raise CheckpointError(
                        f"no tokenizer files in {name_or_path}: expected tokenizer.json, vocab.txt, "
                        "spiece.model, or vocab.json with merges.txt")
                byte_level = True
                specials = _special_tokens(_BPE_SPECIALS, options)
                backend = _byte_level_bpe(vocab_json, merges, options, specials)
            tokens = specials.tokens

        max_length = model_max_length or options.get("model_max_length")
        if not isinstance(max_length, int) or max_length >= _UNSET_MAX_LENGTH:
            max_length = _model_limit(model_config)
        if "model_input_names" in options:
            type_ids = "token_type_ids" in options["model_input_names"]
        else:
            family = get_family(model_type)
            type_ids = not (byte_level or "Roberta" in tokenizer_class or "DistilBert" in tokenizer_class
                            or (family is not None and not family.token_types))
        return Tokenizer(backend, tokens, max_length, type_ids,
                         clean_up_tokenization_spaces=bool(options.get("clean_up_tokenization_spaces", False)),
                         byte_level=byte_level, padding_side=padding_side or options.get("padding_side", "right"),
                         truncation_side=truncation_side or options.get("truncation_side", "right"))


def _model_limit(model_config: dict[str, Any]) -> int | None:
    """The longest input the folder's model takes, from its config.json (None without one)."""
    family = get_family(model_config.get("model_type", ""))
    if family is not None:
        try:
            return family.config_class.from_dict(model_config).max_input_length
        except (ConfigError, TypeError, ValueError):
            pass  # a config the model loader will reject with its own message
    return model_config.get("max_position_embeddings")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "spiece.model")
