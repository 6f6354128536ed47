"""The search space of BORT's extraction: architectures (D, A, H, I) of the teacher's family, their
analytic size p and inference cost i, the maximum point T and the size-and-speed factor of W."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

from ...config import BaseConfig
from ...errors import ConfigError
from ...nn.costs import encoder_flops_per_token, parameter_counts

# The config fields holding depth, heads, width and feed-forward width, per family.
GEOMETRY_FIELDS = {
    "bert": ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size"),
    "roberta": ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size"),
    "distilbert": ("n_layers", "n_heads", "dim", "hidden_dim"),
}

# The default space, as third parties summarise the paper (training.md section 2; unverified).
DEFAULT_SPACE = {"depth": [2, 4, 6, 8, 10, 12], "heads": [4, 8, 12, 16], "width": [512, 768, 1024],
                 "ffn": [256, 512, 768, 1024, 3072]}


@dataclass(frozen=True, order=True)
class Architecture:
    depth: int  # D, encoder layers
    heads: int  # A, attention heads
    width: int  # H, hidden size
    ffn: int  # I, feed-forward width

    @property
    def name(self) -> str:
        return f"D{self.depth}-A{self.heads}-H{self.width}-I{self.ffn}"

    def config(self, base: BaseConfig) -> BaseConfig:
        """`base` (the teacher's config) with this geometry; everything else (vocabulary,
        positions, norms, activation) as the teacher has it."""
        fields = geometry_fields(base)
        return base.replace(**dict(zip(fields, (self.depth, self.heads, self.width, self.ffn))))


def geometry_fields(config: BaseConfig) -> tuple[str, str, str, str]:
    if config.model_type not in GEOMETRY_FIELDS:
        raise ConfigError(f"extraction searches the depth, heads, width and feed-forward width of BERT-style "
                          f"models ({', '.join(GEOMETRY_FIELDS)}); the teacher is {config.model_type}")
    return GEOMETRY_FIELDS[config.model_type]  # type: ignore[return-value]


@dataclass(frozen=True)
class Costs:
    parameters: int  # p: the encoder layers' parameters (BORT's effective size)
    net_parameters: int  # the encoder with its embeddings
    flops: int  # i: operations per token at the stated sequence length


def costs(config: BaseConfig, length: int) -> Costs:
    spec = config.encoder_spec()
    counts = parameter_counts(spec)
    return Costs(counts.layers, counts.net, encoder_flops_per_token(spec, length))


class SearchSpace:
    """Every (D, A, H, I) of the given value lists with A dividing H, ordered by analytic (p, i)."""

    def __init__(self, depth: Sequence[int], heads: Sequence[int], width: Sequence[int], ffn: Sequence[int]) -> None:
        self.values = {"depth": sorted(set(depth)), "heads": sorted(set(heads)), "width": sorted(set(width)),
                       "ffn": sorted(set(ffn))}
        for name, values in self.values.items():
            if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
                raise ConfigError(f"search space: {name} must be a non-empty list of positive integers, got {values}")
        self.candidates = [Architecture(*values) for values in itertools.product(*self.values.values())
                           if values[2] % values[1] == 0]
        if not self.candidates:
            raise ConfigError("search space: no heads value divides any width; nothing to search")

    @classmethod
    def load(cls, source: str | os.PathLike | dict[str, Any] | None = None) -> "SearchSpace":
        """"default" (or None), a dict, or a JSON file with lists "depth", "heads", "width", "ffn"."""
        if source is None or source == "default":
            data = DEFAULT_SPACE
        elif isinstance(source, dict):
            data = source
        else:
            try:
                data = json.loads(open(source, encoding="utf-8").read())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"search space file {source}: {exc}") from None
        if not isinstance(data, dict) or set(data) != set(DEFAULT_SPACE):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"a search space names exactly {', '.join(DEFAULT_SPACE)} (lists of integers), got {keys}")
        return cls(**data)

    def maximum(self) -> Architecture:
        """T, the space's maximum point: the deepest, widest, largest-FFN candidate (most heads)."""
        top = max(self.values["depth"]), max(self.values["width"]), max(self.values["ffn"])
        # heads change neither p nor i; 1 stands in when no listed value divides the widest width
        heads = max((a for a in self.values["heads"] if top[1] % a == 0), default=1)
        return Architecture(top[0], heads, top[1], top[2])

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.values.items()}


def size_speed_factor(f: Costs, top: Costs) -> float:
    """W without its error term: ((p(T) - p(f)) / p(T)) x ((i(T) - i(f)) / i(T))."""
    return max(0.0, (top.parameters - f.parameters) / top.parameters) * max(0.0, (top.flops - f.flops) / top.flops)
