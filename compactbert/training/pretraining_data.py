"""Pre-training text read as documents, with next-sentence pairs, in batches that depend only on
(seed, stage, step): what a resumable, multi-process pre-training run draws its data from."""

from __future__ import annotations

import os
from typing import Sequence

import torch


class PretrainingCorpus:
    """Text files read as documents: one sentence (sequence) per line, a blank line between
    documents. With `next_sentence`, an example is a line and, at even odds, the next line of its
    document (label 0) or a random line of another document (label 1; also when the line is its
    document's last; with a single document, any line but the next). Every example depends only
    on (seed, stage, step, position in the batch)."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.lines: list[str] = []
        self.document: list[int] = []  # per line, its document's number
        documents = 0
        for path in self.paths:
            if not os.path.isfile(path):
                raise ValueError(f"corpus file {path} does not exist")
            fresh = True
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    text = line.strip()
                    if not text:
                        fresh = True
                        continue
                    if fresh:
                        documents, fresh = documents + 1, False
                    self.lines.append(text)
                    self.document.append(documents)
        if not self.lines:
            raise ValueError(f"the corpus {', '.join(self.paths)} holds no text")
        self.documents = documents
        self._orders: dict[tuple[int, int, int], torch.Tensor] = {}  # the passes a batch reads

    def __len__(self) -> int:
        return len(self.lines)

    def batch(self, seed: int, stage: int, step: int, size: int, next_sentence: bool
              ) -> tuple[list[str], list[str] | None, list[int] | None]:
        """Global batch `step` of a stage: (first texts, second texts or None, labels or None).
        Lines are visited in a fresh seeded order per pass over the corpus."""
        n = len(self.lines)
        picks = []
        for k in range(step * size, (step + 1) * size):
            turn, at = divmod(k, n)
            picks.append(int(self._order(seed, stage, turn)[at]))
        if not next_sentence:
            return [self.lines[i] for i in picks], None, None
        draw = torch.Generator().manual_seed(seeded(seed, stage, step, 1))
        coins = torch.rand(size, generator=draw).tolist()
        others = torch.randint(n, (size,), generator=draw).tolist()
        second, labels = [], []
        for i, coin, other in zip(picks, coins, others):
            follows = i + 1 < n and self.document[i + 1] == self.document[i]
            if coin < 0.5 and follows:
                second.append(self.lines[i + 1])
                labels.append(0)
                continue
            if self.documents > 1:
                while self.document[other] == self.document[i]:
                    other = (other + 1) % n
            elif n > 2:  # one document: any line but this one and the next
                while other in (i, i + 1):
                    other = (other + 1) % n
            second.append(self.lines[other])
            labels.append(1)
        return [self.lines[i] for i in picks], second, labels

    def _order(self, seed: int, stage: int, turn: int) -> torch.Tensor:
        key = (seed, stage, turn)
        if key not in self._orders:
            if len(self._orders) > 2:
                self._orders.clear()
            generator = torch.Generator().manual_seed(seeded(*key))
            self._orders[key] = torch.randperm(len(self.lines), generator=generator)
        return self._orders[key]


def seeded(*parts: int) -> int:
    """One 63-bit seed from several integers (a stage, a step, a purpose)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2 ** 63)
    return value
