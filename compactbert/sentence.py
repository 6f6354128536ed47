"""Sentence embeddings as sentence-transformers computes them, from its own folder files.

A sentence-transformers folder lists its modules in `modules.json`: the Transformer (the encoder,
with `max_seq_length` and `do_lower_case` in `sentence_bert_config.json`), a Pooling module (its
mode in `1_Pooling/config.json`) and optionally Normalize. `SentenceTransformer` reads those files
and runs the same steps on a compactbert encoder; `encode` takes sentence-transformers' arguments
and returns its types.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .io.files import read_json
from .devices import resolve_device
from .errors import ConfigError, InputError
from .io.hub import find_file, split_hub_kwargs
from .models.modeling import EncoderModel
from .tokenizer_files import AutoTokenizer

logger = logging.getLogger(__name__)

# Pooling modes in the order sentence-transformers concatenates them, with their legacy config keys.
POOLING_MODES = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                 "mean": "pooling_mode_mean_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                 "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
_TRANSFORMER, _POOLING, _NORMALIZE = (f"sentence_transformers.models.{n}" for n in ("Transformer", "Pooling",
                                                                                    "Normalize"))


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """Sentence vectors (B, H * len(modes)) from token vectors (B, T, H) and the attention mask
    (B, T), each mode as sentence-transformers' Pooling computes it, concatenated in `modes` order."""
    weights = mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
    hidden = hidden.float()
    counts = weights.sum(1).clamp(min=1e-9)  # (B, 1)
    out = []
    for mode in modes:
        if mode == "cls":
            first = mask.to(torch.int).argmax(1)  # first real token (left padding too)
            out.append(hidden[torch.arange(hidden.shape[0]), first])
        elif mode == "max":
            out.append(hidden.masked_fill(weights == 0, float("-inf")).max(1).values)
        elif mode == "mean":
            out.append((hidden * weights).sum(1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            out.append((hidden * weights).sum(1) / counts.sqrt())
        elif mode == "weightedmean":
            positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=torch.float32)
            positions = positions.view(1, -1, 1) - mask.to(torch.int).argmax(1).view(-1, 1, 1)
            weighted = weights * positions
            out.append((hidden * weighted).sum(1) / weighted.sum(1).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = mask.shape[1] - 1 - mask.flip(1).to(torch.int).argmax(1)
            out.append(hidden[torch.arange(hidden.shape[0]), last])
        else:
            raise ConfigError(f"pooling mode {mode!r} is unknown; choose from {', '.join(POOLING_MODES)}")
    return torch.cat(out, dim=-1)


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The modes a Pooling config names: `pooling_mode` (a name or list), or the legacy booleans."""
    named = config.get("pooling_mode")
    if named is not None:
        modes = (named,) if isinstance(named, str) else tuple(named)
    else:
        modes = tuple(mode for mode, key in POOLING_MODES.items() if config.get(key))
    modes = modes or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ConfigError(f"pooling mode {unknown[0]!r} is unknown; choose from {', '.join(POOLING_MODES)}")
    return modes


class SentenceTransformer:
    """A sentence-transformers model folder (or Hub id) on a compactbert encoder.

    Reads modules.json (Transformer, Pooling, Normalize), sentence_bert_config.json
    (max_seq_length, do_lower_case), the pooling config and the prompts of
    config_sentence_transformers.json. A folder without modules.json gets mean pooling, as
    sentence-transformers gives it. Other module types (Dense, ...) are refused by name.
    """

    def __init__(self, model_name_or_path: str | os.PathLike, device: Any = None,
                 dtype: torch.dtype | str | None = None, truncate_dim: int | None = None,
                 quantize: str | None = None, **kwargs: Any) -> None:
        hub, rest = split_hub_kwargs(kwargs)
        if rest:
            raise TypeError(f"SentenceTransformer() got unexpected arguments: {', '.join(sorted(rest))}")
        name = model_name_or_path

        def load(filename: str, kind: type = dict) -> Any:
            return read_json(find_file(name, filename, **hub), kind)

        modules = load("modules.json", list) or [{"path": "", "type": _TRANSFORMER}, {"path": "", "type": _POOLING}]
        types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
        known = (_TRANSFORMER, _POOLING, _NORMALIZE)
        unsupported = [t for t in types if t not in known]
        if unsupported or not types or types[0] != _TRANSFORMER or _POOLING not in types:
            raise ConfigError(f"{name}: modules.json lists {', '.join(types) or 'nothing'}; compactbert supports a "
                              "Transformer followed by Pooling and optionally Normalize"
                              + (f" (not {', '.join(unsupported)})" if unsupported else ""))
        encoder_path = str(modules[0].get("path", "")) or None
        pooling_path = next((str(m.get("path", "")) for m in modules if m.get("type") == _POOLING), None)
        sbert = load("sentence_bert_config.json")
        options = dict(hub, subfolder=encoder_path) if encoder_path else hub
        self.model = EncoderModel.from_pretrained(name, dtype=dtype, device=resolve_device(device), quantize=quantize,
                                                  **options)
        self.tokenizer = AutoTokenizer.from_pretrained(name, **options)
        self.do_lower_case = bool(sbert.get("do_lower_case", False))
        limit = min(n for n in (self.tokenizer.model_max_length, self.model.config.max_input_length) if n)
        self.max_seq_length = min(int(sbert.get("max_seq_length") or limit), limit)
        pooling = load(f"{pooling_path}/config.json") if pooling_path else {}
        self.pooling_modes = _pooling_modes(pooling) if pooling_path is not None else ()
        self.include_prompt = bool(pooling.get("include_prompt", True))
        if not self.include_prompt:
            raise ConfigError(f"{name}: pooling with include_prompt=false (prompt tokens left out) is not supported")
        self.normalize = _NORMALIZE in types
        settings = load("config_sentence_transformers.json")
        self.prompts: dict[str, str] = dict(settings.get("prompts") or {})
        self.default_prompt_name: str | None = settings.get("default_prompt_name")
        self.truncate_dim = truncate_dim

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: Any) -> "SentenceTransformer":
        self.model.to(resolve_device(device))
        return self

    def get_embedding_dimension(self) -> int:
        """Length of one sentence vector (after truncate_dim)."""
        width = self.model.config.encoder_spec().hidden_size * len(self.pooling_modes)
        return min(width, self.truncate_dim) if self.truncate_dim else width

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers' name before 6

    def encode(self, sentences: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, show_progress_bar: bool | None = None,
               output_value: str | None = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, device: Any = None,
               normalize_embeddings: bool = False, truncate_dim: int | None = None) -> Any:
        """Embeddings of `sentences`, with sentence-transformers' return types.

        One string -> one vector; a list -> a float32 numpy array (N, D), or with
        convert_to_tensor one tensor, or with convert_to_numpy=False a list of tensors.
        output_value="token_embeddings" gives each text's (T, H) token vectors (a list).
        prompt / prompt_name: text put before every sentence (prompt_name looks it up in the
        folder's prompts). truncate_dim keeps the first dimensions (after the model's Normalize,
        before normalize_embeddings), as sentence-transformers does.
        """
        if output_value not in ("sentence_embedding", "token_embeddings"):
            raise InputError(f"output_value must be 'sentence_embedding' or 'token_embeddings', got {output_value!r}")
        if precision != "float32":
            raise InputError(f"precision={precision!r} is not supported; compactbert returns float32 embeddings")
        if batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size}")
        if device is not None:
            self.to(device)
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if any(not isinstance(t, str) for t in texts):
            raise InputError("sentences must be a string or a list of strings")
        prefix = self._prompt(prompt, prompt_name)
        texts = [(prefix + t).strip() for t in texts]  # as sentence-transformers strips its inputs
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: list[torch.Tensor | None] = [None] * len(texts)
        progress = _progress(len(order), batch_size, show_progress_bar)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in chunk], padding=True, truncation="longest_first",
                                   max_length=self.max_seq_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state  # (b, T, H)
            if output_value == "token_embeddings":
                vectors = [h[m.bool()].float() for h, m in zip(hidden, batch["attention_mask"])]
            else:
                vectors = self._sentence_vectors(hidden, batch["attention_mask"], truncate_dim, normalize_embeddings)
            for i, vector in zip(chunk, vectors):
                results[i] = vector.cpu() if convert_to_numpy and not convert_to_tensor else vector
            progress(len(chunk))
        return _convert(results, single, output_value == "sentence_embedding", convert_to_numpy, convert_to_tensor)

    def _sentence_vectors(self, hidden: torch.Tensor, mask: torch.Tensor, truncate_dim: int | None,
                          normalize: bool) -> torch.Tensor:
        vectors = pool(hidden, mask, self.pooling_modes)  # (b, D) float32
        if self.normalize:
            vectors = F.normalize(vectors, p=2, dim=1)
        if truncate_dim:
            vectors = vectors[:, :truncate_dim]
        if normalize:
            vectors = F.normalize(vectors, p=2, dim=1)
        return vectors

    def _prompt(self, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise InputError(f"prompt_name {name!r} is not one of this model's prompts "
                             f"({', '.join(map(repr, self.prompts)) or 'it has none'})")
        return self.prompts[name]

    def similarity(self, a: Any, b: Any) -> torch.Tensor:
        """Cosine similarity of every row of `a` with every row of `b` (N, M)."""
        a, b = (torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x) for x in (a, b))
        a, b = (x.unsqueeze(0) if x.dim() == 1 else x for x in (a, b))
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def _progress(total: int, batch_size: int, show: bool | None):
    """A counter over the batches: a tqdm bar when asked (and installed), else nothing."""
    if not show:
        return lambda n: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("show_progress_bar needs tqdm (pip install tqdm)")
        return lambda n: None
    bar = tqdm(total=total, desc="Batches", unit="text")

    def step(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return step


def _convert(results: list, single: bool, sentence: bool, to_numpy: bool, to_tensor: bool) -> Any:
    """sentence-transformers' return types: numpy (default), one tensor, or a list of tensors;
    token embeddings stay a list of tensors."""
    if not sentence:
        return results[0] if single else results
    if to_tensor:
        out: Any = torch.stack(results) if results else torch.tensor([])
    elif to_numpy:
        out = np.stack([r.numpy() for r in results]) if results else np.array([])
    else:
        out = results
    return out[0] if single else out
