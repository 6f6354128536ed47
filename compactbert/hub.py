"""Finding checkpoint files: local folders, Hub repositories (through `huggingface_hub`) and aliases.

Every `from_pretrained` in the library goes through `resolve_file`, so the Hub's cache, progress
bars, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and tokens behave the same everywhere.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UnknownModelError

HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download")


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published checkpoint compactbert is known to load, with a note for users."""

    alias: str
    repo_id: str
    family: str
    note: str
    untrained_mlm_head: bool = False  # the published masked-LM head was never trained


KNOWN_CHECKPOINTS: tuple[KnownCheckpoint, ...] = (
    KnownCheckpoint("distilbert-base-uncased", "distilbert/distilbert-base-uncased", "distilbert",
                    "6-layer distilled BERT, uncased WordPiece, masked-LM head"),
    KnownCheckpoint("distilbert-base-cased", "distilbert/distilbert-base-cased", "distilbert",
                    "cased WordPiece vocabulary (28,996 tokens)"),
    KnownCheckpoint("distilbert-base-multilingual-cased", "distilbert/distilbert-base-multilingual-cased",
                    "distilbert", "104 languages, 119,547-token vocabulary"),
    KnownCheckpoint("distilbert-base-uncased-finetuned-sst-2-english",
                    "distilbert/distilbert-base-uncased-finetuned-sst-2-english", "distilbert",
                    "sentiment classifier (NEGATIVE/POSITIVE)"),
    KnownCheckpoint("distilbert-base-cased-distilled-squad", "distilbert/distilbert-base-cased-distilled-squad",
                    "distilbert", "extractive QA; sinusoidal position table stored in the file"),
    KnownCheckpoint("distilbert-base-uncased-distilled-squad",
                    "distilbert/distilbert-base-uncased-distilled-squad", "distilbert", "extractive QA"),
    KnownCheckpoint("mobilebert-uncased", "google/mobilebert-uncased", "mobilebert",
                    "24 bottleneck layers, NoNorm; overflows in float16, use float32 or bfloat16"),
    KnownCheckpoint("mobilebert-uncased-squad-v2", "csarron/mobilebert-uncased-squad-v2", "mobilebert",
                    "extractive QA fine-tune (SQuAD 2.0)"),
    KnownCheckpoint("bort", "amazon/bort", "bert",
                    "BERT geometry with RoBERTa BPE; encoder is pretrained but the masked-LM head was never "
                    "trained, so its fill-mask predictions are not meaningful; fine-tune it (Agora) instead",
                    untrained_mlm_head=True),
    KnownCheckpoint("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "bert",
                    "6-layer sentence-embedding BERT (mean pooling)"),
)
_BY_ALIAS = {c.alias: c for c in KNOWN_CHECKPOINTS}
_BY_REPO = {c.repo_id.lower(): c for c in KNOWN_CHECKPOINTS}


def list_checkpoints() -> list[KnownCheckpoint]:
    """The registry of known checkpoints, in a stable order."""
    return list(KNOWN_CHECKPOINTS)


def known_checkpoint(name: str) -> KnownCheckpoint | None:
    """The registry entry for an alias or a repo id, if any."""
    return _BY_ALIAS.get(name) or _BY_REPO.get(str(name).lower())


def close_matches(name: str) -> list[str]:
    names = [c.alias for c in KNOWN_CHECKPOINTS] + [c.repo_id for c in KNOWN_CHECKPOINTS]
    return difflib.get_close_matches(name, names, n=3, cutoff=0.5)


def _unknown(name: str, why: str) -> UnknownModelError:
    matches = close_matches(name)
    hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
    return UnknownModelError(f"{name!r}: {why}.{hint} `compactbert list` shows the known checkpoints.")


def split_hub_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the Hub options (revision, cache_dir, ...) from the rest."""
    hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    rest = {k: v for k, v in kwargs.items() if k not in HUB_KWARGS}
    return hub, rest


def repo_id_for(name: str) -> str:
    """The Hub repo id behind an alias; a repo id is returned unchanged."""
    entry = _BY_ALIAS.get(name)
    if entry is not None:
        return entry.repo_id
    if "/" not in name:
        raise _unknown(name, "is not a local folder, a known alias, or a Hub id of the form 'owner/name'")
    return name


def is_local(name_or_path: str | os.PathLike) -> bool:
    return Path(name_or_path).is_dir()


def resolve_file(name_or_path: str | os.PathLike, filename: str, **hub_kwargs: Any) -> Path:
    """Local path of `filename` in a folder or Hub repository; a clear error when it is not there."""
    found = find_file(name_or_path, filename, **hub_kwargs)
    if found is None:
        where = f"the folder {name_or_path}" if is_local(name_or_path) else f"the Hub repository {name_or_path!r}"
        raise CheckpointError(f"{filename} is not in {where}; is this a model checkpoint?")
    return found


def find_file(name_or_path: str | os.PathLike, filename: str, **hub_kwargs: Any) -> Path | None:
    """Like `resolve_file`, but None when the file does not exist in the checkpoint."""
    if is_local(name_or_path):
        path = Path(name_or_path) / filename
        return path if path.is_file() else None
    name = str(name_or_path)
    repo_id = repo_id_for(name)
    return _download(repo_id, filename, **hub_kwargs)


def _download(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
              local_files_only: bool = False, token: str | bool | None = None,
              force_download: bool = False) -> Path | None:
    # Imported here so that purely local use never pays for huggingface_hub's import.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only, token=token,
                                    force_download=force_download, library_name="compactbert"))
    except GatedRepoError as exc:
        raise CheckpointError(f"{repo_id!r} is gated: accept its terms on the Hub and pass token=... ({exc})") from exc
    except RepositoryNotFoundError as exc:
        raise _unknown(repo_id, "was not found on the Hub (or is private: pass token=...)") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"revision {revision!r} does not exist in {repo_id!r}") from exc
    except LocalEntryNotFoundError:
        # Offline or unreachable, and not in the cache. Tell a missing file from a missing repo
        # only if some file of this repo is cached; otherwise the whole model is missing.
        if _cached_anything(repo_id, cache_dir, revision):
            return None
        raise CheckpointError(
            f"{repo_id!r} is not in the local cache and the Hub cannot be reached (offline mode or no network). "
            f"Fetch it once with `compactbert download {repo_id}` on a machine with access, "
            "or pass a local folder."
        ) from None
    except EntryNotFoundError:
        return None
    except HFValidationError as exc:
        raise _unknown(repo_id, f"is not a valid Hub repository id ({exc})") from exc


def _cached_anything(repo_id: str, cache_dir: str | os.PathLike | None, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision) is not None
