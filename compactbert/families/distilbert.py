"""DistilBERT: six BERT-width layers, no token types, no pooler (its classifiers read
ReLU(pre_classifier(h[:, 0]))), and its own weight names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import BaseConfig, alias, check_activation, check_geometry
from ..io.keymaps import KeyTable, hub_classes, rule
from ..nn.spec import EncoderSpec
from ..registry import BenchModel, Family, KnownCheckpoint, register
from .bert import EMBEDDINGS, OURS


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
    layers_field: ClassVar[str] = "n_layers"

    # transformers' names for the geometry, as in its DistilBertConfig.attribute_map
    hidden_size = alias("dim")
    num_hidden_layers = alias("n_layers")
    num_attention_heads = alias("n_heads")
    intermediate_size = alias("hidden_dim")

    def head_dropout(self, task: str) -> float:
        return {"question_answering": self.qa_dropout, "token_classification": self.dropout}.get(
            task, self.seq_classif_dropout)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_geometry(self.dim, self.n_heads, self.n_layers, self.hidden_dim)
        check_activation(self.activation, "activation")

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.dim, num_layers=self.n_layers, num_heads=self.n_heads,
            ffn_size=self.hidden_dim, max_positions=self.max_position_embeddings, activation=self.activation,
            type_vocab_size=0, hidden_dropout=self.dropout, attention_dropout=self.attention_dropout,
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
            sinusoidal_positions=self.sinusoidal_pos_embds,
        )


def tiny(**changes: Any) -> DistilBertConfig:
    """The tiny test preset (`Family.tiny`)."""
    base = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
    return DistilBertConfig(**{**base, **changes})


LAYER = "transformer.layer.{i}."
KEYS = KeyTable(
    model_type="distilbert", prefix="distilbert.",
    base=tuple(r for r in EMBEDDINGS if "token_type" not in r.hub) + (
        rule(LAYER + "attention.q_lin.{p}", OURS + "attention.q.{p}"),
        rule(LAYER + "attention.k_lin.{p}", OURS + "attention.k.{p}"),
        rule(LAYER + "attention.v_lin.{p}", OURS + "attention.v.{p}"),
        rule(LAYER + "attention.out_lin.{p}", OURS + "attention.out.{p}"),
        rule(LAYER + "sa_layer_norm.{p}", OURS + "attention_norm.{p}"),
        rule(LAYER + "ffn.lin1.{p}", OURS + "ffn.fc_in.{p}"),
        rule(LAYER + "ffn.lin2.{p}", OURS + "ffn.fc_out.{p}"),
        rule(LAYER + "output_layer_norm.{p}", OURS + "ffn.norm.{p}"),
    ),
    heads=(
        rule("vocab_transform.{p}", "mlm.transform.{p}"),
        rule("vocab_layer_norm.{p}", "mlm.norm.{p}"),
        rule("vocab_projector.weight", "mlm.decoder"),
        rule("vocab_projector.bias", "mlm.bias"),
        rule("pre_classifier.{p}", "pre_classifier.{p}"),
        rule("classifier.{p}", "classifier.{p}"),
        rule("qa_outputs.{p}", "qa_outputs.{p}"),
    ),
    hub_classes=hub_classes("DistilBert", without=("next_sentence", "pretraining")),
)


FAMILY = register(Family(
    model_type="distilbert", config_class=DistilBertConfig, key_table=KEYS, tiny=tiny,
    token_types=False,
    checkpoints=(
        KnownCheckpoint("distilbert-base-uncased", "distilbert/distilbert-base-uncased", "distilbert",
                        "6-layer distilled BERT, uncased WordPiece, masked-LM head"),
        KnownCheckpoint("distilbert-base-cased", "distilbert/distilbert-base-cased", "distilbert",
                        "cased WordPiece vocabulary (28,996 tokens)"),
        KnownCheckpoint("distilbert-base-multilingual-cased", "distilbert/distilbert-base-multilingual-cased",
                        "distilbert", "104 languages, 119,547-token vocabulary"),
        KnownCheckpoint("distilbert-base-uncased-finetuned-sst-2-english",
                        "distilbert/distilbert-base-uncased-finetuned-sst-2-english", "distilbert",
                        "sentiment classifier (NEGATIVE/POSITIVE)"),
        KnownCheckpoint("distilbert-base-cased-distilled-squad", "distilbert/distilbert-base-cased-distilled-squad",
                        "distilbert", "extractive QA; sinusoidal position table stored in the file"),
        KnownCheckpoint("distilbert-base-uncased-distilled-squad",
                        "distilbert/distilbert-base-uncased-distilled-squad", "distilbert", "extractive QA"),
    ),
    bench=(BenchModel("distilbert", DistilBertConfig,
                      lambda: tiny(vocab_size=2000, max_position_embeddings=512),
                      tokenizer="wordpiece", tokenizer_class="DistilBertTokenizer"),),
))
