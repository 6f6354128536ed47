"""Reading training data through the `datasets` library (local CSV, JSON Lines and parquet files,
Dataset objects, Hub datasets by name) and writing reports atomically.

We read files through `datasets.load_dataset` instead of our own readers: it handles quoting,
encodings, parquet and large files, and caches the parsed table. Errors name the file.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterable

from ..io.atomic import write_atomic
from ..logs import quiet_loggers


def write_json_atomic(path: str | os.PathLike, content: Any) -> None:
    """Write JSON atomically (io/atomic.py): readers never see a half-written file."""
    write_atomic(path, lambda target: target.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8"))


HUB_DATASET = "hf:"  # the prefix that names a dataset on the Hub instead of a file


# File suffix -> the `datasets` builder that reads it.
FILE_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_table(source: Any, split: str) -> Any:
    """A `datasets.Dataset` from any training source: a Dataset as it is, a DatasetDict's `split`,
    a local .csv (header row) / .jsonl / .json (JSON Lines) / .parquet file through
    `datasets.load_dataset` (and its cache), or a Hub dataset named with the prefix hf:
    ("hf:conll2003", "hf:glue:sst2" for a configuration). Without the prefix a string is a file, so
    a mistyped path is an error naming it, never a Hub lookup."""
    if not isinstance(source, (str, os.PathLike)):
        datasets = _datasets()
        if isinstance(source, datasets.DatasetDict):
            if split not in source:
                raise ValueError(f"the DatasetDict has no split {split!r}; it has {', '.join(source)}")
            return source[split]
        if isinstance(source, datasets.Dataset):
            return source
        raise TypeError(f"training data must be a file name, hf:NAME, or a datasets Dataset / DatasetDict; "
                        f"got {type(source).__name__}")
    text = str(source)
    if text.startswith(HUB_DATASET):
        datasets = _datasets()
        name, _, config = text[len(HUB_DATASET):].partition(":")
        try:
            return datasets.load_dataset(name, config or None, split=split)
        except Exception as exc:  # the datasets library raises many kinds (network, missing config, ...)
            raise ValueError(f"could not load dataset {text!r} split {split!r}: {exc}") from exc
    if not os.path.isfile(text):
        raise ValueError(f"{text}: no such file (a dataset from the Hub is named with the prefix "
                         f"{HUB_DATASET}, e.g. {HUB_DATASET}squad or {HUB_DATASET}glue:sst2)")
    kind = FILE_FORMATS.get(os.path.splitext(text)[1].lower())
    if kind is None:
        raise ValueError(f"{text}: training data must be .csv (header row), .jsonl / .json (JSON Lines) or .parquet")
    if os.path.getsize(text) == 0:
        raise ValueError(f"{text} holds no records")
    datasets = _datasets()
    options: dict[str, Any] = {}
    if kind == "csv":  # every column as text, as written ("NA", "007", empty cells included)
        with open(text, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        options = {"features": datasets.Features({name: datasets.Value("string") for name in header}),
                   "na_filter": False}
    try:
        with quiet_loggers("datasets"):  # it logs the parse error before raising it; we raise it once, named
            return datasets.load_dataset(kind, data_files=text, split="train", **options)
    except Exception as exc:  # pyarrow's parse errors arrive wrapped in datasets' DatasetGenerationError
        cause = exc.__cause__ or exc
        what = "JSON Lines" if kind == "json" else kind.upper()
        raise ValueError(f"{text}: not valid {what} ({cause})") from exc


def load_records(source: Any, split: str, fields: Iterable[str]) -> list[dict[str, Any]]:
    """The records of `source` (see `load_table`) as dicts, after checking that every one of `fields`
    is a column; class-label columns of Hub datasets come back as their names."""
    table = load_table(source, split)
    fields = list(fields)
    checked_columns(table, fields, source, split)
    named = {f: class_names(table.features[f]) for f in fields}
    return [{k: named[k](v) if named.get(k) else v for k, v in row.items()} for row in table]


def tokenized(table: Any, encode: Any, tokenizer: Any, purpose: str, *settings: Any) -> Any:
    """`table.map(encode, batched=True, with_indices=True)` into model features, cached by `datasets`
    under a key we state: the table's fingerprint, the tokenizer's serialised form and settings,
    `purpose` and `settings`. (datasets' default key hashes the function's closure, and a
    tokenizer's internal state changes as it encodes, so its cache would never be found again.)"""
    from datasets.fingerprint import Hasher

    key = Hasher.hash((f"compactbert {purpose} 1", table._fingerprint, tokenizer.backend.to_str(),
                       tokenizer.model_max_length, tokenizer.truncation_side, settings))
    return table.map(encode, batched=True, with_indices=True, remove_columns=table.column_names,
                     new_fingerprint=key, desc="tokenizing")


def checked_columns(table: Any, fields: list[str], source: Any, split: str) -> None:
    """A ValueError naming the source unless `table` has rows and every one of `fields`."""
    name = source if isinstance(source, (str, os.PathLike)) else f"the {split} dataset"
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        raise ValueError(f"{name} has no column(s) {', '.join(missing)}; found {', '.join(table.column_names)}")
    if len(table) == 0:
        raise ValueError(f"{name} holds no records")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ValueError('reading training data needs the `datasets` package: pip install "compactbert[data]"') \
            from None
    datasets.disable_progress_bars()
    return datasets


def class_names(feature: Any) -> Any:
    """For a ClassLabel column (or a sequence of them), a function turning ids into label names."""
    names = getattr(feature, "names", None)
    if names:
        return lambda value: names[value]
    inner = getattr(getattr(feature, "feature", None), "names", None)
    if inner:
        return lambda values: [inner[v] for v in values]
    return None
