"""Per-family configuration dataclasses that read and write the Hub's `config.json`.

Field names are the Hub's own, so a `config.json` round-trips unchanged: fields this library does
not know are kept in `extra` and written back. Each family config also describes itself as an
`EncoderSpec`, the family-neutral description that the shared encoder core is built from.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .activations import ACTIVATIONS
from .errors import ConfigError

# Keys transformers writes that describe the saving run, not the model: never carried over.
_VOLATILE_KEYS = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "model_type"}


@dataclass(frozen=True)
class EncoderSpec:
    """Family-neutral description of one encoder; the only thing the core layers read."""

    vocab_size: int
    hidden_size: int  # width of the residual stream between layers
    embedding_size: int  # width of the word-embedding table
    inner_size: int  # width inside a layer (MobileBERT's bottleneck; else hidden_size)
    num_layers: int
    num_heads: int
    ffn_size: int  # intermediate width of each feed-forward network
    num_ffn: int  # feed-forward networks per layer (MobileBERT stacks several)
    activation: str
    norm: str  # "layer_norm" or "no_norm"
    norm_eps: float
    embedding_norm_eps: float  # MobileBERT builds two norms with torch's default eps
    final_ffn_norm_eps: float
    max_positions: int
    type_vocab_size: int  # 0: the family has no token types
    trigram_input: bool
    embedding_transform: bool  # a Linear from the (trigram) word features to hidden_size
    bottleneck: bool
    bottleneck_attention: bool  # q, k, v all come from the input bottleneck
    shared_qk_bottleneck: bool  # q and k share a second bottleneck, v is the layer input
    hidden_dropout: float
    attention_dropout: float
    pad_token_id: int
    initializer_range: float
    sinusoidal_positions: bool = False  # initialise positions as sinusoids (a stored table still wins)

    @property
    def value_input_size(self) -> int:
        """Width of the tensor the value projection reads."""
        return self.inner_size if self.bottleneck_attention else self.hidden_size


def _check(condition: bool, message: str) -> None:
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
        if self.id2label is not None:
            try:
                self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            except (AttributeError, ValueError) as exc:
                raise ConfigError(f"id2label must map integer ids to label names, got {self.id2label!r}") from exc
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        _check(self.vocab_size > 0, f"vocab_size must be positive, got {self.vocab_size}")
        _check(self.max_position_embeddings > 0,
               f"max_position_embeddings must be positive, got {self.max_position_embeddings}")
        _check(0 <= self.pad_token_id < self.vocab_size,
               f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        _check(self.problem_type in (None, "single_label_classification", "multi_label_classification", "regression"),
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
    has_next_sentence: ClassVar[bool] = True  # a next-sentence head exists in this family
    layers_field: ClassVar[str] = "num_hidden_layers"  # the config field that counts encoder layers

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


@dataclass
class BertConfig(BaseConfig):
    """BERT geometry, as used by BORT (`amazon/bort`) and plain BERT checkpoints."""

    model_type: ClassVar[str] = "bert"
    pooler: ClassVar[str | None] = "tanh"
    hidden_size: int = 768  # width of every layer
    num_hidden_layers: int = 12  # encoder layers
    num_attention_heads: int = 12  # heads per attention layer
    intermediate_size: int = 3072  # feed-forward width (BORT: 768, smaller than hidden)
    hidden_act: str = "gelu"  # feed-forward and MLM-transform activation
    hidden_dropout_prob: float = 0.1  # dropout after embeddings and each sublayer
    attention_probs_dropout_prob: float = 0.1  # dropout on attention weights
    type_vocab_size: int = 2  # token-type (segment) rows; BORT has 1
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon (BORT: 1e-5)
    position_embedding_type: str = "absolute"  # only learned absolute positions exist in these checkpoints
    classifier_dropout: float | None = None  # task-head dropout; None: hidden_dropout_prob

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_geometry(self.hidden_size, self.num_attention_heads, self.num_hidden_layers, self.intermediate_size)
        _check_activation(self.hidden_act, "hidden_act")
        _check(self.type_vocab_size >= 1, f"type_vocab_size must be at least 1 for BERT, got {self.type_vocab_size}")
        _check(self.position_embedding_type == "absolute",
               f"position_embedding_type {self.position_embedding_type!r} is not supported; "
               "only 'absolute' (learned positions) is")

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, embedding_size=self.hidden_size,
            inner_size=self.hidden_size, num_layers=self.num_hidden_layers, num_heads=self.num_attention_heads,
            ffn_size=self.intermediate_size, num_ffn=1, activation=self.hidden_act, norm="layer_norm",
            norm_eps=self.layer_norm_eps, embedding_norm_eps=self.layer_norm_eps,
            final_ffn_norm_eps=self.layer_norm_eps, max_positions=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, trigram_input=False, embedding_transform=False,
            bottleneck=False, bottleneck_attention=False, shared_qk_bottleneck=False,
            hidden_dropout=self.hidden_dropout_prob, attention_dropout=self.attention_probs_dropout_prob,
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
        )

    @classmethod
    def tiny(cls, **changes: Any) -> "BertConfig":
        """A small config for tests: every code path, little arithmetic."""
        base = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
        return cls(**{**base, **changes})

    @classmethod
    def bort(cls, **changes: Any) -> "BertConfig":
        """The `amazon/bort` geometry."""
        base = dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=4, num_attention_heads=8,
                    intermediate_size=768, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
        return cls(**{**base, **changes})


BortConfig = BertConfig


@dataclass
class MobileBertConfig(BaseConfig):
    """MobileBERT: bottleneck layers, NoNorm, trigram embeddings, stacked feed-forward networks."""

    model_type: ClassVar[str] = "mobilebert"
    hidden_size: int = 512  # width of the residual stream between layers
    num_hidden_layers: int = 24  # encoder layers
    num_attention_heads: int = 4  # heads per attention layer
    intermediate_size: int = 512  # feed-forward width
    hidden_act: str = "relu"  # feed-forward and MLM-transform activation
    hidden_dropout_prob: float = 0.0  # dropout after embeddings and sublayers
    attention_probs_dropout_prob: float = 0.1  # dropout on attention weights
    type_vocab_size: int = 2  # token-type (segment) rows
    layer_norm_eps: float = 1e-12  # epsilon of the real LayerNorms
    embedding_size: int = 128  # width of the word-embedding table
    trigram_input: bool = True  # concatenate [next, current, previous] word vectors
    use_bottleneck: bool = True  # narrow the layer to intra_bottleneck_size inside
    intra_bottleneck_size: int = 128  # width inside a layer
    use_bottleneck_attention: bool = False  # q, k and v all read the input bottleneck
    key_query_shared_bottleneck: bool = True  # q and k share their own bottleneck
    num_feedforward_networks: int = 4  # feed-forward networks stacked in each layer
    normalization_type: str = "no_norm"  # "no_norm" (x * w + b) or "layer_norm"
    classifier_activation: bool = True  # pooler is tanh(dense(h[:, 0])); false: raw first token
    classifier_dropout: float | None = None  # task-head dropout; None: hidden_dropout_prob

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_geometry(self.true_hidden_size, self.num_attention_heads, self.num_hidden_layers,
                        self.intermediate_size)
        _check_activation(self.hidden_act, "hidden_act")
        _check(self.normalization_type in ("no_norm", "layer_norm"),
               f"normalization_type must be 'no_norm' or 'layer_norm', got {self.normalization_type!r}")
        _check(self.num_feedforward_networks >= 1,
               f"num_feedforward_networks must be at least 1, got {self.num_feedforward_networks}")
        _check(self.type_vocab_size >= 1, f"type_vocab_size must be at least 1, got {self.type_vocab_size}")
        _check(0 < self.embedding_size <= self.hidden_size,
               f"embedding_size ({self.embedding_size}) must be positive and at most hidden_size "
               f"({self.hidden_size}): the masked-LM decoder splits hidden_size into the two")
        if self.use_bottleneck and not (self.use_bottleneck_attention or self.key_query_shared_bottleneck):
            _check(self.intra_bottleneck_size == self.hidden_size,
                   "with use_bottleneck but neither use_bottleneck_attention nor key_query_shared_bottleneck, "
                   "attention reads the full-width input, so intra_bottleneck_size must equal hidden_size "
                   f"({self.intra_bottleneck_size} != {self.hidden_size}); enable one of the two flags")

    @property
    def pooler(self) -> str:  # type: ignore[override]
        return "tanh" if self.classifier_activation else "first_token"

    @property
    def true_hidden_size(self) -> int:
        """Width inside a layer: derived, never read from the file."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, embedding_size=self.embedding_size,
            inner_size=self.true_hidden_size, num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads, ffn_size=self.intermediate_size,
            num_ffn=self.num_feedforward_networks, activation=self.hidden_act, norm=self.normalization_type,
            norm_eps=self.layer_norm_eps, embedding_norm_eps=1e-5, final_ffn_norm_eps=1e-5,
            max_positions=self.max_position_embeddings, type_vocab_size=self.type_vocab_size,
            trigram_input=self.trigram_input,
            embedding_transform=self.trigram_input or self.embedding_size != self.hidden_size,
            bottleneck=self.use_bottleneck,
            bottleneck_attention=self.use_bottleneck and self.use_bottleneck_attention,
            shared_qk_bottleneck=(self.use_bottleneck and self.key_query_shared_bottleneck
                                  and not self.use_bottleneck_attention),
            hidden_dropout=self.hidden_dropout_prob, attention_dropout=self.attention_probs_dropout_prob,
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
        )

    @classmethod
    def tiny(cls, **changes: Any) -> "MobileBertConfig":
        base = dict(vocab_size=99, hidden_size=32, embedding_size=16, intra_bottleneck_size=16,
                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                    num_feedforward_networks=3, max_position_embeddings=64, classifier_activation=False)
        return cls(**{**base, **changes})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["true_hidden_size"] = self.true_hidden_size  # transformers reads it; derived, so always written fresh
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MobileBertConfig":
        data = {k: v for k, v in data.items() if k != "true_hidden_size"}
        return super().from_dict(data)  # type: ignore[return-value]


