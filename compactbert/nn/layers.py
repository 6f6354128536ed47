"""The building blocks of the shared encoder: norms, embeddings, attention, feed-forward.

Every module reads an `EncoderSpec`, never a family config, so one set of blocks serves BERT/BORT,
MobileBERT and DistilBERT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation
from .spec import EncoderSpec
from .kernels import (
    FUSED_ACTIVATIONS, Products, all_linear, fast_linear, is_int8, linear, packed_linear, product_slots, stacked,
    tracing, use_packed,
)


class NoNorm(nn.Module):
    """MobileBERT's affine 'normalisation': x * weight + bias, no statistics."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


def norm_temporary(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """norm(x) for an x that nothing else reads (a product's fresh output, at inference): NoNorm
    then writes into x instead of a new tensor."""
    if isinstance(norm, NoNorm):
        params = norm._parameters  # not norm.bias: see kernels.fast_linear
        return torch.addcmul(params["bias"], x, params["weight"], out=x)
    return norm(x)


def make_norm(kind: str, size: int, eps: float) -> nn.Module:
    """LayerNorm or NoNorm, by the name used in MobileBERT's `normalization_type`."""
    if kind == "layer_norm":
        return nn.LayerNorm(size, eps=eps)
    if kind == "no_norm":
        return NoNorm(size)
    raise ValueError(f"unknown norm {kind!r}; choose 'layer_norm' or 'no_norm'")


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """DistilBERT's sinusoidal position table: sin on even columns, cos on odd ones."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]  # (P, 1)
    rate = torch.pow(10000.0, 2 * (torch.arange(dim) // 2).to(torch.float64) / dim)  # (D,)
    angles = pos / rate  # (P, D)
    table = torch.empty(positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class Embeddings(Products):
    """Word (+ trigram transform) + position (+ token type) embeddings, then a norm."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.trigram_input = spec.trigram_input
        self.pad_id = spec.pad_token_id if spec.positions_after_padding else None
        self.word = nn.Embedding(spec.vocab_size, spec.embedding_size)
        width_in = spec.embedding_size * (3 if spec.trigram_input else 1)
        self.transform = nn.Linear(width_in, spec.hidden_size) if spec.embedding_transform else None
        width = spec.embedding_size if spec.embedding_projection else spec.hidden_size  # of the sum and its norm
        self.position = nn.Embedding(spec.max_positions, width)
        self.token_type = nn.Embedding(spec.type_vocab_size, width) if spec.type_vocab_size else None
        self.norm = make_norm(spec.norm, width, spec.embedding_norm_eps)
        self.dropout = nn.Dropout(spec.hidden_dropout)
        # ALBERT's factorised embeddings: the normalised sum is projected to the layers' width.
        self.projection = nn.Linear(width, spec.hidden_size) if spec.embedding_projection else None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.word(input_ids)  # (B, T, E)
        if self.trigram_input:
            if attention_mask is not None:
                # Padding must not leak into the last real token through its 'next' neighbour,
                # whatever the padding row of the table holds.
                x = x * attention_mask[..., None].to(x.dtype)
            x = torch.cat([F.pad(x[:, 1:], (0, 0, 0, 1)), x, F.pad(x[:, :-1], (0, 0, 1, 0))], dim=-1)  # (B, T, 3E)
        if self.transform is not None:
            x = linear(self.transform, x)  # (B, T, H)
        if self.pad_id is None:
            positions = self.position.weight[: input_ids.shape[1]]  # (T, H)
        else:  # RoBERTa: the n-th real token sits at pad_id + n, padding at pad_id (as transformers counts)
            real = (input_ids != self.pad_id).long()
            positions = self.position(torch.cumsum(real, dim=1) * real + self.pad_id)  # (B, T, H)
        if self.token_type is None:
            x = x + positions
        else:
            types = self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids)
            # Same summation order as the reference implementations (BERT adds types first).
            x = (x + positions) + types if self.transform is not None else (x + types) + positions
        x = self.dropout(self.norm(x))
        return x if self.projection is None else linear(self.projection, x)


