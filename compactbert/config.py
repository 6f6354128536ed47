"""Per-family configuration dataclasses that read and write the Hub's `config.json`.

Field names are the Hub's own, so a `config.json` round-trips unchanged: fields this library does
not know are kept in `extra` and written back. Each family config also describes itself as an
`EncoderSpec`, the family-neutral description that the shared encoder core is built from.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .nn.activations import ACTIVATIONS
from .nn.spec import EncoderSpec
from .errors import ConfigError
from .registry import get_family, model_types

# Keys transformers writes that describe the saving run, not the model: never carried over.
_VOLATILE_KEYS = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "model_type"}


def _accepts(kind: Any, value: Any) -> bool:
    """Whether `value` fits the annotation `kind` (bool is not an int here; an int is a float)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is not None:  # dict[...], list[...]
        return isinstance(value, origin)
    return isinstance(value, kind) if isinstance(kind, type) else True


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "extra")


def _check_types(config: Any) -> None:
    """A ConfigError naming the field when a value has the wrong type ("hidden_size": "768")."""
    for name, kind in _field_types(type(config)):
        value = getattr(config, name)
        if not _accepts(kind, value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ConfigError(f"{type(config).__name__}.{name} must be {_describe(kind)}, got {shown} "
                              f"({type(value).__name__})")


def _describe(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "an object",
             list: "a list", type(None): "null"}
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    return names.get(typing.get_origin(kind) or kind, str(kind))


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class BaseConfig:
    """Fields every family shares. Subclasses add their own and set `model_type`."""

    model_type: ClassVar[str] = ""
    # Hub keys whose JSON name differs from this library's attribute: none by default.
    vocab_size: int = 30522  # rows of the word-embedding table
    max_position_embeddings: int = 512  # longest input, in tokens
    pad_token_id: int = 0  # id of the padding token (padding itself comes from attention_mask)
    initializer_range: float = 0.02  # std of the normal init for new weights
    tie_word_embeddings: bool = True  # masked-LM decoder shares the word-embedding matrix
    id2label: dict[int, str] | None = None  # label names of a task head
    label2id: dict[str, int] | None = None  # inverse of id2label
    problem_type: str | None = None  # "single_label_classification", "multi_label_classification", "regression"
    architectures: list[str] | None = None  # transformers class names the checkpoint was saved from
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json fields, kept for round trips

    def __post_init__(self) -> None:
        _check_types(self)
        if self.id2label is not None:
            try:
                self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            except (AttributeError, ValueError) as exc:
                raise ConfigError(f"id2label must map integer ids to label names, got {self.id2label!r}") from exc
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        check(self.vocab_size > 0, f"vocab_size must be positive, got {self.vocab_size}")
        check(self.max_position_embeddings > 0,
               f"max_position_embeddings must be positive, got {self.max_position_embeddings}")
        check(0 <= self.pad_token_id < self.vocab_size,
               f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        check(self.problem_type in (None, "single_label_classification", "multi_label_classification", "regression"),
               f"unknown problem_type {self.problem_type!r}; choose single_label_classification, "
               "multi_label_classification or regression")

    # ------------------------------------------------------------------ label helpers
    @property
    def num_labels(self) -> int:
        """Number of task labels (2 when the config names none, as in transformers)."""
        return len(self.id2label) if self.id2label else 2

    @num_labels.setter
    def num_labels(self, count: int) -> None:
        """Setting a new count names the labels LABEL_0.. as transformers does (same count: kept)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"num_labels must be a positive integer, got {count!r}")
        if self.id2label is None or len(self.id2label) != count:
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}
            self.label2id = {name: i for i, name in self.id2label.items()}

    def label_name(self, index: int) -> str:
        """The name of label `index`: from id2label, else LABEL_{index} as in transformers."""
        return self.id2label[index] if self.id2label else f"LABEL_{index}"

    # ------------------------------------------------------------------ JSON round trip
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseConfig":
        """Build from a parsed `config.json`; unknown keys go to `extra`."""
        data = dict(data)
        found = data.get("model_type", cls.model_type)
        if found != cls.model_type:
            raise ConfigError(f"{cls.__name__} reads model_type {cls.model_type!r}, this config says {found!r}")
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        if "num_labels" in data and "id2label" not in known:
            known["id2label"] = {i: f"LABEL_{i}" for i in range(int(data["num_labels"]))}
        extra = {k: v for k, v in data.items() if k not in _VOLATILE_KEYS and k != "num_labels"}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content, in the Hub's field names."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "id2label":
                value = {str(k): v for k, v in value.items()}
            out[f.name] = value
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BaseConfig":
        return cls.from_dict(_read_json(path))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> "BaseConfig":
        """Read `config.json` from a local folder or a Hub repository."""
        config = AutoConfig.from_pretrained(name_or_path, **hub_kwargs)
        if not isinstance(config, cls):
            raise ConfigError(f"{name_or_path} holds a {config.model_type!r} model, not {cls.model_type!r}")
        return config

    def replace(self, **changes: Any) -> "BaseConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # What differs between families above the encoder; each family overrides these.
    pooler: ClassVar[str | None] = None  # "tanh", "first_token" or None (no pooler)
    # Sentence vector of classification heads: "pooler", or DistilBERT's "pre_classifier" (+ ReLU).
    sentence_head: ClassVar[str] = "pooler"
    layers_field: ClassVar[str] = "num_hidden_layers"  # the config field that counts encoder layers

    @property
    def max_input_length(self) -> int:
        """The longest input in tokens (RoBERTa: max_position_embeddings less the rows below its first
        position id)."""
        return self.encoder_spec().usable_positions

    @property
    def mlm_activation(self) -> str:
        """The activation of the masked-LM head's transform (the encoder's, unless a family fixes it)."""
        return self.encoder_spec().activation

    # The sentence-pair task of pretraining: "next_sentence" (BERT) or "sentence_order" (ALBERT).
    pair_task: ClassVar[str] = "next_sentence"

    @property
    def next_sentence_labels(self) -> int:
        """Outputs of the sentence-pair head of pretraining (BERT's next-sentence head: always 2)."""
        return 2

    def sentence_head_for(self, task: str) -> str:
        """How a classification head of `task` reads the sequence: "pooler", DistilBERT's
        "pre_classifier", or RoBERTa's "classification_head" (dense, tanh and out_proj on h[:, 0])."""
        return self.sentence_head

    def with_layers(self, count: int) -> "BaseConfig":
        """A copy with `count` encoder layers."""
        return self.replace(**{self.layers_field: count})

    def head_dropout(self, task: str) -> float:
        """Dropout before a task head, as each family's reference implementation sets it."""
        if task == "question_answering":
            return 0.0
        value = getattr(self, "classifier_dropout", None)
        return value if value is not None else getattr(self, "hidden_dropout_prob", 0.1)

    def encoder_spec(self) -> EncoderSpec:  # pragma: no cover - every family overrides it
        raise NotImplementedError


def alias(name: str) -> property:
    """A second name for the field `name`, read and written through."""
    return property(lambda self: getattr(self, name), lambda self, value: setattr(self, name, value),
                    doc=f"the same as `{name}`")


def check_geometry(width: int, heads: int, layers: int, ffn: int) -> None:
    check(width > 0 and heads > 0 and layers > 0 and ffn > 0,
           f"sizes must be positive (width {width}, heads {heads}, layers {layers}, feed-forward {ffn})")
    check(width % heads == 0, f"the attention width {width} is not divisible by the number of heads {heads}")


def check_activation(name: str, field_name: str) -> None:
    check(name in ACTIVATIONS,
          f"{field_name} {name!r} is not supported; choose one of {', '.join(sorted(ACTIVATIONS))}")


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); re-download or fix the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def config_class(model_type: Any, source: str = "config") -> type[BaseConfig]:
    """The config class registered for `model_type`, or a ConfigError listing the supported ones."""
    family = get_family(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ConfigError(f"{source}: model_type {model_type!r} is not supported; supported: "
                          f"{', '.join(sorted(model_types()))}")
    return family.config_class


class AutoConfig:
    """Picks the config class from the `model_type` field of `config.json`."""

    @staticmethod
    def for_model_type(model_type: str, **fields: Any) -> BaseConfig:
        """A config of the family named `model_type`, with the given fields."""
        return config_class(model_type, "for_model_type")(**fields)

    @staticmethod
    def from_dict(data: dict[str, Any], source: str = "config") -> BaseConfig:
        model_type = data.get("model_type")
        if model_type is None:
            raise ConfigError(f"{source} has no 'model_type' field; compactbert cannot tell which family it is")
        try:
            return config_class(model_type, source).from_dict(data)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> BaseConfig:
        """Read `config.json` from a local folder, or a Hub repository by id or alias."""
        from .io.hub import resolve_file

        path = resolve_file(name_or_path, "config.json", **hub_kwargs)
        return AutoConfig.from_dict(_read_json(path), source=str(path))
