"""Measures of how much a fast mode (bf16, int8) changes a model's meaning, on real text.

The benchmark (`compactbert bench --peers`) and the tests use the same sentences and measures:
the shipped example data (examples/data in a source checkout), and the cosine of mean-pooled
embeddings against float32, as sentence-transformers pools all-MiniLM-L6-v2.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def quality_sentences(data: Path = DATA) -> list[str]:
    """About 400 varied English texts: the masked-LM corpora, the sentiment dev set, 20 QA contexts."""
    if not data.is_dir():
        raise FileNotFoundError(f"{data} not found: quality measures need the example data of a source checkout")
    texts = [line for name in ("corpus_train.txt", "corpus_dev.txt")
             for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    with (data / "sentiment_dev.csv").open(encoding="utf-8", newline="") as f:
        texts += [row["text"] for row in csv.DictReader(f)]
    lines = (data / "qa_dev.jsonl").read_text(encoding="utf-8").splitlines()
    texts += [json.loads(line)["context"] for line in lines[:20]]
    return texts


def pooled_embeddings(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 32,
                      max_length: int = 128) -> torch.Tensor:
    """Mean of the last hidden state over real tokens, (len(texts), H) in float32."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        mask = enc["attention_mask"]
        with torch.inference_mode():
            hidden = model(enc["input_ids"], mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * weights).sum(1) / weights.sum(1))
    return torch.cat(out)
