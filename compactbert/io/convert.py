"""Pure functions between Hub state dicts and compactbert modules, and the strict placement of weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError
from .keymaps import KeyTable


@dataclass
class LoadReport:
    """What happened to every tensor of a checkpoint when it was loaded."""

    source: str
    loaded: list[str] = field(default_factory=list)  # internal names filled from the file
    new_head: list[str] = field(default_factory=list)  # head parameters the file lacks (freshly initialised)
    unused: list[str] = field(default_factory=list)  # known Hub keys for parts this model does not have
    unexpected: list[str] = field(default_factory=list)  # Hub keys no table rule knows
    notes: list[str] = field(default_factory=list)  # ties broken, duplicates resolved, dtype casts

    def message(self) -> str:
        """One readable summary, or '' when everything was placed as expected."""
        lines = []
        if self.new_head:
            lines.append(f"newly initialised (not in the checkpoint; train before use): {_names(self.new_head)}")
        if self.unexpected:
            lines.append(f"unexpected (not part of any compactbert model; ignored): {_names(self.unexpected)}")
        if self.unused:
            lines.append(f"not used by this model class (e.g. another task's head): {_names(self.unused)}")
        lines.extend(self.notes)
        if not lines:
            return ""
        return f"loading {self.source}:\n  " + "\n  ".join(lines)


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def normalize_hub_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Legacy names to current ones: LayerNorm.gamma/beta -> weight/bias; drop position_ids buffers."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = value
    return out


def hub_to_internal(state: dict[str, torch.Tensor], table: KeyTable,
                    report: LoadReport) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a Hub state dict to internal names. Returns the tensors and internal -> Hub name."""
    internal: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    aliases: list[tuple[str, str, torch.Tensor]] = []
    for key, value in normalize_hub_keys(state).items():
        found = table.to_internal(key)
        if found is None:
            report.unexpected.append(key)
        elif found[1].alias:
            aliases.append((found[0], key, value))
        else:
            internal[found[0]] = value
            origin[found[0]] = key
    for name, key, value in aliases:  # an alias wins: it is what transformers computes with
        if name in internal and not torch.equal(internal[name], value):
            report.notes.append(f"{origin[name]} differs from {key}; used {key}, as transformers' forward does")
        internal[name] = value
        origin[name] = key
    return internal, origin


def place_weights(model: nn.Module, state: dict[str, torch.Tensor], origin: dict[str, str],
                  table: KeyTable, report: LoadReport, strict: bool = True,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Make the tensors of `state` (internal names) the parameters of `model`, which was built on
    the meta device; every tensor is placed, tied, or reported.

    Each tensor is moved to `device` and `dtype` (no copy when it is there already) and taken out of
    `state`, so a load holds about one copy of the weights at any time. Parameters the state lacks
    stay on the meta device and are listed in `report.new_head`, for the model to initialise.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    tied = decoder_is_tied(model, table)
    if table.decoder in state and table.decoder in params and tied:
        word = state.get(table.word_embeddings)
        if word is not None and state[table.decoder].shape == word.shape and torch.equal(state[table.decoder], word):
            del state[table.decoder]  # stored twice with equal values: one tensor, tied
        else:
            model.untie_decoder()  # type: ignore[operator]
            params = dict(model.named_parameters(remove_duplicate=False))
            tied = False
            report.notes.append(
                f"{origin[table.decoder]} differs from the word embeddings: kept untied, as stored "
                "(saved back with tie_word_embeddings=false)")

    for name in list(state):
        value = state.pop(name)
        if name not in params:
            report.unused.append(origin[name])
            continue
        target = params[name]
        if tuple(target.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{origin[name]} has shape {tuple(value.shape)} in {report.source}, but this model expects "
                f"{tuple(target.shape)} (from its config.json); the weights and config do not belong together"
            )
        if not value.is_floating_point():
            raise CheckpointError(f"{origin[name]} holds {str(value.dtype).replace('torch.', '')} values in "
                                  f"{report.source}, where the model needs floating-point weights; the file is "
                                  "not a checkpoint of this model")
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, nn.Parameter(value.to(device=device, dtype=dtype)))
        report.loaded.append(name)
    if tied:
        model.tie_weights()  # type: ignore[operator]  # the decoder is the placed word embeddings again

    loaded = set(report.loaded)
    missing = [n for n in params if n not in loaded and not (tied and n == table.decoder)]
    backbone = [n for n in missing if n.startswith("encoder.")]
    if backbone and strict:
        hub_names = [table.to_hub(n, with_prefix=False)[0][0] for n in backbone]
        raise CheckpointError(
            f"{report.source} lacks encoder weights this model needs: {_names(hub_names)}; the file is "
            "incomplete or belongs to another architecture (pass strict=False to initialise them randomly)"
        )
    report.new_head.extend(n for n in missing)


def decoder_is_tied(model: nn.Module, table: KeyTable) -> bool:
    """Whether the model's masked-LM decoder is the word-embedding matrix itself."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if table.decoder not in params:
        return False
    return params[table.decoder] is params[table.word_embeddings]


def internal_to_hub(model: nn.Module, table: KeyTable, with_prefix: bool) -> dict[str, torch.Tensor]:
    """The model's weights under Hub names; each tied tensor once, aliases only when untied."""
    tied = decoder_is_tied(model, table)
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():  # remove_duplicate=True: a tied tensor appears once
        names = table.to_hub(name, with_prefix)
        if not names:
            raise CheckpointError(f"internal error: no Hub name for parameter {name}")
        for hub_name, rule in names:
            if rule.alias:
                if tied:
                    continue
                param = param.detach().clone()  # a file holds no shared tensors: its own copy
            out[hub_name] = param
    return out
