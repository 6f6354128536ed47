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


def hub_classes(family: str, without: tuple[str, ...] = ()) -> dict[str, str]:
    """task -> transformers class name, e.g. "masked_lm" -> "BertForMaskedLM", for every head
    transformers has for the family (all but the tasks named in `without`)."""
    tasks = {t: n for t, n in _TASK_CLASSES.items() if t not in without}
    return {"base": f"{family}Model", **{t: f"{family}For{n}" for t, n in tasks.items()}}


def rule(hub: str, internal: str, alias: bool = False) -> KeyRule:
    return KeyRule(hub, internal, alias)


#END
