"""Token classification (named entities) with word-level aggregation, following transformers' conventions.

aggregation_strategy:
  "none"    one entry per token: {"entity", "score", "index", "word", "start", "end"}
  "simple"  adjacent tokens with the same tag (B-/I- aware) grouped: {"entity_group", "score", "word", "start", "end"}
  "first" / "max" / "average"  each word first takes the label of its first piece / most confident
            piece / averaged scores, then words are grouped as in "simple"
Labels in `ignore_labels` (default "O") are left out.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from ..errors import InputError
from .base import Pipeline, Prepared

STRATEGIES = ("none", "simple", "first", "max", "average")


class TokenClassificationPipeline(Pipeline):
    def __call__(self, inputs: str | Sequence[str], aggregation_strategy: str = "none",
                 ignore_labels: Sequence[str] = ("O",), batch_size: int | None = None) -> list[Any]:
        if aggregation_strategy not in STRATEGIES:
            raise InputError(f"aggregation_strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {aggregation_strategy!r}")
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        encodings = self.tokenizer.encode_batch(texts, max_length=self.max_length)
        items = [Prepared(e.ids, e.type_ids, [], []) for e in encodings]
        scores: list[torch.Tensor | None] = [None] * len(items)
        for chunk in self._batches(items, batch_size):
            with torch.inference_mode():
                logits = self.model(*self._pad([items[i] for i in chunk])).logits.float().cpu()  # (b, T, L)
            for row, i in enumerate(chunk):
                scores[i] = logits[row, : len(items[i].ids)].softmax(-1)
        results = []
        for text, encoding, token_scores in zip(texts, encodings, scores):
            tokens = self._pre_entities(text, encoding, token_scores, aggregation_strategy)  # type: ignore[arg-type]
            entities = self._aggregate(tokens, aggregation_strategy)
            results.append([e for e in entities if e.get("entity", e.get("entity_group")) not in ignore_labels])
        return results[0] if single else results

    # ---------------------------------------------------------------- per token
    def _pre_entities(self, text: str, encoding: Any, scores: torch.Tensor, strategy: str) -> list[dict]:
        tok = self.tokenizer
        prefix = getattr(tok.backend.model, "continuing_subword_prefix", None)
        # SentencePiece marks every word's first piece ("▁"), even the text's first word: word-aware.
        # (Byte-level BPE's "Ġ" is absent from a text's first word, so it gets the heuristic below.)
        starts = tok.word_start if tok.word_start == "▁" else None
        unk = tok.convert_tokens_to_ids(tok.special_tokens.get("unk_token", ""))
        if not (prefix or starts) and strategy in ("first", "max", "average"):
            warnings.warn("Tokenizer does not support real words, using fallback heuristic", UserWarning,
                          stacklevel=3)
        out = []
        for index, (token_id, (start, end), special) in enumerate(
                zip(encoding.ids, encoding.offsets, encoding.special_tokens_mask)):
            if special:
                continue
            word = tok.convert_ids_to_tokens(token_id)
            original = text[start:end]
            if prefix:  # "##ing" is longer than the text it covers: a continuation piece
                is_subword = len(word) != len(original)
            elif starts:  # a piece without the word-start mark continues a word
                is_subword = not word.startswith(starts)
            else:  # byte-level BPE: a piece not preceded by a space continues a word
                is_subword = start > 0 and " " not in text[start - 1:start + 1]
            if token_id == unk:
                word, is_subword = original, False
            out.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                        "is_subword": is_subword})
        return out

    def _label(self, index: int) -> str:
        return self.model.config.label_name(index)

    def _aggregate(self, tokens: list[dict], strategy: str) -> list[dict]:
        if strategy in ("none", "simple"):
            entities = []
            for t in tokens:
                best = int(t["scores"].argmax())
                entities.append({"entity": self._label(best), "score": float(t["scores"][best]), "index": t["index"],
                                 "word": t["word"], "start": t["start"], "end": t["end"]})
            return entities if strategy == "none" else self._group(entities)
        return self._group(self._words(tokens, strategy))

    # ---------------------------------------------------------------- words and groups
    def _words(self, tokens: list[dict], strategy: str) -> list[dict]:
        groups: list[list[dict]] = []
        for t in tokens:
            if groups and t["is_subword"]:
                groups[-1].append(t)
            else:
                groups.append([t])
        words = []
        for pieces in groups:
            if strategy == "first":
                scores = pieces[0]["scores"]
            elif strategy == "max":
                scores = max(pieces, key=lambda p: float(p["scores"].max()))["scores"]
            else:  # average
                scores = torch.stack([p["scores"] for p in pieces]).mean(0)
            best = int(scores.argmax())
            words.append({"entity": self._label(best), "score": float(scores[best]),
                          "word": self._join([p["word"] for p in pieces]), "pieces": [p["word"] for p in pieces],
                          "start": pieces[0]["start"], "end": pieces[-1]["end"]})
        return words

    def _group(self, entities: list[dict]) -> list[dict]:
        groups: list[list[dict]] = []
        for entity in entities:
            bi, tag = _tag(entity["entity"])
            if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [{"entity_group": g[0]["entity"].split("-", 1)[-1], "score": sum(e["score"] for e in g) / len(g),
                 "word": self._join_group(g), "start": g[0]["start"], "end": g[-1]["end"]}
                for g in groups]

    def _join_group(self, group: list[dict]) -> str:
        """The text of a group of tokens or words. SentencePiece words are joined from their pieces, whose
        "▁" marks keep the spaces between words (decoded words have lost them); other tokenizers join
        the words as transformers does."""
        if self.tokenizer.word_start == "▁":
            return self._join([piece for e in group for piece in e.get("pieces", [e["word"]])])
        return self._join([e["word"] for e in group])

    def _join(self, tokens: list[str]) -> str:
        decoder = self.tokenizer.backend.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity type) of a label; a label without a prefix counts as inside."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label
