"""LAMB (You et al., arXiv 1904.00962) as MobileBERT was trained with it.

For each parameter w with gradient g, moments m, v (no bias correction, as in the released
MobileBERT and BERT optimizers):

    m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
    u  = m / (sqrt(v) + eps) + weight_decay * w
    w <- w - lr * r * u,   r = ||w|| / ||u||  (1 when either norm is 0; 1 for groups with adapt=False)

The trust ratio r makes every adapted step move a matrix by exactly lr x ||w||. Biases and norm
weights neither decay nor adapt (a group with `adapt=False`, as `parameter_groups` splits them).
Parameters without a gradient are skipped and their moments left as they are, which is what
progressive transfer needs for the layers it freezes.

Written here because torch has no LAMB, and the maintained ones are either CUDA-only (apex) or
part of a large image library (timm) whose variant adds bias correction; this is the update rule
the MobileBERT recipe used, in 30 lines, tested against the formula (tests/test_progressive.py).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


class Lamb(torch.optim.Optimizer):
    """LAMB without bias correction; group options `lr`, `betas`, `eps`, `weight_decay`, `adapt`."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, adapt: bool = True) -> None:
        if lr < 0 or eps <= 0 or not all(0.0 <= b < 1.0 for b in betas) or weight_decay < 0:
            raise ValueError(f"LAMB needs lr >= 0, eps > 0, betas in [0, 1) and weight_decay >= 0; got lr={lr}, "
                             f"eps={eps}, betas={betas}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adapt=adapt))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                state = self.state[w]
                if not state:
                    state["m"] = torch.zeros_like(w, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(w, memory_format=torch.preserve_format)
                m, v, g = state["m"], state["v"], w.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(w, alpha=group["weight_decay"])
                ratio = 1.0
                if group["adapt"]:
                    w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                w.sub_(update * (ratio * group["lr"]))
        return loss
