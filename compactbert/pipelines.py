"""Pipelines: text in, predictions out. `pipeline("fill-mask", model=...)` follows transformers' conventions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .errors import InputError
from .hub import split_hub_kwargs
from .modeling import EncoderModel, ForMaskedLM, PreTrainedModel
from .tasks import ForSequenceClassification
from .tokenization import MASK_SPELLINGS, AutoTokenizer, Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class _Prepared:
    ids: list[int]
    type_ids: list[int]
    masks: list[int]  # token positions of the mask tokens
    space_before: list[bool]  # per mask: whitespace precedes it in the text (BPE leading-space variant)


@dataclass
class _Candidate:
    label: str  # the target as the user wrote it
    ids: list[int]  # one id, or the pieces of a multi-token word


class _Pipeline:
    """Model + tokenizer + batching shared by every pipeline: length-sorted batches, little padding."""

    def __init__(self, model: PreTrainedModel, tokenizer: Tokenizer, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        limits = [n for n in (tokenizer.model_max_length, model.config.max_position_embeddings) if n]
        self.max_length = min(limits)

    def _pad(self, items: Sequence[_Prepared]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        width = max(len(p.ids) for p in items)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([p.ids + [pad] * (width - len(p.ids)) for p in items])
        attention = torch.tensor([[1] * len(p.ids) + [0] * (width - len(p.ids)) for p in items])
        types = None
        if self.tokenizer.returns_token_type_ids and self.model.config.encoder_spec().type_vocab_size:
            types = torch.tensor([p.type_ids + [0] * (width - len(p.type_ids)) for p in items])
        device = self.model.device
        return ids.to(device), attention.to(device), None if types is None else types.to(device)

    def _batches(self, items: Sequence[_Prepared], batch_size: int | None) -> Iterator[list[int]]:
        """Indices of `items` in batches of similar length."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
        size = batch_size or self.batch_size
        for start in range(0, len(order), size):
            yield order[start:start + size]