class TokenLayout:
    """Where the real tokens of a padded (B, T) batch are.

    Token-wise layers (every Linear, norm and activation) run on the packed (N, D) real tokens only;
    attention re-pads to (B, T, D) around scaled_dot_product_attention. `select` optionally names
    query tokens (a (B, T) bool mask): the last layer then runs its queries, FFN and norms only
    there, while its keys and values still cover every token.
    """

    def __init__(self, attention_mask: torch.Tensor | None, shape: tuple[int, int], dtype: torch.dtype,
                 device: torch.device, select: torch.Tensor | None = None) -> None:
        self.batch, self.length = shape
        # A traced graph (export) keeps every token padded: packing would bake in the example's count.
        self.packed = attention_mask is not None and not tracing()
        self.mask = None  # additive (B, 1, 1, T), finfo.min at padding
        self.index = None  # (N,) flat positions of the real tokens
        self.keep = None  # traced graphs: (B, T, 1), 1 at real tokens and 0 at padding
        if attention_mask is not None:
            keep = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T)
            self.mask = torch.zeros_like(keep, dtype=dtype).masked_fill_(~keep, torch.finfo(dtype).min)
            if not self.packed:
                self.keep = attention_mask[..., None].to(dtype)
        if self.packed:
            self.index = attention_mask.to(torch.bool).reshape(-1).nonzero().squeeze(1)
        self.query_index = self.query_rows = self.query_slots = None
        self.query_width = 0
        self.attentions: list[torch.Tensor] | None = None  # set to [] to record attention probabilities
        self.scores: list[torch.Tensor] | None = None  # set to [] to record masked attention scores (logits)
        self.eager = False  # attention as explicit matmul + softmax instead of scaled_dot_product_attention
        if select is not None:
            rows, cols = select.nonzero(as_tuple=True)
            counts = select.sum(dim=1)
            starts = torch.cumsum(counts, 0) - counts
            self.query_rows = rows
            self.query_slots = torch.arange(rows.numel(), device=device) - starts[rows]
            self.query_width = int(counts.max()) if rows.numel() else 0
            flat = rows * self.length + cols
            if self.packed:
                packed_of = torch.full((self.batch * self.length,), -1, dtype=torch.long, device=device)
                packed_of[self.index] = torch.arange(self.index.numel(), device=device)
                flat = packed_of[flat]
                if bool((flat < 0).any()):
                    raise ValueError("positions select padding tokens; select only tokens whose attention_mask is 1")
            self.query_index = flat

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (N, D) real tokens, or unchanged when nothing is padded."""
        if not self.packed:
            return x
        return x.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) real tokens -> (B, T, D) with zeros at padding; (B, T, D) unchanged."""
        if not self.packed:
            return x
        out = x.new_zeros(self.batch * self.length, x.shape[-1])
        return out.index_copy_(0, self.index, x).view(self.batch, self.length, -1)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """A layer's output as callers get it: (B, T, D) with zeros at padding, packed or not."""
        if self.keep is not None:
            return x * self.keep
        return self.pad(x)

    def take_queries(self, x: torch.Tensor) -> torch.Tensor:
        """The selected query tokens of a packed or padded tensor: (Q, D), row-major order."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.query_index)


class SelfAttention(Products):
    """Multi-head attention through torch's scaled_dot_product_attention.

    Query and key read `qk_size`-wide inputs, value reads `v_size`-wide ones (they differ in
    MobileBERT). The additive mask holds finfo.min at padding: a row with every key masked
    becomes uniform instead of NaN.
    """

    PRODUCTS = ("q", "k", "v", "out")

    def __init__(self, qk_size: int, v_size: int, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.q = nn.Linear(qk_size, width)
        self.k = nn.Linear(qk_size, width)
        self.v = nn.Linear(v_size, width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def fast(self, x: torch.Tensor) -> bool:
        """Inference on packed weights applies (see kernels.py): no gradient, and no product wrapped."""
        return not self.training and self.plain() and use_packed(x, self._modules["q"]._parameters["weight"])

    def project(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v projections; products that read the same tensor run as one GEMM at inference."""
        if not self.fast(k_in):
            return self.q(q_in), self.k(k_in), self.v(v_in)
        # int8 smooths a product's input by its weights' column ranges. Q and K smoothed together
        # keep meaning (min cosine on real MiniLM 0.99632, separately 0.99631); V with them does
        # not (0.9924), so in int8 V stays a product of its own.
        if k_in is v_in and not is_int8(self):
            if q_in is k_in:
                return packed_linear(self, "qkv", *stacked((self.q, self.k, self.v)), q_in).split(self.q.out_features, -1)
            k, v = packed_linear(self, "kv", *stacked((self.k, self.v)), k_in).split(self.k.out_features, -1)
            return linear(self.q, q_in), k, v
        return (*self.project_qk(q_in, k_in), linear(self.v, v_in))

    def project_qk(self, q_in: torch.Tensor, k_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k projections; one GEMM at inference when they read the same tensor."""
        if q_in is k_in and self.fast(k_in):
            modules = self._modules  # see FeedForward._fast_rows
            q = modules["q"]
            return packed_linear(self, "qk", *stacked((q, modules["k"])), q_in).split(q.out_features, -1)
        return linear(self.q, q_in), linear(self.k, k_in)

    def forward(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, layout: TokenLayout,
                queries_only: bool = False) -> torch.Tensor:
        """Inputs are packed (N, *) or padded (B, T, *); with `queries_only`, q_in holds only the
        selected query tokens (Q, *) and so does the result."""
        return self.attend(*self.project(q_in, k_in, v_in), layout, queries_only)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout,
               queries_only: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over projected q, k, v (packed or padded), then the output projection; at
        inference (`fast`), `residual` is added inside the output product."""
        k = self._heads(layout.pad(k))
        v = self._heads(layout.pad(v))
        if queries_only:
            padded = q.new_zeros(layout.batch, layout.query_width, q.shape[-1])  # (B, Qmax, W)
            padded[layout.query_rows, layout.query_slots] = q
            q = padded
        else:
            q = layout.pad(q)
        if layout.eager or layout.attentions is not None or layout.scores is not None:  # the probabilities themselves
            scores = torch.matmul(self._heads(q), k.transpose(-1, -2)) * self.head_dim ** -0.5
            scores = scores if layout.mask is None else scores + layout.mask  # (B, H, Tq, T), finfo.min at padding
            if layout.scores is not None:
                layout.scores.append(scores)
            probs = scores.softmax(dim=-1)
            if layout.attentions is not None:
                layout.attentions.append(probs)
            ctx = torch.matmul(F.dropout(probs, self.dropout, self.training), v).transpose(1, 2)
        else:
            ctx = F.scaled_dot_product_attention(
                self._heads(q), k, v, attn_mask=layout.mask, dropout_p=self.dropout if self.training else 0.0,
                scale=self.head_dim ** -0.5,
            ).transpose(1, 2)  # (B, Tq, H, D)
        ctx = ctx.reshape(ctx.shape[0], ctx.shape[1], self.num_heads * self.head_dim)  # (B, Tq, W); Tq may be 0
        if queries_only:
            ctx = ctx[layout.query_rows, layout.query_slots]  # (Q, W)
        else:
            ctx = layout.pack(ctx)
        if residual is not None:
            return fast_linear(self._modules["out"], ctx, residual=residual, scratch=True)  # ctx is ours alone
        return linear(self.out, ctx)


class Projection(Products):
    """norm(dense(x) [+ residual]): MobileBERT's bottlenecks in and out."""

    PRODUCTS = ("dense",)

    def __init__(self, size_in: int, size_out: int, norm: str, eps: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)
        self.norm = make_norm(norm, size_out, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dropout(linear(self.dense, x))
        return self.norm(y if residual is None else y + residual)

    def fast_forward(self, x: torch.Tensor, residual: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """Inference: the residual add runs inside the packed product (`scratch`: x may be
        overwritten, see kernels.packed_linear)."""
        modules = self._modules  # see FeedForward._fast_rows
        return norm_temporary(modules["norm"], fast_linear(modules["dense"], x, residual=residual, scratch=scratch))


# Inner FFN activations larger than this many floats are made a chunk of rows at a time. A larger
# tensor (e.g. 4,800 tokens x 3,072) is past glibc's 32 MB limit for reusing freed heap memory, so
# each one is fresh pages from the kernel: a float32 division into a new 59 MB tensor takes 19.5 ms,
# in place 1.8 ms. Chunks of at most 16 MB are reused from the heap.
FFN_CHUNK_ELEMENTS = 1 << 22


class FeedForward(Products):
    """norm(fc_out(act(fc_in(x))) + x), post-LN as in every family here."""

    PRODUCTS = ("fc_in", "fc_out")

    def __init__(self, size: int, ffn_size: int, activation: str, norm: str, eps: float, dropout: float) -> None:
        super().__init__()
        self.fc_in = nn.Linear(size, ffn_size)
        self.fc_out = nn.Linear(ffn_size, size)
        self.norm = make_norm(norm, size, eps)
        self.activation = activation
        self.act = get_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(linear(self.fc_out, self.act(linear(self.fc_in, x)))) + x)

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: the activation and the residual add run inside the packed products. Many
        tokens at once run in row chunks (see FFN_CHUNK_ELEMENTS)."""
        rows = x.numel() // x.shape[-1]  # packed (N, D) or padded (B, T, D)
        if rows * self.fc_in.out_features > FFN_CHUNK_ELEMENTS:
            flat, step = x.reshape(rows, -1), max(1, FFN_CHUNK_ELEMENTS // self.fc_in.out_features)
            return torch.cat([self._fast_rows(flat[i:i + step]) for i in range(0, rows, step)]).view(x.shape)
        return self._fast_rows(x)

    def _fast_rows(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules  # not self.fc_in: nn.Module.__getattr__ costs 0.6 µs a lookup (see kernels.fast_linear)
        if self.activation in FUSED_ACTIVATIONS:
            h = fast_linear(modules["fc_in"], x, activation=self.activation)
        else:
            h = self.act(linear(modules["fc_in"], x))
        return norm_temporary(modules["norm"], fast_linear(modules["fc_out"], h, residual=x, scratch=True))


class EncoderLayer(nn.Module):
    """One post-LN transformer layer; with `spec.bottleneck`, MobileBERT's narrow layer.

    `forward` is the reference computation. At inference on packed weights (kernels.py) it runs
    `_fast_forward`: the same function with products that read one input fused into one GEMM,
    NoNorm folded into the input bottlenecks, and activations and residual adds inside the kernels.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        inner = spec.inner_size
        self.bottleneck_in = (Projection(spec.hidden_size, inner, spec.norm, spec.norm_eps)
                              if spec.bottleneck else None)
        self.bottleneck_qk = (Projection(spec.hidden_size, inner, spec.norm, spec.norm_eps)
                              if spec.shared_qk_bottleneck else None)
        self.bottleneck_attention = spec.bottleneck_attention
        self.attention = SelfAttention(spec.qk_input_size, spec.value_input_size, inner, spec.num_heads, spec.attention_dropout)
        self.attention_norm = make_norm(spec.norm, inner, spec.norm_eps)
        self.dropout = nn.Dropout(spec.hidden_dropout)
        self.stacked_ffns = nn.ModuleList(
            FeedForward(inner, spec.ffn_size, spec.activation, spec.norm, spec.norm_eps, 0.0)
            for _ in range(spec.num_ffn - 1)
        )
        self.ffn = FeedForward(inner, spec.ffn_size, spec.activation, spec.norm, spec.final_ffn_norm_eps,
                               0.0 if spec.bottleneck else spec.hidden_dropout)
        self.bottleneck_out = (Projection(inner, spec.hidden_size, spec.norm, spec.norm_eps, spec.hidden_dropout)
                               if spec.bottleneck else None)

    def forward(self, x: torch.Tensor, layout: TokenLayout, queries_only: bool = False) -> torch.Tensor:
        """x is packed (N, H) or padded (B, T, H). With `queries_only`, keys and values still read
        every token, but the output covers only the layout's selected queries: (Q, H)."""
        if self.attention.fast(x) and self._products_plain():
            return self._fast_forward(x, layout, queries_only)
        pick = layout.take_queries if queries_only else (lambda t: t)
        residual = pick(x)
        kv_in = v_in = x
        if self.bottleneck_in is not None:
            if self.bottleneck_attention:
                kv_in = v_in = self.bottleneck_in(x)  # q, k and v all read the input bottleneck
                residual = pick(kv_in)
            else:
                residual = self.bottleneck_in(residual)  # (.., inner): only where outputs are needed
                if self.bottleneck_qk is not None:
                    kv_in = self.bottleneck_qk(x)  # shared by query and key; value reads x
        a = self.attention(pick(kv_in), kv_in, v_in, layout, queries_only)
        a = self.attention_norm(self.dropout(a) + residual)
        for ffn in self.stacked_ffns:
            a = ffn(a)
        a = self.ffn(a)
        if self.bottleneck_out is not None:
            a = self.bottleneck_out(a, residual=pick(x))  # back to hidden_size
        return a

    def _products_plain(self) -> bool:
        """Every feed-forward network and bottleneck holds plain products (as Products.plain, in
        one pass: 0.6 µs for MobileBERT's 11 products)."""
        slots = self.__dict__.get("_product_slots")
        if slots is None:
            modules = self._modules
            parts = [*modules["stacked_ffns"]._modules.values(), modules["ffn"]]
            parts += [modules[n] for n in ("bottleneck_in", "bottleneck_qk", "bottleneck_out") if modules.get(n) is not None]
            slots = self.__dict__["_product_slots"] = [slot for p in parts for slot in product_slots(p)]
        return all_linear(slots)

    def _fast_forward(self, x: torch.Tensor, layout: TokenLayout, queries_only: bool) -> torch.Tensor:
        """`forward` at inference; equal to it within float rounding (tests/test_kernels.py)."""
        pick = layout.take_queries if queries_only else (lambda t: t)
        modules = self._modules  # see FeedForward._fast_rows
        attention, bottleneck_in, bottleneck_qk = modules["attention"], modules.get("bottleneck_in"), modules.get("bottleneck_qk")
        if bottleneck_in is not None and not self.bottleneck_attention:
            # Every product that reads x at once: input bottleneck, q/k bottleneck, value.
            parts = [bottleneck_in, bottleneck_qk] if bottleneck_qk is not None else [bottleneck_in]
            folded = [p.norm if isinstance(p.norm, NoNorm) else None for p in parts]
            value = attention._modules["v"]
            out = packed_linear(self, "x_products", *stacked([p.dense for p in parts] + [value], folded + [None]), x)
            pieces = list(out.split([p.dense.out_features for p in parts] + [value.out_features], -1))
            for i, (part, fold) in enumerate(zip(parts, folded)):
                if fold is None:
                    pieces[i] = part.norm(pieces[i])
            v = pieces[-1]
            residual = pick(pieces[0])
            qk_in = pieces[1] if bottleneck_qk is not None else x
            q, k = attention.project_qk(pick(qk_in), qk_in)
        else:
            kv_in = bottleneck_in(x) if bottleneck_in is not None else x
            residual = pick(kv_in)
            q, k, v = attention.project(pick(kv_in) if queries_only else kv_in, kv_in, kv_in)
        a = norm_temporary(modules["attention_norm"], attention.attend(q, k, v, layout, queries_only, residual=residual))
        for ffn in modules["stacked_ffns"]._modules.values():
            a = ffn.fast_forward(a)
        a = modules["ffn"].fast_forward(a)
        if modules.get("bottleneck_out") is not None:
            a = modules["bottleneck_out"].fast_forward(a, pick(x), scratch=True)  # a is read by nothing else
        return a
