"""What an encoder costs, counted from its `EncoderSpec` before anything is built: parameters
(exact, per part) and inference operations per token (the matrix products, counted as
torch.utils.flop_counter counts them). BORT's architecture search ranks candidates by these
(compactbert.training.extract); tests/test_extract.py checks both against built models of every
family."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import EncoderSpec


@dataclass(frozen=True)
class ParameterCounts:
    layers: int  # the encoder layers (distinct ones for ALBERT): BORT's "effective" size
    embeddings: int  # word, position and token-type tables, their norm and any projection
    mlm_head: int  # transform, norm, bias and any extra decoder rows; the tied decoder not counted

    @property
    def net(self) -> int:
        """The encoder: embeddings and layers (no pooler, no task head)."""
        return self.layers + self.embeddings


def _linear(size_in: int, size_out: int) -> int:
    return size_in * size_out + size_out


def parameter_counts(spec: EncoderSpec) -> ParameterCounts:
    """Exact parameter counts of an encoder built from `spec` and of its masked-LM head."""
    inner, hidden, embedding = spec.inner_size, spec.hidden_size, spec.embedding_size
    assert inner is not None and embedding is not None
    norm = 2  # weight and bias per feature, LayerNorm and NoNorm alike
    ffn = _linear(inner, spec.ffn_size) + _linear(spec.ffn_size, inner) + norm * inner
    layer = (2 * _linear(spec.qk_input_size, inner) + _linear(spec.value_input_size, inner) + _linear(inner, inner)
             + norm * inner + spec.num_ffn * ffn)
    if spec.bottleneck:
        layer += _linear(hidden, inner) + norm * inner + _linear(inner, hidden) + norm * hidden
    if spec.shared_qk_bottleneck:
        layer += _linear(hidden, inner) + norm * inner
    width = embedding if spec.embedding_projection else hidden
    embeddings = spec.vocab_size * embedding + (spec.max_positions + spec.type_vocab_size) * width + norm * width
    if spec.embedding_transform:
        embeddings += _linear(embedding * (3 if spec.trigram_input else 1), hidden)
    if spec.embedding_projection:
        embeddings += _linear(width, hidden)
    head_width = embedding if spec.embedding_projection else hidden
    head = _linear(hidden, head_width) + norm * head_width + spec.vocab_size
    if not spec.embedding_projection and hidden > embedding:
        head += (hidden - embedding) * spec.vocab_size  # MobileBERT's extra decoder rows
    return ParameterCounts((spec.layer_groups or spec.num_layers) * layer, embeddings, head)


def layer_flops_per_token(spec: EncoderSpec, length: int) -> int:
    """Floating-point operations (2 per multiply-add) of one layer per token in a sequence of
    `length` tokens: every Linear, plus the attention scores and the weighted sum of values."""
    inner, hidden = spec.inner_size, spec.hidden_size
    assert inner is not None
    macs = (2 * spec.qk_input_size + spec.value_input_size + inner) * inner  # q, k, v, output
    macs += spec.num_ffn * 2 * inner * spec.ffn_size
    if spec.bottleneck:
        macs += 2 * hidden * inner  # into and out of the bottleneck
    if spec.shared_qk_bottleneck:
        macs += hidden * inner
    macs += 2 * length * inner  # q.k over `length` keys, and the probabilities times v
    return 2 * macs


def encoder_flops_per_token(spec: EncoderSpec, length: int) -> int:
    """Operations per token of the whole layer stack (every depth, shared ALBERT layers counted
    each time they run), at `length` tokens per sequence. Embedding lookups cost no products;
    MobileBERT's and ALBERT's embedding Linears are not included."""
    return spec.num_layers * layer_flops_per_token(spec, length)
