"""The Auto factories, as transformers names them: one per task, each building the task model whose
family comes from the checkpoint's config (`AutoModelForMaskedLM.from_pretrained("bort")`)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ..config import BaseConfig
from ..errors import ConfigError
from .modeling import EncoderModel, ForMaskedLM, PreTrainedModel
from .task_models import (
    ForMultipleChoice, ForNextSentencePrediction, ForPreTraining, ForQuestionAnswering, ForSequenceClassification,
    ForTokenClassification,
)


class _Auto:
    """Factory namespace: `from_pretrained` / `from_config` build `model_class`."""

    model_class: ClassVar[type[PreTrainedModel]]

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is a factory: use {type(self).__name__}.from_pretrained(...)")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedModel:
        return cls.model_class.from_pretrained(name_or_path, **kwargs)

    @classmethod
    def from_config(cls, config: BaseConfig, **kwargs: Any) -> PreTrainedModel:
        return cls.model_class.from_config(config, **kwargs)


class AutoModel(_Auto):
    model_class = EncoderModel


class AutoModelForMaskedLM(_Auto):
    model_class = ForMaskedLM


class AutoModelForSequenceClassification(_Auto):
    model_class = ForSequenceClassification


class AutoModelForTokenClassification(_Auto):
    model_class = ForTokenClassification


class AutoModelForQuestionAnswering(_Auto):
    model_class = ForQuestionAnswering


class AutoModelForMultipleChoice(_Auto):
    model_class = ForMultipleChoice


class AutoModelForNextSentencePrediction(_Auto):
    model_class = ForNextSentencePrediction


class AutoModelForPreTraining(_Auto):
    model_class = ForPreTraining


def task_model_class(config: BaseConfig) -> type[PreTrainedModel]:
    """The model class a saved config's `architectures` names (its transformers class name)."""
    from ..registry import get_family

    family = get_family(config.model_type)
    saved = (config.architectures or [None])[0]
    for cls in (auto.model_class for auto in _Auto.__subclasses__()):
        if family is not None and family.key_table.hub_classes.get(cls.task) == saved:
            return cls
    raise ConfigError(f"config.json names architecture {saved!r}, which compactbert has no class for "
                      f"({config.model_type})")
