"""The fill-mask pipeline, with transformers' conventions and the cases it gets wrong handled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..models.modeling import ForMaskedLM
from ..tasks.fill_mask import normalize_mask_spelling, spaced_target
from ..tokenization import Tokenizer
from .base import Pipeline, Prepared, logger, warn_once


@dataclass
class _Candidate:
    label: str  # the target as the user wrote it
    ids: list[int]  # one id, or the pieces of a multi-token word


class FillMaskPipeline(Pipeline):
    """Predict the tokens behind `[MASK]` / `<mask>`.

    Call with one text or a list. One text with one mask gives a list of
    {"score", "token", "token_str", "sequence"}; several masks give one such list per mask; a list
    of texts gives a list of those.
    """

    def __init__(self, model: ForMaskedLM, tokenizer: Tokenizer, batch_size: int = 32,
                 allow_untrained_head: bool = False) -> None:
        """allow_untrained_head: run even when the checkpoint had no masked-LM head, so that the head
        is randomly initialised and its predictions are noise (for experiments only)."""
        if tokenizer.mask_token_id is None:
            raise InputError("this tokenizer defines no mask token, so it cannot be used for fill-mask")
        missing = [n for n in (model.load_report.new_head if model.load_report else []) if n.startswith("mlm.")]
        if missing and not allow_untrained_head:
            raise InputError(
                f"{model.load_report.source} has no masked-LM head ({len(missing)} head weights missing, "
                "e.g. " + ", ".join(missing[:2]) + "), so its predictions would be random; use a checkpoint "
                "trained for fill-mask, or pass allow_untrained_head=True (CLI: --allow-untrained-head) to "
                "experiment anyway")
        super().__init__(model, tokenizer, batch_size)

    # ---------------------------------------------------------------- preparation
    def _prepare(self, texts: Sequence[str]) -> list[Prepared]:
        tok, mask_id = self.tokenizer, self.tokenizer.mask_token_id
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {n} is a {type(text).__name__}, not a string")
        normalized = [normalize_mask_spelling(tok, t) for t in texts]
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
            prepared.append(Prepared(enc.ids, enc.type_ids, masks, space_before))
        return prepared

    # ---------------------------------------------------------------- model
    def _mask_probs(self, items: list[Prepared], batch_size: int | None) -> list[torch.Tensor]:
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
            if spaced_target(tok, target):
                # A mask after a space predicts a token that carries the space ("Ġdog", not "dog").
                text = " " + target if space_before else target
                ids = tok.encode(text, add_special_tokens=False)
                if target in vocab and ids != [vocab[target]]:
                    warn_once(f"target {target!r} follows a space here, so it is scored as the token "
                               f"{' '.join(tok.convert_ids_to_tokens(ids))!r}; pass the exact vocabulary "
                               "token to score another variant")
            elif target in vocab:
                ids = [vocab[target]]
            else:
                ids = tok.encode(target, add_special_tokens=False)
            if not ids:
                logger.warning("target %r encodes to no token; left out", target)
                continue
            if tok.unk_token_id is not None and tok.unk_token_id in ids:
                logger.warning("target %r is not in this model's vocabulary (it is spelled %s); left out",
                               target, " ".join(tok.convert_ids_to_tokens(ids)))
                continue
            if len(ids) > 1:
                pieces = tok.convert_ids_to_tokens(ids)
                warn_once(f"target {target!r} is not one token but {len(ids)} ({' '.join(pieces)}); it is "
                           "scored as a whole word: the product of its pieces' probabilities with every "
                           "piece masked")
            found.setdefault(tuple(ids), _Candidate(target, ids))
        if not found:
            raise InputError(f"none of the targets {targets!r} is in this model's vocabulary" if targets else
                             "targets is empty: give at least one word, or None to rank the whole vocabulary")
        return list(found.values())

    def _multi_token_score(self, item: Prepared, mask_index: int, pieces: list[int]) -> tuple[float, list[int]]:
        """Score of a multi-token word at one mask, and the ids of the sequence it fills."""
        mask_id = self.tokenizer.mask_token_id
        at = item.masks[mask_index]
        ids = item.ids[:at] + [mask_id] * len(pieces) + item.ids[at + 1:]
        if len(ids) > self.max_length:
            raise InputError(f"filling a {len(pieces)}-token target makes the input longer than the model's "
                             f"limit of {self.max_length} tokens")
        types = item.type_ids[:at] + [item.type_ids[at]] * len(pieces) + item.type_ids[at + 1:]
        expanded = Prepared(ids, types, [], [])
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
        candidates = None  # space before the mask? -> resolved targets; resolved once per call
        if targets is not None:
            contexts = {flag for item in items for flag in item.space_before}
            candidates = {flag: self._candidates(targets, flag) for flag in contexts}
        results = [self._postprocess(item, p, top_k, candidates) for item, p in zip(items, probs)]
        if single or len(texts) == 1:
            return results[0]
        return results

    def _postprocess(self, item: Prepared, probs: torch.Tensor, top_k: int,
                     candidates: dict[bool, list[_Candidate]] | None) -> list[Any]:
        tok = self.tokenizer
        single_mask = len(item.masks) == 1
        per_mask = []
        for m, position in enumerate(item.masks):
            scored: list[tuple[float, Any, str, list[int]]] = []  # score, token, token_str, filled ids
            if candidates is None:
                values, ids = probs[m].topk(min(top_k, probs.shape[-1]))
                for v, i in zip(values.tolist(), ids.tolist()):
                    scored.append((v, i, tok.decode([i]), _fill(item.ids, position, i)))
            else:
                for cand in candidates[item.space_before[m]]:
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


