"""Measures of how much a fast mode (bf16, int8) changes a model's meaning, on real text.

The benchmark (`compactbert bench --peers`) and the tests use the same sentences and measures:
the shipped example data (examples/data in a source checkout), and the cosine of mean-pooled
embeddings against float32, as sentence-transformers pools all-MiniLM-L6-v2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .training.data import load_records

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def quality_sentences(data: Path = DATA) -> list[str]:
    """About 400 varied English texts: the masked-LM corpora, the sentiment dev set, 20 QA contexts."""
    if not data.is_dir():
        raise FileNotFoundError(f"{data} not found: quality measures need the example data of a source checkout")
    texts = [line for name in ("corpus_train.txt", "corpus_dev.txt")
             for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    texts += [row["text"] for row in load_records(data / "sentiment_dev.csv", "train", ["text"])]
    texts += [row["context"] for row in load_records(data / "qa_dev.jsonl", "train", ["context"])[:20]]
    return texts


def pooled_embeddings(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tokenizer: Any,
                      texts: list[str], batch_size: int = 32, max_length: int = 128) -> torch.Tensor:
    """Mean over real tokens of `encode(input_ids, attention_mask)` (a last hidden state),
    (len(texts), H) in float32."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        mask = enc["attention_mask"]
        with torch.inference_mode():
            hidden = encode(enc["input_ids"], mask).float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * weights).sum(1) / weights.sum(1))
    return torch.cat(out)
