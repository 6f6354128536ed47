"""Task heads on the shared encoder: sequence and token classification, extractive QA, multiple choice,
next-sentence prediction and pretraining. Each family's differences come from its config
(`sentence_head_for`, `head_dropout`) and its registry entry (which heads exist); the heads carry no
unused parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BaseConfig
from ..errors import ConfigError, InputError
from ..registry import family_of
from ..nn.heads import ClassificationHead, Pooler
from ..nn.kernels import linear
from .modeling import ForMaskedLM, PreTrainedModel
from .outputs import (
    ClassifierOutput, ModelOutput, PreTrainingOutput, QuestionAnsweringOutput, SentenceOrderPreTrainingOutput,
)


class _SentenceModel(PreTrainedModel):
    """Encoder + one vector per sequence: the pooler, DistilBERT's ReLU(pre_classifier(h[:, 0])), or
    RoBERTa's first token as it is (its classification head holds the dense layer)."""

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        hidden = config.encoder_spec().hidden_size
        self.sentence_head = config.sentence_head_for(self.task)
        self.pooler = Pooler(hidden, config.pooler) if self.sentence_head == "pooler" else None
        self.pre_classifier = nn.Linear(hidden, hidden) if self.sentence_head == "pre_classifier" else None
        self.dropout = nn.Dropout(config.head_dropout(self.task))

    def sentence_vectors(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, H) from the last hidden state (B, T, H)."""
        if self.pre_classifier is not None:
            return self.dropout(F.relu(linear(self.pre_classifier, hidden[:, 0])))
        if self.pooler is None:
            return self.dropout(hidden[:, 0])
        return self.dropout(self.pooler(hidden))


class ForSequenceClassification(_SentenceModel):
    """`AutoModelForSequenceClassification`: single-label, multi-label or regression by `problem_type`."""

    task = "sequence_classification"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        hidden = config.encoder_spec().hidden_size
        if self.sentence_head == "classification_head":
            self.classifier: nn.Module = ClassificationHead(hidden, config.num_labels, self.dropout.p)
        else:
            self.classifier = nn.Linear(hidden, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> ClassifierOutput:
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           inputs_embeds=inputs_embeds)
        logits = linear(self.classifier, self.sentence_vectors(run.last_hidden_state))  # (B, L)
        loss = None if labels is None else self._loss(logits, labels)
        return self._output(ClassifierOutput(loss=loss, logits=logits), run, return_dict)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = self.config.num_labels
        problem = self.config.problem_type
        logits = logits.float()  # losses in float32 whatever the model's dtype
        if problem is None:  # inferred as transformers does
            problem = ("regression" if n == 1 else "single_label_classification"
                       if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
        if problem == "regression":
            return F.mse_loss(logits.squeeze(), labels.squeeze().float()) if n == 1 else \
                F.mse_loss(logits, labels.float())
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, n), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.float())


class ForTokenClassification(PreTrainedModel):
    """`AutoModelForTokenClassification`: one label per token; labels of -100 are ignored."""

    task = "token_classification"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.head_dropout(self.task))
        self.classifier = nn.Linear(config.encoder_spec().hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> ClassifierOutput:
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           inputs_embeds=inputs_embeds)
        logits = linear(self.classifier, self.dropout(run.last_hidden_state))  # (B, T, L)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=-100)
        return self._output(ClassifierOutput(loss=loss, logits=logits), run, return_dict)


class ForQuestionAnswering(PreTrainedModel):
    """`AutoModelForQuestionAnswering`: start and end logits over the tokens (extractive QA).

    Logits at padding are finfo.min, so the loss and the best span never depend on padding
    (transformers scores padding positions too).
    """

    task = "question_answering"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.head_dropout(self.task))
        self.qa_outputs = nn.Linear(config.encoder_spec().hidden_size, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> QuestionAnsweringOutput:
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           inputs_embeds=inputs_embeds)
        hidden = self.dropout(run.last_hidden_state)
        logits = linear(self.qa_outputs, hidden)  # (B, T, 2)
        if attention_mask is not None:  # an answer never starts or ends in padding
            logits = logits.masked_fill((attention_mask == 0)[..., None], torch.finfo(logits.dtype).min)
        start, end = logits.unbind(dim=-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start.shape[1]  # positions outside the input are ignored, as in transformers
            s = F.cross_entropy(start.float(), start_positions.clamp(0, ignored), ignore_index=ignored)
            e = F.cross_entropy(end.float(), end_positions.clamp(0, ignored), ignore_index=ignored)
            loss = (s + e) / 2
        output = QuestionAnsweringOutput(loss=loss, start_logits=start.contiguous(), end_logits=end.contiguous())
        return self._output(output, run, return_dict)


class ForMultipleChoice(_SentenceModel):
    """`AutoModelForMultipleChoice`: inputs (B, choices, T) -> one score per choice."""

    task = "multiple_choice"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.encoder_spec().hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> ClassifierOutput:
        """Hidden states and attentions, when asked for, cover the (B * choices) flattened rows."""
        if input_ids.dim() != 3:
            raise InputError(f"multiple choice takes input_ids of shape (batch, choices, length), "
                             f"got {tuple(input_ids.shape)}")
        b, c, t = input_ids.shape

        def flat(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.reshape(b * c, t)

        run = self._encode(flat(input_ids), flat(attention_mask), flat(token_type_ids), output_hidden_states,
                           output_attentions, inputs_embeds=inputs_embeds)
        logits = linear(self.classifier, self.sentence_vectors(run.last_hidden_state)).view(b, c)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return self._output(ClassifierOutput(loss=loss, logits=logits), run, return_dict)


def _check_head(config: BaseConfig, task: str, head: str) -> None:
    if task not in family_of(config).tasks:
        raise ConfigError(f"{config.model_type} checkpoints have no {head} head, so {task.replace('_', ' ')} "
                          "is not available")


def _add_next_sentence_head(model: PreTrainedModel) -> None:
    """The pooler and `nsp` Linear(hidden, 2) on a model: BERT's next-sentence head
    (cls.seq_relationship), ALBERT's sentence-order head (sop_classifier.classifier)."""
    hidden = model.config.encoder_spec().hidden_size
    model.pooler = Pooler(hidden, model.config.pooler)  # type: ignore[arg-type]
    model.nsp = nn.Linear(hidden, model.config.next_sentence_labels)


