"""Pipelines: text in, predictions out, following transformers' conventions.

`pipeline(task, model=...)` builds one from a model name, folder or instance.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from ..devices import resolve_device
from ..errors import InputError
from ..io.hub import split_hub_kwargs
from ..models.modeling import EncoderModel, ForMaskedLM, PreTrainedModel
from ..models.task_models import ForQuestionAnswering, ForSequenceClassification, ForTokenClassification
from ..tasks.fill_mask import MASK_SPELLINGS
from ..tokenization import Tokenizer
from ..tokenizer_files import AutoTokenizer
from .base import Pipeline
from .classification import FeatureExtractionPipeline, SentenceEmbeddingPipeline, TextClassificationPipeline
from .fill_mask import FillMaskPipeline
from .question_answering import QuestionAnsweringPipeline
from .token_classification import TokenClassificationPipeline

# task -> (pipeline class, model class it loads)
TASKS: dict[str, tuple[type[Pipeline], type[PreTrainedModel]]] = {
    "fill-mask": (FillMaskPipeline, ForMaskedLM),
    "text-classification": (TextClassificationPipeline, ForSequenceClassification),
    "sentiment-analysis": (TextClassificationPipeline, ForSequenceClassification),
    "feature-extraction": (FeatureExtractionPipeline, EncoderModel),
    "sentence-embedding": (SentenceEmbeddingPipeline, EncoderModel),
    "token-classification": (TokenClassificationPipeline, ForTokenClassification),
    "ner": (TokenClassificationPipeline, ForTokenClassification),
    "question-answering": (QuestionAnsweringPipeline, ForQuestionAnswering),
}


def pipeline(task: str, model: str | os.PathLike | PreTrainedModel, tokenizer: str | Tokenizer | None = None,
             dtype: torch.dtype | str | None = None, device: str | int | torch.device | None = None,
             batch_size: int = 32, quantize: str | None = None, allow_untrained_head: bool = False,
             **kwargs: Any) -> Any:
    """Build a pipeline for `task` from a model name, folder or instance.

    Tasks: fill-mask, text-classification (alias sentiment-analysis), feature-extraction (token
    vectors, as transformers), sentence-embedding (pooled vectors),
    token-classification (alias ner), question-answering.
    Hub options (revision, cache_dir, local_files_only, token) are passed to every download.
    quantize="int8": int8 inference on the CPU (per-channel weights, per-token activations; see
    PreTrainedModel.quantize). dtype=torch.bfloat16 computes in bf16 (softmaxes and losses in float32),
    fast where the CPU has native bf16 (`compactbert env`).
    allow_untrained_head (fill-mask): run a checkpoint that has no masked-LM head, with a random one.
    device: as transformers' pipeline takes it: -1 or "cpu", a CUDA index (0), "cuda:1", "auto", a
    torch.device; a model loaded by name goes straight there.
    """
    target = None if device is None else resolve_device(device)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; available: {', '.join(sorted(TASKS))}")
    pipeline_class, model_class = TASKS[task]
    hub, rest = split_hub_kwargs(kwargs)
    if rest:
        raise TypeError(f"pipeline() got unexpected arguments: {', '.join(rest)}")
    if isinstance(model, PreTrainedModel):
        if not isinstance(model, model_class):
            raise InputError(f"{task} needs a {model_class.__name__}, got a {type(model).__name__}")
        if tokenizer is None:
            raise InputError("pass tokenizer=... (a name, folder or Tokenizer) along with a model instance")
        loaded = model.quantize(quantize) if quantize else model
    options = {"allow_untrained_head": True} if allow_untrained_head else {}
    if options and pipeline_class is not FillMaskPipeline:
        raise TypeError(f"allow_untrained_head applies to fill-mask, not {task}")
    with _held_warnings(logging.getLogger("compactbert")) as held:
        # The load report's warnings are shown once the pipeline accepted the model; when it refuses
        # it (fill-mask without a masked-LM head), its error says all there is to say.
        if not isinstance(model, PreTrainedModel):
            loaded = model_class.from_pretrained(model, dtype=dtype, quantize=quantize, device=target, **hub)
            tokenizer = tokenizer if tokenizer is not None else str(model)
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub)
        if target is not None:
            loaded = loaded.to(target)
        built = pipeline_class(loaded, tokenizer, batch_size=batch_size, **options)
    for record in held:
        logging.getLogger(record.name).handle(record)
    return built


@contextmanager
def _held_warnings(logger: logging.Logger) -> Iterator[list[logging.LogRecord]]:
    """Collect the records `logger` and its children emit inside the block instead of showing them."""
    held: list[logging.LogRecord] = []

    class Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            held.append(record)
            return False

    hold = Hold()
    loggers = [logger] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                          if name.startswith(logger.name + ".")]
    for each in loggers:
        each.addFilter(hold)
    try:
        yield held
    finally:
        for each in loggers:
            each.removeFilter(hold)


__all__ = ["FeatureExtractionPipeline", "FillMaskPipeline", "MASK_SPELLINGS", "QuestionAnsweringPipeline",
           "SentenceEmbeddingPipeline", "TextClassificationPipeline", "TokenClassificationPipeline", "pipeline"]
