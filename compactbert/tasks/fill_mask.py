"""Fill-mask input: the mask as users spell it, and target words as the vocabulary holds them."""

from __future__ import annotations

from typing import Any

MASK_SPELLINGS = ("[MASK]", "<mask>")


def normalize_mask_spelling(tokenizer: Any, text: str) -> str:
    """Replace `[MASK]` / `<mask>` with this tokenizer's own mask token."""
    mask = tokenizer.mask_token
    if mask is None:
        return text
    for spelling in MASK_SPELLINGS:
        if spelling != mask:
            text = text.replace(spelling, mask)
    return text


def spaced_target(tokenizer: Any, target: str) -> bool:
    """Whether `target` must be scored as the word after a space: the tokenizer attaches a space to
    the next token (byte-level BPE "Ġdog", SentencePiece "▁dog") and the target does not say so."""
    marker = tokenizer.word_start
    return marker is not None and not target.startswith((marker, " "))
