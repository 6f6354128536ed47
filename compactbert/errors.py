"""Exceptions raised by compactbert. Each message says what happened and what to do."""

from __future__ import annotations


class CompactBertError(Exception):
    """Base class for every error compactbert raises on purpose."""


class ConfigError(CompactBertError, ValueError):
    """A configuration value is invalid or a config file cannot be understood."""


class CheckpointError(CompactBertError):
    """A weight file or checkpoint folder is missing, corrupt, truncated or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled weight file tried to run code or load objects that are not plain tensors."""


class InputError(CompactBertError, ValueError):
    """Model or pipeline input that cannot be processed (wrong shape, ids out of range, no mask...)."""


class UnknownModelError(CompactBertError, ValueError):
    """A model name that is neither a local folder nor a known or reachable Hub repository."""
