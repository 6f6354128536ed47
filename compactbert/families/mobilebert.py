"""MobileBERT: BERT's layout plus bottlenecks, NoNorm, trigram embeddings and stacked feed-forward
networks. Its key table is BERT's plus the rules for those blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import BaseConfig, check, check_activation, check_geometry
from ..io.keymaps import KeyTable, hub_classes, rule
from ..nn.spec import EncoderSpec
from ..registry import BenchModel, Family, KnownCheckpoint, register
from .bert import BERT_BASE, BERT_HEADS, LAYER, OURS


@dataclass
class MobileBertConfig(BaseConfig):
    """MobileBERT: bottleneck layers, NoNorm, trigram embeddings, stacked feed-forward networks."""

    model_type: ClassVar[str] = "mobilebert"
    hidden_size: int = 512  # width of the residual stream between layers
    num_hidden_layers: int = 24  # encoder layers
    num_attention_heads: int = 4  # heads per attention layer
    intermediate_size: int = 512  # feed-forward width
    hidden_act: str = "relu"  # feed-forward and MLM-transform activation
    hidden_dropout_prob: float = 0.0  # dropout after embeddings and sublayers
    attention_probs_dropout_prob: float = 0.1  # dropout on attention weights
    type_vocab_size: int = 2  # token-type (segment) rows
    layer_norm_eps: float = 1e-12  # epsilon of the real LayerNorms
    embedding_size: int = 128  # width of the word-embedding table
    trigram_input: bool = True  # concatenate [next, current, previous] word vectors
    use_bottleneck: bool = True  # narrow the layer to intra_bottleneck_size inside
    intra_bottleneck_size: int = 128  # width inside a layer
    use_bottleneck_attention: bool = False  # q, k and v all read the input bottleneck
    # q and k share their own bottleneck. With neither flag, q, k and v read the layer input, as in
    # the released TensorFlow code and IB-BERT, the teacher (`training.progressive.ib_bert_config`);
    # transformers builds q and k at intra_bottleneck_size then, so it loads only intra == hidden.
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4  # feed-forward networks stacked in each layer
    normalization_type: str = "no_norm"  # "no_norm" (x * w + b) or "layer_norm"
    classifier_activation: bool = True  # pooler is tanh(dense(h[:, 0])); false: raw first token
    classifier_dropout: float | None = None  # task-head dropout; None: hidden_dropout_prob

    def __post_init__(self) -> None:
        super().__post_init__()
        check_geometry(self.true_hidden_size, self.num_attention_heads, self.num_hidden_layers,
                        self.intermediate_size)
        check_activation(self.hidden_act, "hidden_act")
        check(self.normalization_type in ("no_norm", "layer_norm"),
               f"normalization_type must be 'no_norm' or 'layer_norm', got {self.normalization_type!r}")
        check(self.num_feedforward_networks >= 1,
               f"num_feedforward_networks must be at least 1, got {self.num_feedforward_networks}")
        check(self.type_vocab_size >= 1, f"type_vocab_size must be at least 1, got {self.type_vocab_size}")
        check(0 < self.embedding_size <= self.hidden_size,
               f"embedding_size ({self.embedding_size}) must be positive and at most hidden_size "
               f"({self.hidden_size}): the masked-LM decoder splits hidden_size into the two")
    @property
    def pooler(self) -> str:  # type: ignore[override]
        return "tanh" if self.classifier_activation else "first_token"

    @property
    def true_hidden_size(self) -> int:
        """Width inside a layer: derived, never read from the file."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, embedding_size=self.embedding_size,
            inner_size=self.true_hidden_size, num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads, ffn_size=self.intermediate_size,
            num_ffn=self.num_feedforward_networks, activation=self.hidden_act, norm=self.normalization_type,
            norm_eps=self.layer_norm_eps, embedding_norm_eps=1e-5, final_ffn_norm_eps=1e-5,
            max_positions=self.max_position_embeddings, type_vocab_size=self.type_vocab_size,
            trigram_input=self.trigram_input,
            embedding_transform=self.trigram_input or self.embedding_size != self.hidden_size,
            bottleneck=self.use_bottleneck,
            bottleneck_attention=self.use_bottleneck and self.use_bottleneck_attention,
            shared_qk_bottleneck=(self.use_bottleneck and self.key_query_shared_bottleneck
                                  and not self.use_bottleneck_attention),
            hidden_dropout=self.hidden_dropout_prob, attention_dropout=self.attention_probs_dropout_prob,
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["true_hidden_size"] = self.true_hidden_size  # transformers reads it; derived, so always written fresh
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MobileBertConfig":
        data = {k: v for k, v in data.items() if k != "true_hidden_size"}
        return super().from_dict(data)  # type: ignore[return-value]


