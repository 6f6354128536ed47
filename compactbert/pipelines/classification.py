"""Sequence-level pipelines: text classification and feature extraction (sentence embeddings)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import InputError
from .base import Pipeline, Prepared


_ALL = object()  # marker: top_k not given (transformers' legacy single-label output)


class TextClassificationPipeline(Pipeline):
    """Classify texts (or {"text", "text_pair"} pairs) with a sequence-classification model.

    As in transformers: without `top_k`, one {"label", "score"} per text (one text: a list of one);
    with `top_k` (an int, or None for every label), a list sorted by score per text.
    `function_to_apply`: "softmax", "sigmoid" or "none"; by default from the config's problem type.
    """

    def __call__(self, inputs: str | dict | Sequence[str | dict], top_k: Any = _ALL,
                 function_to_apply: str | None = None, batch_size: int | None = None) -> list[Any]:
        single = isinstance(inputs, (str, dict))
        rows = [inputs] if single else list(inputs)
        texts, pairs = _split_pairs(rows)
        encodings = self.tokenizer.encode_batch(texts, pairs, max_length=self.max_length)
        items = [Prepared(e.ids, e.type_ids, [], []) for e in encodings]
        logits: list[torch.Tensor | None] = [None] * len(items)
        for chunk in self._batches(items, batch_size):
            with torch.inference_mode():
                out = self.model(*self._pad([items[i] for i in chunk])).logits.float().cpu()
            for i, row in zip(chunk, out):
                logits[i] = row
        results = [self._scores(row, top_k, function_to_apply) for row in logits]  # type: ignore[arg-type]
        if isinstance(inputs, str) and top_k is _ALL:
            return [results[0]]  # transformers' legacy shape: one text gives a list of one
        return results[0] if single else results

    def _scores(self, logits: torch.Tensor, top_k: Any, function: str | None) -> Any:
        config = self.model.config
        if function is None:
            if config.problem_type == "regression":
                function = "none"
            elif config.problem_type == "multi_label_classification" or config.num_labels == 1:
                function = "sigmoid"
            else:
                function = "softmax"
        if function == "softmax":
            scores = logits.softmax(-1)
        elif function == "sigmoid":
            scores = logits.sigmoid()
        elif function == "none":
            scores = logits
        else:
            raise InputError(f"function_to_apply must be 'softmax', 'sigmoid' or 'none', got {function!r}")
        if top_k is _ALL:
            best = int(scores.argmax())
            return {"label": config.label_name(best), "score": float(scores[best])}
        ranked = sorted(({"label": config.label_name(i), "score": float(v)} for i, v in enumerate(scores)),
                        key=lambda d: -d["score"])
        return ranked if top_k is None else ranked[:top_k]


class FeatureExtractionPipeline(Pipeline):
    """Token vectors, as transformers' feature-extraction pipeline returns them: per text, the last
    hidden state of every token (special tokens included) with a batch dimension, (1, T, H), as
    nested lists, or tensors with return_tensors=True. Sentence vectors: "sentence-embedding"."""

    def __call__(self, inputs: str | Sequence[str], return_tensors: bool = False, truncation: bool | str | None = None,
                 tokenize_kwargs: dict[str, Any] | None = None, batch_size: int | None = None) -> Any:
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        options = dict(tokenize_kwargs or {})
        if truncation is not None:
            options["truncation"] = truncation
        if options.get("truncation"):
            options.setdefault("max_length", self.max_length)  # the model's limit when below the tokenizer's
        encoded = self.tokenizer(texts, **options)
        types = encoded.get("token_type_ids") or [[0] * len(ids) for ids in encoded["input_ids"]]
        items = [Prepared(ids, type_ids, [], []) for ids, type_ids in zip(encoded["input_ids"], types)]
        out: list[Any] = [None] * len(items)
        for chunk in self._batches(items, batch_size):
            ids, attention, type_ids = self._pad([items[i] for i in chunk])
            with torch.inference_mode():
                hidden = self.model(ids, attention, type_ids).last_hidden_state.float()  # (b, T, H)
            for row, i in enumerate(chunk):
                tokens = hidden[row, : len(items[i].ids)].cpu().unsqueeze(0)  # (1, T, H)
                out[i] = tokens if return_tensors else tokens.tolist()
        return out[0] if single else out


class SentenceEmbeddingPipeline(Pipeline):
    """Sentence embeddings (mean over the attention mask by default) or token vectors.

    pooling: "mean", "cls" (first token) or None (one (T, H) tensor per text).
    normalize: scale pooled vectors to unit length (cosine similarity becomes a dot product).
    For sentence-transformers' folders and `encode`, see `compactbert.SentenceTransformer`.
    """

    def __call__(self, inputs: str | Sequence[str], pooling: str | None = "mean", normalize: bool = False,
                 batch_size: int | None = None) -> torch.Tensor | list[torch.Tensor]:
        if pooling not in ("mean", "cls", None):
            raise InputError(f"pooling must be 'mean', 'cls' or None, got {pooling!r}")
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(texts, max_length=self.max_length)
        items = [Prepared(e.ids, e.type_ids, [], []) for e in encodings]
        vectors: list[torch.Tensor | None] = [None] * len(items)
        for chunk in self._batches(items, batch_size):
            ids, attention, types = self._pad([items[i] for i in chunk])
            with torch.inference_mode():
                hidden = self.model(ids, attention, types).last_hidden_state.float()  # (b, T, H)
            for row, i in enumerate(chunk):
                tokens = hidden[row, : len(items[i].ids)].cpu()  # real tokens only
                vectors[i] = tokens if pooling is None else tokens.mean(0) if pooling == "mean" else tokens[0]
        if pooling is None:
            return vectors[0] if single else vectors  # type: ignore[return-value]
        out = torch.stack(vectors)  # type: ignore[arg-type]
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out[0] if single else out


def _split_pairs(rows: Sequence[str | dict]) -> tuple[list[str], list[str] | None]:
    texts, pairs = [], []
    for n, row in enumerate(rows):
        if isinstance(row, str):
            texts.append(row)
        elif isinstance(row, dict) and "text" in row:
            texts.append(row["text"])
            if "text_pair" in row:
                pairs.append(row["text_pair"])
        else:
            raise InputError(f"input {n} must be a string or a dict with 'text' (and 'text_pair'), got {row!r}")
    if pairs and len(pairs) != len(texts):
        raise InputError("either every input has a text_pair or none does")
    return texts, pairs or None