class FillMaskPipeline(_Pipeline):
    """Predict the tokens behind `[MASK]` / `<mask>`.

    Call with one text or a list. One text with one mask gives a list of
    {"score", "token", "token_str", "sequence"}; several masks give one such list per mask; a list
    of texts gives a list of those.
    """

    def __init__(self, model: ForMaskedLM, tokenizer: Tokenizer, batch_size: int = 32) -> None:
        if tokenizer.mask_token_id is None:
            raise InputError("this tokenizer defines no mask token, so it cannot be used for fill-mask")
        super().__init__(model, tokenizer, batch_size)

    # ---------------------------------------------------------------- preparation
    def _prepare(self, texts: Sequence[str]) -> list[_Prepared]:
        tok, mask_id = self.tokenizer, self.tokenizer.mask_token_id
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {n} is a {type(text).__name__}, not a string")
        normalized = [tok.normalize_mask_spelling(t) for t in texts]
        encodings = tok.encode_batch(normalized)
        prepared = []
        for n, (text, enc) in enumerate(zip(normalized, encodings)):
            masks = [i for i, t in enumerate(enc.ids) if t == mask_id]
            if not masks:
                raise InputError(
                    f"no mask token in input {n} ({_preview(texts[n])}); write [MASK] or <mask> where a word "
                    f"should be predicted (this model's mask token is {tok.mask_token!r})")
            if len(enc.ids) > self.max_length:
                enc = tok.encode_batch([text], max_length=self.max_length)[0]
                kept = [i for i, t in enumerate(enc.ids) if t == mask_id]
                if len(kept) < len(masks):
                    raise InputError(
                        f"input {n} is {len(encodings[n].ids)} tokens long and a mask at token "
                        f"{masks[len(kept)]} lies beyond this model's limit of {self.max_length} tokens; "
                        "shorten the text before the mask")
                logger.warning("input %d was truncated from %d to %d tokens (the model's limit)",
                               n, len(encodings[n].ids), self.max_length)
                masks = kept
            space_before = []
            for i in masks:
                start = enc.offsets[i][0]
                space_before.append(start > 0 and text[start - 1].isspace() or
                                    (start < len(text) and text[start].isspace()))
            prepared.append(_Prepared(enc.ids, enc.type_ids, masks, space_before))
        return prepared

    # ---------------------------------------------------------------- model
    def _mask_probs(self, items: list[_Prepared], batch_size: int | None) -> list[torch.Tensor]:
        """Softmax over the vocabulary at every mask: one (masks, V) tensor per item."""
        out: list[torch.Tensor | None] = [None] * len(items)
        for chunk in self._batches(items, batch_size):
            ids, attention, types = self._pad([items[i] for i in chunk])
            positions = ids == self.tokenizer.mask_token_id
            with torch.inference_mode():
                logits = self.model(ids, attention, types, positions=positions).logits  # (N, V)
            probs = logits.float().softmax(dim=-1).cpu()
            counts = positions.sum(dim=1).tolist()
            for i, part in zip(chunk, probs.split(counts)):
                out[i] = part
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------- targets
    def _candidates(self, targets: str | Sequence[str], space_before: bool) -> list[_Candidate]:
        tok = self.tokenizer
        vocab = tok.get_vocab()
        found: dict[tuple[int, ...], _Candidate] = {}
        for target in [targets] if isinstance(targets, str) else list(targets):
            if not isinstance(target, str):
                raise InputError(f"targets must be strings, got {type(target).__name__}")
            if tok.byte_level and not target.startswith(("Ġ", " ")):
                # A mask after a space predicts a token that carries the space ("Ġdog", not "dog").
                text = " " + target if space_before else target
                ids = tok.encode(text, add_special_tokens=False)
                if target in vocab and ids != [vocab[target]]:
                    _warn_once(f"target {target!r} follows a space here, so it is scored as the token "
                               f"{' '.join(tok.convert_ids_to_tokens(ids))!r}; pass the exact vocabulary "
                               "token to score another variant")
            elif target in vocab:
                ids = [vocab[target]]
            else:
                ids = tok.encode(target, add_special_tokens=False)
            if not ids:
                logger.warning("target %r encodes to no token; ignored", target)
                continue
            if len(ids) > 1:
                pieces = tok.convert_ids_to_tokens(ids)
                _warn_once(f"target {target!r} is not one token but {len(ids)} ({' '.join(pieces)}); it is "
                           "scored as a whole word: the product of its pieces' probabilities with every "
                           "piece masked")
            found.setdefault(tuple(ids), _Candidate(target, ids))
        if not found:
            raise InputError(f"none of the targets {targets!r} could be encoded")
        return list(found.values())

    def _multi_token_score(self, item: _Prepared, mask_index: int, pieces: list[int]) -> tuple[float, list[int]]:
        """Score of a multi-token word at one mask, and the ids of the sequence it fills."""
        mask_id = self.tokenizer.mask_token_id
        at = item.masks[mask_index]
        ids = item.ids[:at] + [mask_id] * len(pieces) + item.ids[at + 1:]
        if len(ids) > self.max_length:
            raise InputError(f"filling a {len(pieces)}-token target makes the input longer than the model's "
                             f"limit of {self.max_length} tokens")
        types = item.type_ids[:at] + [item.type_ids[at]] * len(pieces) + item.type_ids[at + 1:]
        expanded = _Prepared(ids, types, [], [])
        batch_ids, attention, batch_types = self._pad([expanded])
        positions = torch.zeros_like(batch_ids, dtype=torch.bool)
        positions[0, at:at + len(pieces)] = True
        with torch.inference_mode():
            probs = self.model(batch_ids, attention, batch_types, positions=positions).logits.float().softmax(-1)
        score = float(torch.prod(probs[torch.arange(len(pieces)), torch.tensor(pieces)]))
        filled = ids[:at] + pieces + ids[at + len(pieces):]
        return score, filled

    # ---------------------------------------------------------------- call
    def __call__(self, inputs: str | Sequence[str], top_k: int = 5, targets: str | Sequence[str] | None = None,
                 batch_size: int | None = None) -> list[Any]:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts:
            return []
        items = self._prepare(texts)
        probs = self._mask_probs(items, batch_size)
        results = [self._postprocess(item, p, top_k, targets) for item, p in zip(items, probs)]
        if single or len(texts) == 1:
            return results[0]
        return results

    def _postprocess(self, item: _Prepared, probs: torch.Tensor, top_k: int,
                     targets: str | Sequence[str] | None) -> list[Any]:
        tok = self.tokenizer
        single_mask = len(item.masks) == 1
        per_mask = []
        for m, position in enumerate(item.masks):
            scored: list[tuple[float, Any, str, list[int]]] = []  # score, token, token_str, filled ids
            if targets is None:
                values, ids = probs[m].topk(min(top_k, probs.shape[-1]))
                for v, i in zip(values.tolist(), ids.tolist()):
                    scored.append((v, i, tok.decode([i]), _fill(item.ids, position, i)))
            else:
                for cand in self._candidates(targets, item.space_before[m]):
                    if len(cand.ids) == 1:
                        i = cand.ids[0]
                        scored.append((float(probs[m, i]), i, tok.decode([i]), _fill(item.ids, position, i)))
                    else:
                        score, filled = self._multi_token_score(item, m, cand.ids)
                        scored.append((score, cand.ids, tok.decode(cand.ids), filled))
                scored.sort(key=lambda s: -s[0])
                scored = scored[:top_k]
            per_mask.append([
                {"score": s, "token": t, "token_str": t_str,
                 "sequence": tok.decode([i for i in filled if i != tok.pad_token_id], skip_special_tokens=single_mask)}
                for s, t, t_str, filled in scored
            ])
        return per_mask[0] if single_mask else per_mask


