"""One declarative table per family: Hub weight names <-> compactbert module names.

The same table drives loading (Hub -> module) and saving (module -> Hub). In a template `{i}` is a
layer index, `{j}` a stacked-FFN index and `{p}` is `weight` or `bias`. Base rules name keys of the
bare encoder (the Hub stores them under `prefix` in head models); head rules never carry it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SLOTS = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "p": r"(?P<p>weight|bias)"}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)
    pattern = "".join(_SLOTS[part] if n % 2 else re.escape(part) for n, part in enumerate(parts))
    return re.compile(pattern + r"\Z")


@dataclass(frozen=True)
class KeyRule:
    hub: str
    internal: str
    # A second Hub name for a tensor another rule already names (transformers ties
    # `cls.predictions.decoder.bias` to `cls.predictions.bias`). Loading accepts it and prefers
    # it, as transformers' forward does; saving writes it only when the model is untied.
    alias: bool = False
    hub_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    internal_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hub_re", _compile(self.hub))
        object.__setattr__(self, "internal_re", _compile(self.internal))


def _translate(rules: tuple[KeyRule, ...], key: str, to_internal: bool) -> tuple[str, KeyRule] | None:
    for rule in rules:
        m = (rule.hub_re if to_internal else rule.internal_re).match(key)
        if m:
            return (rule.internal if to_internal else rule.hub).format(**m.groupdict()), rule
    return None


@dataclass(frozen=True)
class KeyTable:
    """The weight-name table of one family."""

    model_type: str
    prefix: str  # e.g. "bert." : where head models keep the encoder
    base: tuple[KeyRule, ...]
    heads: tuple[KeyRule, ...]
    hub_classes: dict[str, str]  # task -> transformers class name written to `architectures`
    decoder: str = "mlm.decoder"  # internal name of the (normally tied) decoder matrix
    word_embeddings: str = "encoder.embeddings.word.weight"

    def to_internal(self, hub_key: str) -> tuple[str, KeyRule] | None:
        """(internal name, rule) for a Hub key, with or without the base prefix; None if unknown."""
        if hub_key.startswith(self.prefix):
            return _translate(self.base, hub_key[len(self.prefix):], True)
        return _translate(self.heads, hub_key, True) or _translate(self.base, hub_key, True)

    def to_hub(self, internal_key: str, with_prefix: bool) -> list[tuple[str, KeyRule]]:
        """Every Hub name (primary first, then aliases) for an internal parameter name."""
        names = []
        for rule in self.base + self.heads:
            m = rule.internal_re.match(internal_key)
            if m:
                name = rule.hub.format(**m.groupdict())
                is_base = rule in self.base
                names.append((self.prefix + name if (is_base and with_prefix) else name, rule))
        return names


_TASK_CLASSES = {"masked_lm": "MaskedLM", "sequence_classification": "SequenceClassification",
                 "token_classification": "TokenClassification", "question_answering": "QuestionAnswering",
                 "multiple_choice": "MultipleChoice", "next_sentence": "NextSentencePrediction",
                 "pretraining": "PreTraining"}


def _hub_classes(family: str, next_sentence: bool) -> dict[str, str]:
    """task -> transformers class name, e.g. "masked_lm" -> "BertForMaskedLM"."""
    tasks = {t: n for t, n in _TASK_CLASSES.items() if next_sentence or t not in ("next_sentence", "pretraining")}
    return {"base": f"{family}Model", **{t: f"{family}For{n}" for t, n in tasks.items()}}


def _r(hub: str, internal: str, alias: bool = False) -> KeyRule:
    return KeyRule(hub, internal, alias)


_LAYER = "encoder.layer.{i}."
_OURS = "encoder.layers.{i}."

# BERT-style names, shared by BERT/BORT and MobileBERT.
_BERT_BASE = (
    _r("embeddings.word_embeddings.weight", "encoder.embeddings.word.weight"),
    _r("embeddings.position_embeddings.weight", "encoder.embeddings.position.weight"),
    _r("embeddings.token_type_embeddings.weight", "encoder.embeddings.token_type.weight"),
    _r("embeddings.LayerNorm.{p}", "encoder.embeddings.norm.{p}"),
    _r(_LAYER + "attention.self.query.{p}", _OURS + "attention.q.{p}"),
    _r(_LAYER + "attention.self.key.{p}", _OURS + "attention.k.{p}"),
    _r(_LAYER + "attention.self.value.{p}", _OURS + "attention.v.{p}"),
    _r(_LAYER + "attention.output.dense.{p}", _OURS + "attention.out.{p}"),
    _r(_LAYER + "attention.output.LayerNorm.{p}", _OURS + "attention_norm.{p}"),
    _r(_LAYER + "intermediate.dense.{p}", _OURS + "ffn.fc_in.{p}"),
    _r(_LAYER + "output.dense.{p}", _OURS + "ffn.fc_out.{p}"),
    _r(_LAYER + "output.LayerNorm.{p}", _OURS + "ffn.norm.{p}"),
    _r("pooler.dense.{p}", "pooler.dense.{p}"),
)
_BERT_HEADS = (
    _r("cls.predictions.transform.dense.{p}", "mlm.transform.{p}"),
    _r("cls.predictions.transform.LayerNorm.{p}", "mlm.norm.{p}"),
    _r("cls.predictions.decoder.weight", "mlm.decoder"),
    _r("cls.predictions.bias", "mlm.bias"),
    _r("cls.predictions.decoder.bias", "mlm.bias", alias=True),
    _r("cls.seq_relationship.{p}", "nsp.{p}"),
    _r("classifier.{p}", "classifier.{p}"),
    _r("qa_outputs.{p}", "qa_outputs.{p}"),
)

BERT = KeyTable(
    model_type="bert", prefix="bert.", base=_BERT_BASE, heads=_BERT_HEADS,
    hub_classes=_hub_classes("Bert", next_sentence=True),
)

MOBILEBERT = KeyTable(
    model_type="mobilebert", prefix="mobilebert.",
    base=_BERT_BASE + (
        _r("embeddings.embedding_transformation.{p}", "encoder.embeddings.transform.{p}"),
        _r(_LAYER + "bottleneck.input.dense.{p}", _OURS + "bottleneck_in.dense.{p}"),
        _r(_LAYER + "bottleneck.input.LayerNorm.{p}", _OURS + "bottleneck_in.norm.{p}"),
        _r(_LAYER + "bottleneck.attention.dense.{p}", _OURS + "bottleneck_qk.dense.{p}"),
        _r(_LAYER + "bottleneck.attention.LayerNorm.{p}", _OURS + "bottleneck_qk.norm.{p}"),
        _r(_LAYER + "output.bottleneck.dense.{p}", _OURS + "bottleneck_out.dense.{p}"),
        _r(_LAYER + "output.bottleneck.LayerNorm.{p}", _OURS + "bottleneck_out.norm.{p}"),
        _r(_LAYER + "ffn.{j}.intermediate.dense.{p}", _OURS + "stacked_ffns.{j}.fc_in.{p}"),
        _r(_LAYER + "ffn.{j}.output.dense.{p}", _OURS + "stacked_ffns.{j}.fc_out.{p}"),
        _r(_LAYER + "ffn.{j}.output.LayerNorm.{p}", _OURS + "stacked_ffns.{j}.norm.{p}"),
    ),
    heads=_BERT_HEADS + (_r("cls.predictions.dense.weight", "mlm.extra"),),
    hub_classes=_hub_classes("MobileBert", next_sentence=True),
)

_DLAYER = "transformer.layer.{i}."
DISTILBERT = KeyTable(
    model_type="distilbert", prefix="distilbert.",
    base=(
        _r("embeddings.word_embeddings.weight", "encoder.embeddings.word.weight"),
        _r("embeddings.position_embeddings.weight", "encoder.embeddings.position.weight"),
        _r("embeddings.LayerNorm.{p}", "encoder.embeddings.norm.{p}"),
        _r(_DLAYER + "attention.q_lin.{p}", _OURS + "attention.q.{p}"),
        _r(_DLAYER + "attention.k_lin.{p}", _OURS + "attention.k.{p}"),
        _r(_DLAYER + "attention.v_lin.{p}", _OURS + "attention.v.{p}"),
        _r(_DLAYER + "attention.out_lin.{p}", _OURS + "attention.out.{p}"),
        _r(_DLAYER + "sa_layer_norm.{p}", _OURS + "attention_norm.{p}"),
        _r(_DLAYER + "ffn.lin1.{p}", _OURS + "ffn.fc_in.{p}"),
        _r(_DLAYER + "ffn.lin2.{p}", _OURS + "ffn.fc_out.{p}"),
        _r(_DLAYER + "output_layer_norm.{p}", _OURS + "ffn.norm.{p}"),
    ),
    heads=(
        _r("vocab_transform.{p}", "mlm.transform.{p}"),
        _r("vocab_layer_norm.{p}", "mlm.norm.{p}"),
        _r("vocab_projector.weight", "mlm.decoder"),
        _r("vocab_projector.bias", "mlm.bias"),
        _r("pre_classifier.{p}", "pre_classifier.{p}"),
        _r("classifier.{p}", "classifier.{p}"),
        _r("qa_outputs.{p}", "qa_outputs.{p}"),
    ),
    hub_classes=_hub_classes("DistilBert", next_sentence=False),
)

KEY_TABLES: dict[str, KeyTable] = {t.model_type: t for t in (BERT, MOBILEBERT, DISTILBERT)}
