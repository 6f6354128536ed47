"""ALBERT, written as its difference from BERT.

* factorised embeddings: word, position and type tables and their norm at embedding_size, then
  `embedding_hidden_mapping_in` to hidden_size;
* layers shared across depth: num_hidden_groups distinct layers, layer i running group
  int(i / (num_hidden_layers / num_hidden_groups)) (one group in every published checkpoint);
* the masked-LM head maps back to embedding_size before the (tied) decoder;
* a sentence-order head (`sop_classifier`) where BERT has next-sentence prediction: pretraining
  has it, a stand-alone next-sentence model does not exist;
* a SentencePiece (Unigram) tokenizer whose word-initial tokens carry "▁".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import check
from ..io.keymaps import KeyTable, hub_classes, rule
from ..nn.spec import EncoderSpec
from ..registry import BenchModel, Family, KnownCheckpoint, register
from .bert import EMBEDDINGS, OURS, TINY_GEOMETRY, BertConfig


@dataclass
class AlbertConfig(BertConfig):
    """ALBERT geometry; the defaults are transformers' (albert-xxlarge); Hub configs set every field."""

    model_type: ClassVar[str] = "albert"
    vocab_size: int = 30000  # SentencePiece vocabulary
    embedding_size: int = 128  # width of the embedding tables (factorised from hidden_size)
    hidden_size: int = 4096  # width of every layer
    num_attention_heads: int = 64  # heads per attention layer
    intermediate_size: int = 16384  # feed-forward width
    num_hidden_groups: int = 1  # distinct layers, shared across the depth
    inner_group_num: int = 1  # layers inside a group (1 in every published checkpoint)
    hidden_act: str = "gelu_new"  # feed-forward and MLM-transform activation
    hidden_dropout_prob: float = 0.0  # dropout after embeddings and each sublayer
    attention_probs_dropout_prob: float = 0.0  # dropout on attention weights
    classifier_dropout_prob: float = 0.1  # dropout before the classification heads
    pair_task: ClassVar[str] = "sentence_order"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.embedding_size, f"embedding_size must be positive, got {self.embedding_size}")
        check(1 <= self.num_hidden_groups <= self.num_hidden_layers,
              f"num_hidden_groups ({self.num_hidden_groups}) must be between 1 and num_hidden_layers "
              f"({self.num_hidden_layers})")
        check(self.inner_group_num == 1, f"inner_group_num={self.inner_group_num} is not supported: no published "
              "ALBERT checkpoint stacks several layers inside a group; use 1")

    def encoder_spec(self) -> EncoderSpec:
        return dataclasses.replace(super().encoder_spec(), embedding_size=self.embedding_size,
                                   embedding_projection=True, layer_groups=self.num_hidden_groups)

    @property
    def next_sentence_labels(self) -> int:
        return self.num_labels  # AlbertSOPHead is Linear(hidden, num_labels)

    def head_dropout(self, task: str) -> float:
        return 0.0 if task == "question_answering" else self.classifier_dropout_prob

    @classmethod
    def base_v2(cls, **changes: Any) -> "AlbertConfig":
        """The `albert/albert-base-v2` geometry."""
        base = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
        return cls(**{**base, **changes})


def tiny(**changes: Any) -> AlbertConfig:
    """BERT's tiny geometry with a narrower embedding and two layers sharing one group."""
    return AlbertConfig(**{**TINY_GEOMETRY, "embedding_size": 16, "num_hidden_groups": 1, **changes})


GROUP = "encoder.albert_layer_groups.{i}.albert_layers.0."  # distinct layer i (inner_group_num is 1)

KEYS = KeyTable(
    model_type="albert", prefix="albert.",
    base=EMBEDDINGS + (
        rule("encoder.embedding_hidden_mapping_in.{p}", "encoder.embeddings.projection.{p}"),
        rule(GROUP + "attention.query.{p}", OURS + "attention.q.{p}"),
        rule(GROUP + "attention.key.{p}", OURS + "attention.k.{p}"),
        rule(GROUP + "attention.value.{p}", OURS + "attention.v.{p}"),
        rule(GROUP + "attention.dense.{p}", OURS + "attention.out.{p}"),
        rule(GROUP + "attention.LayerNorm.{p}", OURS + "attention_norm.{p}"),
        rule(GROUP + "ffn.{p}", OURS + "ffn.fc_in.{p}"),
        rule(GROUP + "ffn_output.{p}", OURS + "ffn.fc_out.{p}"),
        rule(GROUP + "full_layer_layer_norm.{p}", OURS + "ffn.norm.{p}"),
        rule("pooler.{p}", "pooler.dense.{p}"),
    ),
    heads=(
        rule("predictions.dense.{p}", "mlm.transform.{p}"),
        rule("predictions.LayerNorm.{p}", "mlm.norm.{p}"),
        rule("predictions.decoder.weight", "mlm.decoder"),
        rule("predictions.bias", "mlm.bias"),
        rule("predictions.decoder.bias", "mlm.bias", alias=True),
        rule("sop_classifier.classifier.{p}", "nsp.{p}"),
        rule("classifier.{p}", "classifier.{p}"),
        rule("qa_outputs.{p}", "qa_outputs.{p}"),
    ),
    hub_classes=hub_classes("Albert", without=("next_sentence",)),
)

FAMILY = register(Family(
    # The model has two token types, but transformers 5's AlbertTokenizer returns none (model_input_names
    # is input_ids and attention_mask), and compactbert's tokenizer returns what transformers' does.
    model_type="albert", config_class=AlbertConfig, key_table=KEYS, tiny=tiny, token_types=False,
    checkpoints=(
        KnownCheckpoint("albert-base-v2", "albert/albert-base-v2", "albert",
                        "12 layers sharing one set of weights (11M parameters), SentencePiece vocabulary"),
    ),
    bench=(BenchModel("albert", AlbertConfig.base_v2,
                      lambda: tiny(vocab_size=2000, max_position_embeddings=512),
                      tokenizer="unigram", tokenizer_class="AlbertTokenizer"),),
))
