"""The one way compactbert writes to disk: nothing is ever half-written or a mix of two saves.

* `write_atomic(path, write)`: one file (trainer state, metrics.json, reports). It is written under
  a unique temporary name next to the target and fsynced, then renamed over the target, and the
  directory is fsynced. A crash leaves the previous file or the new one.
* `save_folder(directory, writers, remove)`: a whole folder (model and tokenizer saves). The new
  folder is built complete beside the old one: files of the old folder that the save does not
  replace are hard-linked in, the new files written and fsynced. Then the two folders are exchanged
  in one step (Linux renameat2 RENAME_EXCHANGE), so a crash at any instant leaves the old complete
  folder or the new complete one. Where the kernel or file system cannot exchange, the old folder
  is renamed aside and the new one moved in: a crash between those two renames leaves the folder
  missing and the previous version beside it as `.NAME.previous-*`.

Files and folders get the permissions the process umask gives, not tempfile's private 0600/0700.
We write this ourselves because neither the standard library nor a maintained package offers an
atomic directory exchange; it is a single system call, reached through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write one file atomically: `write(temporary path)` writes it, then it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        _fsync_file(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def save_folder(directory: str | os.PathLike, writers: dict[str, Callable[[Path], None]],
                remove: tuple[str, ...] | list[str] = ()) -> Path:
    """Write the files of `writers` (file name -> function writing that file at the path it is
    given) into `directory` as one atomic change. Other files already there (a tokenizer next to
    a model, a README) are kept; the files named in `remove` (left over from an earlier save) go."""
    directory = Path(directory)
    if directory.is_symlink():  # save into the folder the link names, keeping the link
        directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.saving-", dir=directory.parent))
    try:
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.name not in writers and entry.name not in remove:
                    _link(entry, staging / entry.name)
        mask = _umask()
        for filename, write in writers.items():
            write(staging / filename)
            _fsync_file(staging / filename)
            os.chmod(staging / filename, 0o666 & ~mask)  # some writers (safetensors) make private files
        os.chmod(staging, 0o777 & ~mask)
        _fsync_dir(staging)
        if directory.exists():
            _exchange(staging, directory)  # `staging` now holds the previous folder
        else:
            os.replace(staging, directory)
        _fsync_dir(directory.parent)
        return directory
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_together(directory: str | os.PathLike, parts: list[Any], json_files: dict[str, Any] | None = None) -> Path:
    """One atomic save of several things into one folder: each part (a model, a tokenizer) gives its
    files through `folder_files(directory)`, and `json_files` (name -> content) are written beside
    them, so a crash never leaves a new model next to an old tokenizer or old metrics."""
    writers: dict[str, Callable[[Path], None]] = {}
    remove: list[str] = []
    for part in parts:
        files, stale = part.folder_files(directory)
        writers.update(files)
        remove += stale
    for name, content in (json_files or {}).items():
        writers[name] = lambda path, content=content: path.write_text(json.dumps(content, indent=2) + "\n",
                                                                      encoding="utf-8")
    return save_folder(directory, writers, remove=[name for name in remove if name not in writers])


def _link(source: Path, target: Path) -> None:
    """`source` at `target` without copying data (hard links; copies across file systems)."""
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_file)
    elif source.is_symlink():
        os.symlink(os.readlink(source), target)
    else:
        _link_file(source, target)


def _link_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(new: Path, current: Path) -> None:
    """Swap two folders in one step; where that is not possible, rename the current one aside first."""
    try:
        renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except (OSError, TypeError):  # no C library to open by name (Windows)
        renameat2 = None
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(current), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, f"cannot replace {current}: {os.strerror(code)}")
    aside = Path(tempfile.mkdtemp(prefix=f".{current.name}.previous-", dir=current.parent))
    os.replace(current, aside / current.name)
    os.replace(new, current)
    os.replace(aside / current.name, new)  # the caller removes `new`, now the previous folder
    aside.rmdir()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows): nothing to flush
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(descriptor)


def _umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current
