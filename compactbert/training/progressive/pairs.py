"""The teacher and student geometries of progressive transfer, the check that they pair, and the
student that starts from the teacher's embeddings and heads."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import ConfigError
from ...families.mobilebert import MobileBertConfig


def ib_bert_config(**changes: Any) -> MobileBertConfig:
    """IB-BERT, MobileBERT's teacher (the released `uncased_L-24_H-1024_B-512_A-4.json`): 24 layers,
    inter-block width 512, intra-block 1024, FFN 4096, 4 heads, a 128-wide trigram embedding,
    LayerNorm, GELU; q, k and v read the 512-wide layer input. `changes` override any field."""
    base = dict(vocab_size=30522, hidden_size=512, num_hidden_layers=24, num_attention_heads=4,
                intermediate_size=4096, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                embedding_size=128, trigram_input=True, use_bottleneck=True, intra_bottleneck_size=1024,
                use_bottleneck_attention=False, key_query_shared_bottleneck=False, num_feedforward_networks=1,
                normalization_type="layer_norm", classifier_activation=True)
    return MobileBertConfig(**{**base, **changes})


# What the transfer needs equal in teacher and student: depth (one phase per layer pair), the
# inter-block width (feature maps), heads (attention maps), and what the copied embeddings and
# heads are built from.
PAIRED_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "embedding_size",
                 "trigram_input", "max_position_embeddings", "type_vocab_size")


def mobilebert_config(teacher: MobileBertConfig | None = None, **changes: Any) -> MobileBertConfig:
    """The student: the Hub MobileBERT (`uncased_L-24_H-128_B-512_A-4_F-4_OPT`: intra-block 128, FFN
    512, 4 stacked FFNs, shared q/k bottleneck, NoNorm, ReLU, no hidden dropout), with the teacher's
    paired fields when a teacher config is given. `changes` override any field."""
    base: dict[str, Any] = dict(intra_bottleneck_size=128, intermediate_size=512, num_feedforward_networks=4,
                                key_query_shared_bottleneck=True, use_bottleneck_attention=False,
                                normalization_type="no_norm", hidden_act="relu", hidden_dropout_prob=0.0,
                                classifier_activation=False)
    if teacher is not None:
        base.update({name: getattr(teacher, name) for name in PAIRED_FIELDS})
    return MobileBertConfig(**{**base, **changes})


def check_pair(teacher: Any, student: Any) -> None:
    """A ConfigError naming every field that keeps these two configs from a layer-to-layer transfer."""
    for role, config in (("teacher", teacher), ("student", student)):
        if not isinstance(config, MobileBertConfig):
            raise ConfigError(f"progressive transfer runs between MobileBERT-layout models (IB-BERT teacher, "
                              f"MobileBERT student); the {role} is {type(config).__name__}")
    different = [f"{name} (teacher {getattr(teacher, name)}, student {getattr(student, name)})"
                 for name in PAIRED_FIELDS if getattr(teacher, name) != getattr(student, name)]
    if not teacher.use_bottleneck or not student.use_bottleneck:
        different.append("use_bottleneck (both models need the inter-block bottleneck)")
    if different:
        raise ConfigError("the teacher and student must agree on " + "; ".join(different)
                          + ": the transfer maps layer l to layer l at the same inter-block width and head count")


def student_from_teacher(teacher: nn.Module, config: MobileBertConfig, next_sentence: bool = True) -> nn.Module:
    """A fresh student (seeded by the caller's RNG) whose embeddings and heads are copies of the
    teacher's wherever the two have the same tensor: everything outside the encoder layers."""
    from ...models.modeling import ForMaskedLM
    from ...models.task_models import ForPreTraining

    check_pair(teacher.config, config)
    student = (ForPreTraining if next_sentence else ForMaskedLM).from_config(config)
    theirs = teacher.state_dict()
    state = student.state_dict()
    for name, value in state.items():
        if not name.startswith("encoder.layers.") and name in theirs and theirs[name].shape == value.shape:
            state[name] = theirs[name].detach().clone()
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    return student
