"""One call from data files to a fine-tuned Hub-layout folder, for each task; the
`compactbert finetune` command and the examples use it.

The output folder holds config.json (with the label names), the weights, the tokenizer and
metrics.json: the evaluation metrics of the kept epoch as `eval_<name>`, plus `best_epoch`,
`train_loss` and `epochs`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..io.atomic import save_together
from ..options import option
from .finetune import TrainingConfig, TrainingResult, fine_tune
from .lora import AdapterFiles, LoraSettings, add_lora
from .runtime import is_main_process, keeps_global_rng
from .multiple_choice import choice_metrics, padded_choice_collate, read_choice_examples, tokenized_choices
from .question_answering import qa_metrics, read_qa_examples, tokenized_windows, window_collate
from .text_classification import (
    classification_metrics, label_mapping, padded_collate, read_csv_examples, tokenized_classification,
)
from .token_classification import read_tagged_examples, tag_mapping, token_metrics, tokenized_tagging

TASKS = ("text-classification", "token-classification", "question-answering", "multiple-choice")
# The metric that picks the best epoch, per task.
logger = logging.getLogger(__name__)
SELECTION_METRIC = {"text-classification": "accuracy", "token-classification": "f1", "question-answering": "f1",
                    "multiple-choice": "accuracy"}


@dataclass
class DataOptions:
    text_column: str = option("text", "text classification: the CSV column / JSON field with the text")
    text_pair_column: str | None = option(None, "text classification: a second text column, for sentence pairs")
    label_column: str = option("label", "the column / field with the label (multiple choice: the right choice's index)")
    words_field: str = option("tokens", "token classification: the JSON field with the words")
    tags_field: str = option("tags", "token classification: the JSON field with the tags")
    max_seq_len: int = option(384, "question answering: window length in tokens (capped by the model's limit)")
    doc_stride: int = option(128, "question answering: tokens shared by consecutive windows")
    context_field: str = option("context", "multiple choice: the JSON field with the context")
    choices_field: str = option("choices", "multiple choice: the JSON field with the choices")


@dataclass
class _Job:
    model: torch.nn.Module
    train: Any  # a list of examples, or a tokenised datasets.Dataset
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None


@keeps_global_rng
def finetune_task(task: str, model: str | os.PathLike, train: Any, validation: Any,
                  config: TrainingConfig, data: DataOptions | None = None,
                  hub: dict[str, Any] | None = None, resume: bool = False,
                  lora: LoraSettings | None = None) -> tuple[TrainingResult, dict[str, Any]]:
    """Fine-tune `model` (name or folder) for `task` on `train` / `validation`: files (.csv, .jsonl, .parquet),
    Hub datasets named hf:NAME, or datasets Dataset / DatasetDict objects (training/data.py); save the best
    epoch with its tokenizer in `config.output_dir` and return the training result and metrics.json.
    resume: continue from the trainer state in `config.checkpoint_dir` (see `fine_tune`).
    lora: with lora_r > 0, train LoRA adapters (through peft) and the new head instead of every weight;
    the folder then holds the adapter and config.json, for `load_lora` (training/lora.py)."""
    from ..tokenizer_files import AutoTokenizer

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if config.output_dir is None:
        raise ValueError("config.output_dir must say where to save the fine-tuned model")
    data, hub = data or DataOptions(), hub or {}
    tokenizer = AutoTokenizer.from_pretrained(model, **hub)
    torch.manual_seed(config.seed)  # the new head's initialisation
    build = {"text-classification": _text_classification, "token-classification": _token_classification,
             "question-answering": _question_answering, "multiple-choice": _multiple_choice}[task]
    job = build(model, tokenizer, train, validation, data, hub)
    adapted = lora is not None and lora.lora_r > 0
    if adapted:
        job.model = add_lora(job.model, lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.targets, base=model)
    trainable = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
    share = trainable / sum(p.numel() for p in job.model.parameters())
    chosen = SELECTION_METRIC[task]
    if config.metric_for_best_model not in (chosen, TrainingConfig.metric_for_best_model) or \
            config.greater_is_better is not None:
        logger.warning("finetune_task keeps the epoch with the highest %s for %s; metric_for_best_model=%r and "
                       "greater_is_better=%r are overridden", chosen, task, config.metric_for_best_model,
                       config.greater_is_better)
    config = dataclasses.replace(config, metric_for_best_model=chosen, greater_is_better=True)
    # fine_tune saves nothing here: the model, tokenizer and metrics.json are saved together below
    result = fine_tune(job.model, job.train, job.collate, dataclasses.replace(config, output_dir=None), job.evaluate,
                       resume=resume)
    kept = result.history[-1] if result.best_epoch is None else result.history[result.best_epoch - 1]
    metrics = {"best_epoch": result.best_epoch, "train_loss": kept["train_loss"], "epochs": config.num_train_epochs,
               **{f"eval_{k}": v for k, v in kept.items() if k not in ("epoch", "train_loss")},
               "trainable_parameters": trainable, "trainable_share": share}
    if is_main_process():  # under torchrun, one process writes; one atomic save of the whole folder
        saved = AdapterFiles(job.model) if adapted else job.model
        save_together(config.output_dir, [saved, tokenizer], {"metrics.json": metrics})
    return result, metrics


def _text_classification(model: Any, tokenizer: Any, train: Any, validation: Any, data: DataOptions,
                         hub: dict[str, Any]) -> _Job:
    from ..models.auto import AutoModelForSequenceClassification

    columns = dict(text_column=data.text_column, label_column=data.label_column,
                   text_pair_column=data.text_pair_column)
    label2id = label_mapping(train, data.label_column)
    examples = tokenized_classification(train, tokenizer, label2id, **columns)
    dev = read_csv_examples(validation, label2id=label2id, split="validation", **columns) if validation else None
    network = AutoModelForSequenceClassification.from_pretrained(
        model, id2label={i: name for name, i in label2id.items()}, **hub)
    evaluate = (lambda m: classification_metrics(m, dev, tokenizer)) if dev else None
    return _Job(network, examples, padded_collate(tokenizer), evaluate)


def _token_classification(model: Any, tokenizer: Any, train: Any, validation: Any, data: DataOptions,
                          hub: dict[str, Any]) -> _Job:
    from ..models.auto import AutoModelForTokenClassification

    examples = read_tagged_examples(train, data.words_field, data.tags_field)
    dev = read_tagged_examples(validation, data.words_field, data.tags_field, "validation") if validation else None
    tag2id = tag_mapping(examples + (dev or []))
    id2tag = {i: tag for tag, i in tag2id.items()}
    network = AutoModelForTokenClassification.from_pretrained(model, id2label=id2tag, **hub)
    evaluate = (lambda m: token_metrics(m, dev, tokenizer, id2tag)) if dev else None
    features = tokenized_tagging(train, tokenizer, tag2id, data.words_field, data.tags_field)
    return _Job(network, features, padded_collate(tokenizer), evaluate)


def _question_answering(model: Any, tokenizer: Any, train: Any, validation: Any, data: DataOptions,
                        hub: dict[str, Any]) -> _Job:
    from ..models.auto import AutoModelForQuestionAnswering

    network = AutoModelForQuestionAnswering.from_pretrained(model, **hub)
    limits = [n for n in (tokenizer.model_max_length, network.config.max_input_length) if n]
    length = min([data.max_seq_len, *limits])
    stride = min(data.doc_stride, length // 2)
    if (length, stride) != (data.max_seq_len, data.doc_stride):
        logger.warning("question answering windows of %d tokens overlapping by %d (asked: %d and %d): the model "
                       "reads at most %d tokens and the overlap is capped at half a window", length, stride,
                       data.max_seq_len, data.doc_stride, min(limits, default=length))
    read_qa_examples(train)  # checks every record, naming the bad one
    windows = tokenized_windows(train, tokenizer, length, stride)
    dev = read_qa_examples(validation, "validation") if validation else None
    evaluate = (lambda m: qa_metrics(m, dev, tokenizer, length, stride)) if dev else None
    return _Job(network, windows, window_collate(tokenizer), evaluate)


def _multiple_choice(model: Any, tokenizer: Any, train: Any, validation: Any, data: DataOptions,
                     hub: dict[str, Any]) -> _Job:
    from ..models.auto import AutoModelForMultipleChoice

    fields = (data.context_field, data.choices_field, data.label_column)
    read_choice_examples(train, *fields)  # checks every record, naming the bad one
    dev = read_choice_examples(validation, *fields, split="validation") if validation else None
    network = AutoModelForMultipleChoice.from_pretrained(model, **hub)
    evaluate = (lambda m: choice_metrics(m, dev, tokenizer)) if dev else None
    return _Job(network, tokenized_choices(train, tokenizer, *fields), padded_choice_collate(tokenizer), evaluate)
