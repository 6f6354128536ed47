"""Activation functions by the names Hub config files use.

Only names that real checkpoints of the supported families use, plus the common GELU variants.
"gelu" is the exact erf form, as in the original BERT code.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


# The same functions writing into their input, for outputs nobody else holds (no new allocation:
# a 2,560 x 3,072 float32 output is 31 MB of fresh pages otherwise).
IN_PLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": torch.ops.aten.gelu_,
    "gelu_new": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "relu": torch.relu_,
    "silu": lambda x: F.silu(x, inplace=True),
    "swish": lambda x: F.silu(x, inplace=True),
    "tanh": torch.tanh_,
}


def get_activation(name: str, in_place: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called `name` (with `in_place`, the variant that overwrites its input); a
    ValueError listing the valid names otherwise."""
    try:
        return (IN_PLACE if in_place else ACTIVATIONS)[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None
