"""Extractive QA input: a long context read in overlapping windows after its question."""

from __future__ import annotations

from typing import Any, Sequence

from tokenizers import Encoding

from ..errors import InputError


def encode_windows(tokenizer: Any, questions: Sequence[str], contexts: Sequence[str], max_length: int,
                   stride: int) -> list[list[Encoding]]:
    """Per (question, context): windows of at most `max_length` tokens, each repeating the whole
    question and overlapping the previous window's context tokens by `stride`."""
    if stride >= max_length:
        raise InputError(f"doc_stride ({stride}) must be smaller than max_seq_len ({max_length})")
    specials = tokenizer.backend.num_special_tokens_to_add(True)
    firsts = tokenizer.encode_batch(questions, add_special_tokens=False)
    room = max_length - specials - max((len(e.ids) for e in firsts), default=0)
    if room <= stride:  # the backend would abort the process (a Rust panic) rather than raise
        raise InputError(f"a question of {max_length - room - specials} tokens leaves {max(room, 0)} of "
                         f"max_seq_len={max_length} for the context, not more than doc_stride={stride}; "
                         "shorten the question, raise max_seq_len or lower doc_stride")
    encodings = tokenizer.encode_batch(questions, contexts, max_length=max_length, strategy="only_second",
                                       stride=stride)
    return [[e, *e.overflowing] for e in encodings]
