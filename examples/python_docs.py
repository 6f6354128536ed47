"""A corpus of English prose from this Python's own documentation, for the examples that need more
text than examples/data ships: the pydoc topics and the docstrings of the standard library (read
with `ast`; nothing is imported). Documents of sentences; a share of the documents is held out.
The text depends on the Python version (the examples print it)."""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

import torch


def sentences(text: str) -> list[str]:
    """Prose sentences of a documentation text: code blocks, headings and fragments left out."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith((" ", "\t")) or ">>>" in paragraph or "::" in paragraph:
            continue
        flat = " ".join(paragraph.split())
        for sentence in re.split(r"(?<=[.!?])\s+", flat):
            if 30 <= len(sentence) <= 250 and sentence[0].isupper() and sentence[-1] in ".!?":
                found.append(sentence)
    return found


def python_documents() -> list[list[str]]:
    """Documents of sentences: each pydoc topic, and each module's, class's or function's docstring."""
    import pydoc_data.topics

    documents = [sentences(text) for _, text in sorted(pydoc_data.topics.topics.items())]
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo")
    for path in sorted(root.rglob("*.py")):
        if any(part in skip for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                documents.append(sentences(ast.get_docstring(node) or ""))
    unique, seen = [], set()
    for document in documents:
        kept = [s for s in document if s not in seen]
        seen.update(kept)
        if kept:
            unique.append(kept)
    return unique


def write_corpus(folder: Path, held_out_share: float = 0.05) -> tuple[Path, list[str], int]:
    documents = python_documents()
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(0)).tolist()
    cut = int(len(documents) * held_out_share)
    held_out = [s for i in order[:cut] for s in documents[i]]
    train = [documents[i] for i in order[cut:]]
    path = folder / "train.txt"
    path.write_text("\n\n".join("\n".join(d) for d in train) + "\n", encoding="utf-8")
    (folder / "held_out.txt").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    return path, held_out, sum(len(d) for d in train)
