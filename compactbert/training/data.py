"""Reading training data (CSV with a header row, JSON lines, `datasets` datasets by name) and
writing reports atomically.

Errors name the file and the line as an editor shows it.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterable

from ..io.atomic import write_atomic


def write_json_atomic(path: str | os.PathLike, content: Any) -> None:
    """Write JSON atomically (io/atomic.py): readers never see a half-written file."""
    write_atomic(path, lambda target: target.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8"))


def read_csv(path: str | os.PathLike, columns: Iterable[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header row that has at least `columns`."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(columns) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} has no column(s) {', '.join(sorted(missing))}; found {reader.fieldnames}")
        return list(reader)


def read_jsonl(path: str | os.PathLike, fields: Iterable[str]) -> list[dict[str, Any]]:
    """Records of a JSON lines file (one object per line, blank lines skipped) that have `fields`."""
    fields = list(fields)
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {n}: expected a JSON object, got {type(record).__name__}")
            missing = [f for f in fields if f not in record]
            if missing:
                raise ValueError(f"{path}, line {n}: no field(s) {', '.join(missing)}; found {', '.join(record)}")
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


HUB_DATASET = "hf:"  # the prefix that names a dataset on the Hub instead of a file


def load_records(source: str | os.PathLike, split: str, fields: Iterable[str]) -> list[dict[str, Any]]:
    """Records from a local .csv / .jsonl / .json file, or from the `datasets` library for a name
    with the prefix hf: ("hf:conll2003", "hf:squad", "hf:glue:sst2" for a configuration). Without the
    prefix a source is a file, so a mistyped path is an error naming it, never a Hub lookup."""
    fields = list(fields)
    text = str(source)
    if not text.startswith(HUB_DATASET):
        if not os.path.isfile(text):
            raise ValueError(f"{text}: no such file (a dataset from the Hub is named with the prefix "
                             f"{HUB_DATASET}, e.g. {HUB_DATASET}squad or {HUB_DATASET}glue:sst2)")
        if text.endswith(".csv"):
            return read_csv(text, fields)
        return read_jsonl(text, fields)
    text = text[len(HUB_DATASET):]
    try:
        import datasets  # optional: only for loading public datasets by name
    except ImportError:
        raise ValueError(f"{HUB_DATASET}{text}: loading a dataset from the Hub needs the `datasets` package, "
                         "which is not installed (pip install datasets)") from None
    name, _, config = text.partition(":")
    try:
        table = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # the datasets library raises many kinds (network, missing config, ...)
        raise ValueError(f"could not load dataset {text!r} split {split!r}: {exc}") from exc
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        raise ValueError(f"dataset {text!r} has no column(s) {', '.join(missing)}; found {table.column_names}")
    named = {f: _class_names(table.features[f]) for f in fields}
    return [{k: named[k](v) if named.get(k) else v for k, v in row.items()} for row in table]


def _class_names(feature: Any) -> Any:
    """For a ClassLabel column (or a sequence of them), a function turning ids into label names."""
    names = getattr(feature, "names", None)
    if names:
        return lambda value: names[value]
    inner = getattr(getattr(feature, "feature", None), "names", None)
    if inner:
        return lambda values: [inner[v] for v in values]
    return None