def _fill(ids: list[int], position: int, token: int) -> list[int]:
    filled = list(ids)
    filled[position] = token
    return filled


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


_ALL = object()  # marker: top_k not given (transformers' legacy single-label output)


class TextClassificationPipeline(_Pipeline):
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
        items = [_Prepared(e.ids, e.type_ids, [], []) for e in encodings]
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
        labels = config.id2label or {i: f"LABEL_{i}" for i in range(config.num_labels)}
        if top_k is _ALL:
            best = int(scores.argmax())
            return {"label": labels[best], "score": float(scores[best])}
        ranked = sorted(({"label": labels[i], "score": float(v)} for i, v in enumerate(scores)),
                        key=lambda d: -d["score"])
        return ranked if top_k is None else ranked[:top_k]


class FeatureExtractionPipeline(_Pipeline):
    """Sentence embeddings (mean over the attention mask by default) or token vectors.

    pooling: "mean", "cls" (first token) or None (one (T, H) tensor per text).
    normalize: scale pooled vectors to unit length (cosine similarity becomes a dot product).
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
        items = [_Prepared(e.ids, e.type_ids, [], []) for e in encodings]
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


# task -> (pipeline class, model class it loads)
TASKS: dict[str, tuple[type[_Pipeline], type[PreTrainedModel]]] = {
    "fill-mask": (FillMaskPipeline, ForMaskedLM),
    "text-classification": (TextClassificationPipeline, ForSequenceClassification),
    "sentiment-analysis": (TextClassificationPipeline, ForSequenceClassification),
    "feature-extraction": (FeatureExtractionPipeline, EncoderModel),
}


def pipeline(task: str, model: str | os.PathLike | PreTrainedModel, tokenizer: str | Tokenizer | None = None,
             dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
             batch_size: int = 32, quantize: str | None = None, **kwargs: Any) -> Any:
    """Build a pipeline for `task` from a model name, folder or instance.

    Tasks: fill-mask, text-classification (alias sentiment-analysis), feature-extraction.
    Hub options (revision, cache_dir, local_files_only, token) are passed to every download.
    quantize="int8" applies dynamic int8 quantization to the encoder's linear layers (CPU).
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; available: {', '.join(sorted(TASKS))}")
    pipeline_class, model_class = TASKS[task]
    hub, rest = split_hub_kwargs(kwargs)
    if rest:
        raise TypeError(f"pipeline() got unexpected arguments: {', '.join(rest)}")
    if isinstance(model, PreTrainedModel):
        if not isinstance(model, model_class):
            raise InputError(f"{task} needs a {model_class.__name__}, got a {type(model).__name__}")
        if tokenizer is None:
            raise InputError("pass tokenizer=... (a name, folder or Tokenizer) along with a model instance")
        loaded = model.quantize(quantize) if quantize else model
    else:
        loaded = model_class.from_pretrained(model, dtype=dtype, quantize=quantize, **hub)
        tokenizer = tokenizer if tokenizer is not None else str(model)
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub)
    if device is not None:
        loaded = loaded.to(device)
    return pipeline_class(loaded, tokenizer, batch_size=batch_size)


__all__ = ["FeatureExtractionPipeline", "FillMaskPipeline", "MASK_SPELLINGS", "TextClassificationPipeline",
           "pipeline"]
