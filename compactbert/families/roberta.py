"""RoBERTa and DistilRoBERTa, written as their difference from BERT.

Same layer stack and weight names as BERT under the prefix "roberta."; what differs:
* position ids count the real tokens from pad_token_id + 1 (padding takes the padding row), so a
  514-row table serves 512 tokens;
* one token type (the tokenizer returns none) and a byte-level BPE tokenizer;
* the masked-LM head is `lm_head` (dense, GELU whatever hidden_act says, layer_norm, decoder);
* sequence classification reads the first token through `classifier.dense`, tanh and
  `classifier.out_proj` instead of the pooler; no next-sentence head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..io.keymaps import KeyTable, hub_classes, rule
from ..nn.spec import EncoderSpec
from ..registry import BenchModel, Family, KnownCheckpoint, register
from .bert import BERT_BASE, TINY_GEOMETRY, BertConfig


@dataclass
class RobertaConfig(BertConfig):
    """RoBERTa geometry (the defaults are roberta-base's; distilroberta-base has 6 layers)."""

    model_type: ClassVar[str] = "roberta"
    vocab_size: int = 50265  # byte-level BPE vocabulary
    max_position_embeddings: int = 514  # 512 tokens: positions start at pad_token_id + 1
    pad_token_id: int = 1  # <pad>
    type_vocab_size: int = 1  # one token type
    layer_norm_eps: float = 1e-5

    def encoder_spec(self) -> EncoderSpec:
        return dataclasses.replace(super().encoder_spec(), positions_after_padding=True)

    @property
    def mlm_activation(self) -> str:
        return "gelu"  # RobertaLMHead applies gelu whatever hidden_act is

    def sentence_head_for(self, task: str) -> str:
        return "classification_head" if task == "sequence_classification" else "pooler"

    def head_dropout(self, task: str) -> float:
        if task == "multiple_choice":  # RobertaForMultipleChoice ignores classifier_dropout
            return self.hidden_dropout_prob
        return super().head_dropout(task)


def tiny(**changes: Any) -> RobertaConfig:
    """BERT's tiny geometry with RoBERTa's one token type; 66 position rows serve 64 tokens."""
    return RobertaConfig(**{**TINY_GEOMETRY, "type_vocab_size": 1, "max_position_embeddings": 66, **changes})


KEYS = KeyTable(
    model_type="roberta", prefix="roberta.", base=BERT_BASE,
    heads=(
        rule("lm_head.dense.{p}", "mlm.transform.{p}"),
        rule("lm_head.layer_norm.{p}", "mlm.norm.{p}"),
        rule("lm_head.decoder.weight", "mlm.decoder"),
        rule("lm_head.bias", "mlm.bias"),
        rule("lm_head.decoder.bias", "mlm.bias", alias=True),
        rule("classifier.dense.{p}", "classifier.dense.{p}"),  # sequence classification
        rule("classifier.out_proj.{p}", "classifier.out_proj.{p}"),
        rule("classifier.{p}", "classifier.{p}"),  # token classification, multiple choice
        rule("qa_outputs.{p}", "qa_outputs.{p}"),
    ),
    hub_classes=hub_classes("Roberta", without=("next_sentence", "pretraining")),
)

FAMILY = register(Family(
    model_type="roberta", config_class=RobertaConfig, key_table=KEYS, tiny=tiny, token_types=False,
    checkpoints=(
        KnownCheckpoint("distilroberta-base", "distilbert/distilroberta-base", "roberta",
                        "6-layer distilled RoBERTa, byte-level BPE, masked-LM head"),
        KnownCheckpoint("roberta-base", "FacebookAI/roberta-base", "roberta",
                        "12-layer RoBERTa, byte-level BPE, masked-LM head"),
    ),
    bench=(BenchModel("distilroberta", lambda: RobertaConfig(num_hidden_layers=6),
                      lambda: tiny(vocab_size=2000, max_position_embeddings=514),
                      tokenizer="bpe", tokenizer_class="RobertaTokenizer"),),
))
