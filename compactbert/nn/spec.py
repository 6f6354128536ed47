"""What the encoder core is built from: a family-neutral description each family's config produces.

The defaults describe a plain BERT layer stack, so a family states only the fields where it
differs (MobileBERT's bottlenecks and trigram input, DistilBERT's missing token types, RoBERTa's
position offset).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderSpec:
    """Family-neutral description of one encoder; the only thing the core layers read."""

    vocab_size: int
    hidden_size: int  # width of the residual stream between layers
    num_layers: int
    num_heads: int
    ffn_size: int  # intermediate width of each feed-forward network
    max_positions: int
    activation: str = "gelu"
    norm: str = "layer_norm"  # "layer_norm" or "no_norm"
    norm_eps: float = 1e-12
    embedding_size: int | None = None  # width of the word-embedding table (None: hidden_size)
    inner_size: int | None = None  # width inside a layer (MobileBERT's bottleneck; None: hidden_size)
    num_ffn: int = 1  # feed-forward networks per layer (MobileBERT stacks several)
    embedding_norm_eps: float | None = None  # None: norm_eps (MobileBERT builds two norms with torch's default)
    final_ffn_norm_eps: float | None = None  # None: norm_eps
    type_vocab_size: int = 2  # 0: the family has no token types
    # RoBERTa: position ids count the real (non-padding) tokens from pad_token_id + 1; padding
    # tokens take the padding row. Else positions are 0, 1, ... whatever the padding.
    positions_after_padding: bool = False
    # ALBERT: word, position and type embeddings and their norm at embedding_size, then a Linear to
    # hidden_size (and the masked-LM head maps back to embedding_size before the decoder).
    embedding_projection: bool = False
    layer_groups: int = 0  # ALBERT: this many distinct layers shared over depth (0: one per layer)
    trigram_input: bool = False
    embedding_transform: bool = False  # a Linear from the (trigram) word features to hidden_size
    bottleneck: bool = False
    bottleneck_attention: bool = False  # q, k, v all come from the input bottleneck
    shared_qk_bottleneck: bool = False  # q and k share a second bottleneck, v is the layer input
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    initializer_range: float = 0.02
    sinusoidal_positions: bool = False  # initialise positions as sinusoids (a stored table still wins)

    def __post_init__(self) -> None:
        for name, default in (("embedding_size", self.hidden_size), ("inner_size", self.hidden_size),
                              ("embedding_norm_eps", self.norm_eps), ("final_ffn_norm_eps", self.norm_eps)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @property
    def layer_schedule(self) -> list[int]:
        """Which distinct layer runs at each depth: [0, 1, 2, ...], or ALBERT's groups, layer i
        running group int(i / (num_layers / layer_groups)) as transformers computes it."""
        if not self.layer_groups:
            return list(range(self.num_layers))
        return [int(i / (self.num_layers / self.layer_groups)) for i in range(self.num_layers)]

    def parameter_count(self) -> int:
        """How many parameters a masked-LM of this spec holds (encoder and head; exact, see
        nn/costs.py), known before anything is built."""
        from .costs import parameter_counts

        counts = parameter_counts(self)
        return counts.net + counts.mlm_head

    @property
    def usable_positions(self) -> int:
        """The longest input: every position row, less those below the first position id."""
        return self.max_positions - (self.pad_token_id + 1 if self.positions_after_padding else 0)

    @property
    def qk_input_size(self) -> int:
        """Width of the tensor the query and key projections read: a bottleneck's output, or the
        layer input itself (BERT; IB-BERT, MobileBERT's teacher, whose q, k and v all read it)."""
        if self.bottleneck_attention or self.shared_qk_bottleneck:
            return self.inner_size  # type: ignore[return-value]
        return self.hidden_size

    @property
    def value_input_size(self) -> int:
        """Width of the tensor the value projection reads."""
        return self.inner_size if self.bottleneck_attention else self.hidden_size  # type: ignore[return-value]
