"""The one encoder core every family runs on (BERT/BORT, MobileBERT, DistilBERT, RoBERTa, ALBERT)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .spec import EncoderSpec
from ..errors import ConfigError, InputError
from .int8 import norm_estimate
from .kernels import tracing
from .layers import Embeddings, EncoderLayer, NoNorm, TokenLayout, sinusoidal_table


@dataclass
class EncoderRun:
    last_hidden_state: torch.Tensor  # (B, T, H), or (Q, H) with `select`
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    scores: tuple[torch.Tensor, ...] | None = None  # attention logits, finfo.min at padding keys


# Attention kernels, as transformers names them: "sdpa" (torch's fused kernel, the default) and
# "eager" (explicit matmul and softmax, as the reference implementations compute it).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def check_attn_implementation(name: str) -> str:
    """`name` if it is an attention kernel compactbert has; a ConfigError listing them otherwise."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation={name!r} is not available; choose "
                          f"{' or '.join(repr(a) for a in ATTN_IMPLEMENTATIONS)}")
    return name


class Encoder(nn.Module):
    """Embeddings followed by `spec.num_layers` layers.

    With padding, every token-wise layer runs on the real tokens only (packed); the result is
    re-padded with zeros at padding positions.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.attn_implementation = "sdpa"  # one of ATTN_IMPLEMENTATIONS
        self.embeddings = Embeddings(spec)
        self.schedule = spec.layer_schedule  # the distinct layer that runs at each depth
        self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(max(self.schedule) + 1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, select: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state (B, T, H); with `select` (a (B, T) bool mask), only the selected
        tokens, (Q, H) in row-major order, and the last layer computes nothing else."""
        return self.run(input_ids, attention_mask, token_type_ids, select).last_hidden_state

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            token_type_ids: torch.Tensor | None = None, select: torch.Tensor | None = None,
            hidden_states: bool = False, attentions: bool = False, scores: bool = False,
            depth: int | None = None) -> "EncoderRun":
        """`forward`, and on request what transformers' output_hidden_states / output_attentions
        return: the embeddings output and every layer's output, (B, T, H) each (zeros at padding),
        and every layer's attention probabilities, (B, heads, T, T); with `scores`, the attention
        logits before the softmax (what knowledge transfer compares). `depth` runs only the first
        `depth` layers (their output is the last hidden state)."""
        attention_mask, token_type_ids = self.check_inputs(input_ids, attention_mask, token_type_ids)
        if select is not None and (select.dtype != torch.bool or select.shape != input_ids.shape):
            raise InputError(f"positions must be a bool mask of shape {tuple(input_ids.shape)}, "
                             f"got {select.dtype} {tuple(select.shape)}")
        if select is not None and (hidden_states or attentions):
            raise InputError("output_hidden_states and output_attentions cover every token; they cannot be "
                             "combined with positions=")
        x = self.embeddings(input_ids, token_type_ids, attention_mask)  # (B, T, H)
        layout = TokenLayout(attention_mask, tuple(input_ids.shape), x.dtype, x.device, select)
        layout.eager = self.attn_implementation == "eager"
        if attentions:
            layout.attentions = []
        if scores:
            layout.scores = []
        states = [x] if hidden_states else None
        x = layout.pack(x)  # (N, H) real tokens
        schedule = self.schedule if depth is None else self.schedule[:depth]
        if not schedule:
            raise InputError(f"depth {depth}: run at least one of the {len(self.schedule)} layers")
        last = len(schedule) - 1
        for i, index in enumerate(schedule):
            x = self.layers[index](x, layout, queries_only=select is not None and i == last)
            if states is not None:
                states.append(layout.output(x))
        out = x if select is not None else (states[-1] if states is not None else layout.output(x))
        return EncoderRun(out, None if states is None else tuple(states),
                          None if layout.attentions is None else tuple(layout.attentions),
                          None if layout.scores is None else tuple(layout.scores))

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     token_type_ids: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Validate shapes and id ranges; return the mask and token types to use."""
        spec = self.spec
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise InputError(f"input_ids must be a 2-D tensor (batch, length), got {shape}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise InputError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        b, t = input_ids.shape
        if t == 0:
            raise InputError("input_ids is empty (length 0): encode at least one token")
        if t > spec.usable_positions:
            raise InputError(
                f"input length {t} exceeds this model's limit of {spec.usable_positions} positions; "
                "truncate the input (tokenizer truncation=True, max_length=...)"
            )
        traced = tracing()  # a graph for export: no checks or shortcuts that read the example's values
        if not traced:
            _check_range(input_ids, spec.vocab_size, "input_ids", "the vocabulary size")
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (b, t):
                raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {(b, t)}")
            if not traced and bool((attention_mask != 0).all()):
                attention_mask = None  # nothing to mask: take the unmasked (faster) attention path
        if token_type_ids is not None:
            if tuple(token_type_ids.shape) != (b, t):
                raise InputError(f"token_type_ids has shape {tuple(token_type_ids.shape)}, input_ids {(b, t)}")
            if spec.type_vocab_size == 0:
                if not traced and bool(token_type_ids.any()):
                    raise InputError(
                        "this model has no token types (DistilBERT); token_type_ids must be all zero or omitted"
                    )
                token_type_ids = None
            elif not traced:
                _check_range(token_type_ids, spec.type_vocab_size, "token_type_ids", "type_vocab_size")
        return attention_mask, token_type_ids

    def int8_estimates(self) -> dict[nn.Module, dict[str, torch.Tensor]]:
        """Data-free activation estimates of the products that read a LayerNorm's output, for
        kernels.quantize_int8: {owner: {product name: per-channel estimate}}.

        A layer's input comes from the embeddings' norm or the previous layer's last norm; the
        feed-forward input from the attention norm (or the previous stacked feed-forward's norm).
        Inputs without a LayerNorm in front (NoNorm, activations, attention contexts) get none.
        """
        out: dict[nn.Module, dict[str, torch.Tensor]] = {}
        if self.spec.embedding_projection or self.spec.layer_groups:
            # ALBERT: a projection (no norm) feeds the first layer and a shared layer reads two
            # different norms; no single estimate holds, so its products go unsmoothed.
            return out

        def note(owner: nn.Module, names: tuple[str, ...], norm: nn.Module) -> None:
            estimate = norm_estimate(norm)
            if estimate is not None:
                out.setdefault(owner, {}).update(dict.fromkeys(names, estimate))

        feeding = self.embeddings.norm
        for layer in self.layers:
            attention = layer.attention
            if layer.bottleneck_in is None:
                note(attention, ("qk",), feeding)  # q and k as one product (SelfAttention.project)
                for linear in (attention.q, attention.k, attention.v):
                    note(linear, ("weight",), feeding)
            else:
                note(layer, ("x_products",), feeding)
                for linear in (layer.bottleneck_in.dense, attention.v) + (
                        (layer.bottleneck_qk.dense,) if layer.bottleneck_qk is not None else ()):
                    note(linear, ("weight",), feeding)
            feeding = layer.attention_norm
            for ffn in list(layer.stacked_ffns) + [layer.ffn]:
                note(ffn.fc_in, ("weight",), feeding)
                feeding = ffn.norm
            if layer.bottleneck_out is not None:
                feeding = layer.bottleneck_out.norm
        return out

    def after_init(self, fresh: set[str]) -> None:
        """Fix-ups once parameters named in `fresh` (encoder-relative) were drawn by `init_parameter`:
        the padding row of the word embeddings is zero; a sinusoidal position table is computed."""
        with torch.no_grad():
            if "embeddings.word.weight" in fresh:
                self.embeddings.word.weight[self.spec.pad_token_id].zero_()
            if self.spec.positions_after_padding and "embeddings.position.weight" in fresh:
                self.embeddings.position.weight[self.spec.pad_token_id].zero_()
            if self.spec.sinusoidal_positions and "embeddings.position.weight" in fresh:
                self.embeddings.position.weight.copy_(
                    sinusoidal_table(self.spec.max_positions, self.spec.hidden_size))


def init_parameter(module: nn.Module, name: str, param: torch.Tensor, std: float) -> None:
    """Initialise one parameter in place, as transformers initialises these models: norms are
    identities, biases zero, every matrix and embedding normal(0, std)."""
    with torch.no_grad():
        if isinstance(module, (nn.LayerNorm, NoNorm)) and name == "weight":
            param.fill_(1.0)
        elif name == "bias":
            param.zero_()
        else:
            param.normal_(0.0, std)


def _check_range(ids: torch.Tensor, limit: int, name: str, what: str) -> None:
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= limit:
        bad = high if high >= limit else low
        raise InputError(f"{name} contains {bad}, outside [0, {limit}) ({what} {limit}); "
                         "was the input encoded with this model's tokenizer?")
