"""Settings that carry their own help text, so that a default is written once: in the dataclass (or
function signature) that uses it, and the command line reads type, default and help from there."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Mapping, Sequence

HELP_KEY = "help"  # the metadata key of a field's help text


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text for the command line."""
    return dataclasses.field(default=default, metadata={HELP_KEY: help})


def add_config_options(parser: argparse.ArgumentParser, config_class: type, names: Sequence[str],
                       helps: Mapping[str, str] | None = None) -> None:
    """`--field-name` options for these fields of a dataclass: type, default and help from the field
    (a help in `helps` takes precedence, for wording that is specific to one command)."""
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for name in names:
        field = fields[name]
        text = (helps or {}).get(name) or field.metadata.get(HELP_KEY)
        if text is None:
            raise TypeError(f"{config_class.__name__}.{name} has no help text; declare it with option()")
        _add(parser, name, hints[name], field.default, text)


def add_parameter_options(parser: argparse.ArgumentParser, function: Callable[..., Any],
                          helps: Mapping[str, str]) -> None:
    """`--name` options for keyword parameters of `function`, with their defaults from its signature."""
    parameters = inspect.signature(function).parameters
    hints = typing.get_type_hints(function)
    for name, text in helps.items():
        _add(parser, name, hints[name], parameters[name].default, text)


def _add(parser: argparse.ArgumentParser, name: str, hint: Any, default: Any, text: str) -> None:
    flag = "--" + name.replace("_", "-")
    kind = _scalar(hint)
    if kind is bool:
        parser.add_argument(flag, action="store_true", default=default, help=text)
    else:
        parser.add_argument(flag, type=kind, default=default, help=text)


def _scalar(hint: Any) -> type:
    """int, float, str or bool from a field's annotation (`X | None` gives X; paths are str)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
    if hint in (int, float, str, bool):
        return hint
    return str


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds '(default: ...)' to options that have a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"