class ForNextSentencePrediction(PreTrainedModel):
    """`AutoModelForNextSentencePrediction` (BERT/BORT, MobileBERT): is B the continuation of A?"""

    task = "next_sentence"

    def __init__(self, config: BaseConfig) -> None:
        _check_head(config, "next_sentence", "next-sentence")
        super().__init__(config)
        _add_next_sentence_head(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> ClassifierOutput:
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           inputs_embeds=inputs_embeds)
        logits = linear(self.nsp, self.pooler(run.last_hidden_state))
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return self._output(ClassifierOutput(loss=loss, logits=logits), run, return_dict)


class ForPreTraining(ForMaskedLM):
    """`AutoModelForPreTraining`: masked-LM and sentence-pair heads together: next-sentence
    prediction (BERT/BORT, MobileBERT; `next_sentence_label`, `seq_relationship_logits`) or ALBERT's
    sentence order (`sentence_order_label`, `sop_logits`)."""

    task = "pretraining"

    def __init__(self, config: BaseConfig) -> None:
        _check_head(config, "pretraining", "next-sentence or sentence-order")
        super().__init__(config)
        _add_next_sentence_head(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,  # type: ignore[override]
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                sentence_order_label: torch.Tensor | None = None, inputs_embeds: None = None) -> ModelOutput:
        """`next_sentence_label` and ALBERT's `sentence_order_label` both name the label of the
        sentence-pair head (give one); the output names the logits as the family's transformers class does."""
        if next_sentence_label is not None and sentence_order_label is not None:
            raise InputError("give next_sentence_label or sentence_order_label, not both: both label the "
                             "sentence-pair head")
        pair_label = next_sentence_label if next_sentence_label is not None else sentence_order_label
        sentence_order = self.config.pair_task == "sentence_order"
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           inputs_embeds=inputs_embeds)
        hidden = run.last_hidden_state
        logits = self.mlm(hidden)
        relationship = linear(self.nsp, self.pooler(hidden))
        loss = None
        if labels is not None and pair_label is not None:
            mlm = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=-100)
            loss = mlm + F.cross_entropy(relationship.float(), pair_label.view(-1))
        output: ModelOutput = (
            SentenceOrderPreTrainingOutput(loss=loss, prediction_logits=logits, sop_logits=relationship)
            if sentence_order else
            PreTrainingOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=relationship))
        return self._output(output, run, return_dict)