def _alias(name: str) -> property:
    """A second name for the field `name`, read and written through."""
    return property(lambda self: getattr(self, name), lambda self, value: setattr(self, name, value),
                    doc=f"the same as `{name}`")


@dataclass
class DistilBertConfig(BaseConfig):
    """DistilBERT: six BERT-width layers, no token types, no pooler."""

    model_type: ClassVar[str] = "distilbert"
    dim: int = 768  # width of every layer
    n_layers: int = 6  # encoder layers
    n_heads: int = 12  # heads per attention layer
    hidden_dim: int = 3072  # feed-forward width
    activation: str = "gelu"  # feed-forward and MLM-transform activation
    dropout: float = 0.1  # dropout after embeddings and sublayers
    attention_dropout: float = 0.1  # dropout on attention weights
    sinusoidal_pos_embds: bool = False  # positions initialised as sinusoids (still stored and loaded)
    qa_dropout: float = 0.1  # dropout before the QA head
    seq_classif_dropout: float = 0.2  # dropout in the sequence-classification head
    sentence_head: ClassVar[str] = "pre_classifier"
    has_next_sentence: ClassVar[bool] = False
    layers_field: ClassVar[str] = "n_layers"

    # transformers' names for the geometry, as in its DistilBertConfig.attribute_map
    hidden_size = _alias("dim")
    num_hidden_layers = _alias("n_layers")
    num_attention_heads = _alias("n_heads")
    intermediate_size = _alias("hidden_dim")

    def head_dropout(self, task: str) -> float:
        return {"question_answering": self.qa_dropout, "token_classification": self.dropout}.get(
            task, self.seq_classif_dropout)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_geometry(self.dim, self.n_heads, self.n_layers, self.hidden_dim)
        _check_activation(self.activation, "activation")

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.dim, embedding_size=self.dim, inner_size=self.dim,
            num_layers=self.n_layers, num_heads=self.n_heads, ffn_size=self.hidden_dim, num_ffn=1,
            activation=self.activation, norm="layer_norm", norm_eps=1e-12, embedding_norm_eps=1e-12,
            final_ffn_norm_eps=1e-12, max_positions=self.max_position_embeddings, type_vocab_size=0,
            trigram_input=False, embedding_transform=False, bottleneck=False, bottleneck_attention=False,
            shared_qk_bottleneck=False, hidden_dropout=self.dropout, attention_dropout=self.attention_dropout,
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
            sinusoidal_positions=self.sinusoidal_pos_embds,
        )

    @classmethod
    def tiny(cls, **changes: Any) -> "DistilBertConfig":
        base = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
        return cls(**{**base, **changes})


