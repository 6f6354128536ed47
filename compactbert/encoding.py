"""What a tokenizer call returns: model inputs by name, with transformers' access methods."""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Encoding

from .errors import InputError


class BatchEncoding(dict):
    """Model inputs by name (`input_ids`, `attention_mask`, ...) with attribute access, as in
    transformers: the `encodings` behind each row, `word_ids()`, `tokens()`, `sequence_ids()`,
    `char_to_token()`, and `.to(device)` for tensors."""

    def __init__(self, data: dict[str, Any] | None = None, encodings: list[Encoding] | None = None) -> None:
        super().__init__(data or {})
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self) -> dict[str, Any]:
        return {"data": dict(self), "encodings": self.encodings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state["data"])
        self.encodings = state["encodings"]

    def to(self, device: torch.device | str) -> "BatchEncoding":
        return BatchEncoding({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()},
                             self.encodings)

    def _encoding(self, batch_index: int) -> Encoding:
        if not self.encodings:
            raise InputError("this BatchEncoding has no encodings (it was not made by a tokenizer call)")
        if not -len(self.encodings) <= batch_index < len(self.encodings):
            raise InputError(f"batch_index {batch_index} is out of range for {len(self.encodings)} encodings")
        return self.encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Per token, the index of the word it comes from (None for special and padding tokens)."""
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """Per token: 0 for the first text, 1 for the pair, None for special and padding tokens."""
        return self._encoding(batch_index).sequence_ids

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        """The token covering a character: `char_to_token(char)` for a single input,
        `char_to_token(row, char)` in a batch. None when the character maps to no token (a space)."""
        batch_index, char = (0, batch_or_char_index) if char_index is None else (batch_or_char_index, char_index)
        return self._encoding(batch_index).char_to_token(char, sequence_index)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> tuple[int, int] | None:
        batch_index, token = (0, batch_or_token_index) if token_index is None else (batch_or_token_index, token_index)
        return self._encoding(batch_index).token_to_chars(token)


def as_tensors(fields: dict[str, Any], kind: str) -> dict[str, Any]:
    """torch tensors ("pt": rows must have one length), or numpy arrays ("np": rows of different
    lengths give an object array of arrays, as in transformers)."""
    if kind not in ("pt", "np"):
        raise InputError(f"return_tensors must be 'pt', 'np' or None, got {kind!r}")
    ragged = len({len(row) for row in fields["input_ids"]}) > 1
    if kind == "pt":
        if ragged:
            raise InputError("texts of different lengths cannot form a tensor without padding; pass padding=True "
                             "(or padding='max_length')")
        return {k: torch.tensor(v, dtype=torch.long) for k, v in fields.items()}
    import numpy as np

    def array(rows: list[Any]) -> Any:
        if rows and isinstance(rows[0], (list, tuple)) and len({len(r) for r in rows}) > 1:
            out = np.empty(len(rows), dtype=object)
            out[:] = [np.asarray(r, dtype=np.int64) for r in rows]
            return out
        return np.asarray(rows, dtype=np.int64)

    return {k: array(v) for k, v in fields.items()}
