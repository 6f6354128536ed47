"""Checkpoint I/O: weight files, per-family key tables, conversion to and from Hub names."""

from .convert import LoadReport, hub_to_internal, internal_to_hub, normalize_hub_keys, place_weights
from .atomic import save_folder, write_atomic
from .files import WEIGHT_FILES, read_weight_file, read_weights
from .keymaps import KeyTable

__all__ = [
    "KeyTable", "LoadReport", "WEIGHT_FILES", "hub_to_internal", "internal_to_hub",
    "normalize_hub_keys", "place_weights", "read_weight_file", "read_weights", "save_folder", "write_atomic",
]