def _check_geometry(width: int, heads: int, layers: int, ffn: int) -> None:
    _check(width > 0 and heads > 0 and layers > 0 and ffn > 0,
           f"sizes must be positive (width {width}, heads {heads}, layers {layers}, feed-forward {ffn})")
    _check(width % heads == 0, f"the attention width {width} is not divisible by the number of heads {heads}")


def _check_activation(name: str, field_name: str) -> None:
    _check(name in ACTIVATIONS, f"{field_name} {name!r} is not supported; choose one of {', '.join(sorted(ACTIVATIONS))}")


CONFIG_CLASSES: dict[str, type[BaseConfig]] = {
    c.model_type: c for c in (BertConfig, MobileBertConfig, DistilBertConfig)
}


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); re-download or fix the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


class AutoConfig:
    """Picks the config class from the `model_type` field of `config.json`."""

    @staticmethod
    def for_model_type(model_type: str, **fields: Any) -> BaseConfig:
        """A config of the family named `model_type`, with the given fields."""
        try:
            cls = CONFIG_CLASSES[model_type]
        except KeyError:
            raise ConfigError(
                f"model_type {model_type!r} is not supported; compactbert handles {', '.join(sorted(CONFIG_CLASSES))}"
            ) from None
        return cls(**fields)

    @staticmethod
    def from_dict(data: dict[str, Any], source: str = "config") -> BaseConfig:
        model_type = data.get("model_type")
        if model_type is None:
            raise ConfigError(f"{source} has no 'model_type' field; compactbert cannot tell which family it is")
        if model_type not in CONFIG_CLASSES:
            raise ConfigError(
                f"{source} has model_type {model_type!r}, which compactbert does not support; "
                f"supported: {', '.join(sorted(CONFIG_CLASSES))}"
            )
        return CONFIG_CLASSES[model_type].from_dict(data)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> BaseConfig:
        """Read `config.json` from a local folder, or a Hub repository by id or alias."""
        from .hub import resolve_file

        path = resolve_file(name_or_path, "config.json", **hub_kwargs)
        return AutoConfig.from_dict(_read_json(path), source=str(path))
