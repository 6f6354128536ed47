"""Stage 1's learning rates (the released per-phase background and per-layer multipliers) and the
optimizer groups they apply to; LAMB or AdamW over those groups."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...nn.layers import NoNorm
from ..lamb import Lamb


def phase_rate(step: int, steps: int) -> float:
    """The released stage-1 background rate at `step` of a phase of `steps`: linear warm-up over
    the first 10%, then 0.9 + 0.1 sqrt(1 - step / steps)."""
    if steps <= 1:
        return 1.0
    return min(0.9 + 0.1 * math.sqrt(1.0 - step / steps), 10.0 * step / steps)


def layer_rate(layer: int, current: int, below: float) -> float:
    """Stage 1's rate multiplier of an encoder layer (-1: not a layer) while `current` is transferred."""
    if layer == current:
        return 1.0
    return below if 0 <= layer < current else 0.0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups by encoder layer ("layer": index, -1 outside the layers) and kind: matrices
    and embeddings decay and adapt (LAMB's trust ratio); biases and norm weights do neither."""
    plain = {id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, NoNorm)) for p in m.parameters(False)}
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        layer = int(name.split(".")[2]) if name.startswith("encoder.layers.") else -1
        decays = not (id(param) in plain or name.endswith("bias"))
        groups.setdefault((layer, decays), []).append(param)
    return [{"params": params, "layer": layer, "weight_decay": weight_decay if decays else 0.0, "adapt": decays}
            for (layer, decays), params in sorted(groups.items())]


def make_optimizer(model: nn.Module, name: str, rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """LAMB (the paper's) or AdamW over `parameter_groups`, both with betas (0.9, 0.999), eps 1e-6."""
    groups = parameter_groups(model, weight_decay)
    if name == "lamb":
        return Lamb(groups, lr=rate, betas=(0.9, 0.999), eps=1e-6)
    return torch.optim.AdamW(groups, lr=rate, betas=(0.9, 0.999), eps=1e-6)