def tiny(**changes: Any) -> MobileBertConfig:
    """The tiny test preset (`Family.tiny`): every bottleneck, three stacked feed-forward networks."""
    base = dict(vocab_size=99, hidden_size=32, embedding_size=16, intra_bottleneck_size=16, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=24, num_feedforward_networks=3, max_position_embeddings=64,
                classifier_activation=False)
    return MobileBertConfig(**{**base, **changes})


KEYS = KeyTable(
    model_type="mobilebert", prefix="mobilebert.",
    base=BERT_BASE + (
        rule("embeddings.embedding_transformation.{p}", "encoder.embeddings.transform.{p}"),
        rule(LAYER + "bottleneck.input.dense.{p}", OURS + "bottleneck_in.dense.{p}"),
        rule(LAYER + "bottleneck.input.LayerNorm.{p}", OURS + "bottleneck_in.norm.{p}"),
        rule(LAYER + "bottleneck.attention.dense.{p}", OURS + "bottleneck_qk.dense.{p}"),
        rule(LAYER + "bottleneck.attention.LayerNorm.{p}", OURS + "bottleneck_qk.norm.{p}"),
        rule(LAYER + "output.bottleneck.dense.{p}", OURS + "bottleneck_out.dense.{p}"),
        rule(LAYER + "output.bottleneck.LayerNorm.{p}", OURS + "bottleneck_out.norm.{p}"),
        rule(LAYER + "ffn.{j}.intermediate.dense.{p}", OURS + "stacked_ffns.{j}.fc_in.{p}"),
        rule(LAYER + "ffn.{j}.output.dense.{p}", OURS + "stacked_ffns.{j}.fc_out.{p}"),
        rule(LAYER + "ffn.{j}.output.LayerNorm.{p}", OURS + "stacked_ffns.{j}.norm.{p}"),
    ),
    heads=BERT_HEADS + (rule("cls.predictions.dense.weight", "mlm.extra"),),
    hub_classes=hub_classes("MobileBert"),
)


FAMILY = register(Family(
    model_type="mobilebert", config_class=MobileBertConfig, key_table=KEYS, tiny=tiny,
    token_types=True,
    unsafe_dtypes={"float16": "MobileBERT activations reach 1e7-1e8 and overflow float16 (the outputs become NaN); "
                              "use bfloat16 or float32"},
    checkpoints=(
        KnownCheckpoint("mobilebert-uncased", "google/mobilebert-uncased", "mobilebert",
                        "24 bottleneck layers, NoNorm; overflows in float16, use float32 or bfloat16"),
        KnownCheckpoint("mobilebert-uncased-squad-v2", "csarron/mobilebert-uncased-squad-v2", "mobilebert",
                        "extractive QA fine-tune (SQuAD 2.0)"),
    ),
    bench=(BenchModel("mobilebert", lambda: MobileBertConfig(classifier_activation=False),
                      lambda: tiny(vocab_size=2000, max_position_embeddings=512),
                      tokenizer="wordpiece", tokenizer_class="BertTokenizer"),),
))
