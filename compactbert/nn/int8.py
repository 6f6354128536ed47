"""int8 products: the arithmetic of `quantize="int8"` (kernels.py keeps the caches and decides
which products run here).

Weights: int8 with one scale per output channel. Activations: int8 with one scale per token,
computed on the fly, after dividing each input channel by a smoothing factor that moves
activation outliers into the weights (SmoothQuant, Xiao et al. 2023): s_j = a_j^0.5 / w_j^0.5,
where w_j is the largest |weight| of input channel j and a_j a data-free estimate of the largest
|activation| of channel j, taken from the norm that produced the input (3 |gamma_j| + |beta_j|).
x W^T == (x / s) (W s)^T exactly; only the rounding changes.

Kernel, by measurement (docs/performance.md): PyTorch's x86 quantized engine (fbgemm's u8s8
GEMM on prepacked weights), 1.5-1.8x faster than torch._int_mm at 16 rows. Its activation
quantization is per tensor, so each token is first divided by its own largest |value|: then one
scale for the tensor is one scale per token, and the token's factor is multiplied back after the
product. Without the x86 engine, torch._int_mm (int8 x int8 -> int32) runs the same arithmetic.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from ..devices import cpu_flags

_X86_ENGINE = torch.backends.quantized.engine in ("x86", "fbgemm")
# Without VNNI, fbgemm's u8 x s8 pair sums can saturate 16 bits; 7-bit activations avoid it.
_REDUCE_RANGE = not ({"avx512_vnni", "avx_vnni"} & cpu_flags())
SMOOTHING_ALPHA = 0.5


def kernel_name() -> str:
    return "x86 quantized engine (fbgemm u8s8)" if _X86_ENGINE else "torch._int_mm"


class Int8Weight(NamedTuple):
    """An int8 product's weight: the x86 engine's packed int8 weight (or the (in, out) int8 matrix
    for torch._int_mm), the float32 bias, the per-output-channel `scale`, and `inv_smooth`, the
    per-input-channel factor applied to activations before they are quantized (None: no smoothing)."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    inv_smooth: torch.Tensor | None


def norm_estimate(norm: nn.Module) -> torch.Tensor | None:
    """Largest |output| per channel a LayerNorm is expected to produce: 3 |gamma| + |beta|
    (data-free: normalised values rarely pass 3). None for anything else (NoNorm does not bound
    its output)."""
    if not isinstance(norm, nn.LayerNorm) or norm.weight is None:
        return None
    bias = norm.bias.detach().abs() if norm.bias is not None else 0.0
    return (3.0 * norm.weight.detach().abs() + bias).float()


def pack(weight: torch.Tensor, bias: torch.Tensor | None, estimate: torch.Tensor | None) -> Int8Weight:
    """The int8 inference copy of (weight, bias), smoothed by `estimate` when there is one (see above)."""
    weight = weight.float()
    inv_smooth = None
    if estimate is not None:
        smooth = (estimate.clamp_min(1e-5) ** SMOOTHING_ALPHA
                  / weight.abs().amax(0).clamp_min(1e-5) ** (1 - SMOOTHING_ALPHA))
        weight = weight * smooth
        inv_smooth = (1.0 / smooth).contiguous()
    scale = weight.abs().amax(1).clamp_min(1e-12) / 127.0  # (out,)
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    bias = bias.float().contiguous() if bias is not None else torch.zeros_like(scale)
    packed = _x86_prepack(q, scale) if _X86_ENGINE else q.t().contiguous()  # (in, out) for _int_mm
    return Int8Weight(packed, bias, scale, inv_smooth)


def run(w: Int8Weight, x: torch.Tensor, scratch: bool) -> torch.Tensor:
    """x W^T + b in int8 arithmetic, shaped like x with the last dimension W's output size.
    `scratch`: x is a temporary nobody reads afterwards, which may be overwritten instead of copied."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    # Every step after the first writes into a tensor made here, or into x when the caller gives
    # it as `scratch`: at large batches a fresh tensor costs several times the arithmetic, because
    # its pages are new (a 4,800 x 3,072 float32 division: 19.5 ms into a new tensor, 1.8 ms in place).
    owned = scratch or w.inv_smooth is not None
    if w.inv_smooth is not None:
        x2 = x2.mul_(w.inv_smooth) if scratch else x2 * w.inv_smooth
    step = row_absmax(x2).clamp_min_(1e-12)  # (M, 1): each token's largest |value|
    if _X86_ENGINE:
        unit = x2.div_(step) if owned else x2 / step
        product = torch.ops.quantized.linear_dynamic(unit, w.weight, _REDUCE_RANGE)
        out = torch.addcmul(w.bias, product, step, out=product)
    else:
        step = step.div_(127.0)
        q = torch.round(x2.div_(step) if owned else x2 / step).to(torch.int8)
        product = torch._int_mm(q, w.weight).float()
        out = torch.addcmul(w.bias, product, step * w.scale, out=product)  # (M, out)
    return out.view(*shape[:-1], -1)


def row_absmax(x: torch.Tensor) -> torch.Tensor:
    """max |x| of each row, (M, 1). Large inputs take max(amax, -amin), which writes no |x| tensor:
    4,800 x 3,072 floats in 2.5 ms instead of 21 ms; small ones (16 rows) abs() first, 2 µs faster
    (torch.linalg.vector_norm with ord=inf is one call, but 7x slower at 16 x 768)."""
    if x.numel() < ABSMAX_SPLIT:
        return x.abs().amax(1, keepdim=True)
    return x.amax(1, keepdim=True).clamp_min_(x.amin(1, keepdim=True).neg_())


ABSMAX_SPLIT = 1 << 16


def _x86_prepack(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The x86 engine's packed form of int8 weights q (out, in) with per-channel `scale`."""
    with warnings.catch_warnings():  # torch marks quantized tensors deprecated; the engine still runs them
        warnings.simplefilter("ignore")
        zero = torch.zeros(q.shape[0], dtype=torch.long)
        weight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        return torch.ops.quantized.linear_prepack(weight, None)
