"""Reading and writing weight files: safetensors first, pickles only through weights_only=True.

No code from a checkpoint is ever executed. Writes are atomic: files are staged next to the target
and moved into place only once complete, so an interrupted save leaves the previous folder intact.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError, ConfigError, UnsafeCheckpointError
from .hub import find_file, is_local

# First found wins, as in transformers.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def locate_weights(name_or_path: str | os.PathLike, use_safetensors: bool | None = None,
                   **hub_kwargs: Any) -> tuple[list[Path], str]:
    """The weight files of a checkpoint (one file, or every shard of an index) and the name found.

    use_safetensors: True -> safetensors files only, False -> PyTorch .bin files only, None -> both,
    safetensors first. On the Hub only these files are downloaded.
    """
    names = [f for f in WEIGHT_FILES if use_safetensors is None or ("safetensors" in f) == use_safetensors]
    for filename in names:
        path = find_file(name_or_path, filename, **hub_kwargs)
        if path is None:
            continue
        if filename.endswith(".index.json"):
            return _locate_shards(name_or_path, path, **hub_kwargs), filename
        return [path], filename
    where = f"the folder {name_or_path}" if is_local(name_or_path) else repr(str(name_or_path))
    if hub_kwargs.get("subfolder"):
        where += f" (subfolder {hub_kwargs['subfolder']!r})"
    only = "" if use_safetensors is None else f" (use_safetensors={use_safetensors})"
    if find_file(name_or_path, "adapter_config.json", **hub_kwargs) is not None:
        raise CheckpointError(f"{where} holds a LoRA adapter, not a whole model: load it with "
                              f"compactbert.training.load_lora({str(name_or_path)!r}) (its base model is named in "
                              "adapter_config.json)")
    raise CheckpointError(
        f"no weights found in {where}: expected one of {', '.join(names)}{only}. "
        "Save a model there with save_pretrained, or check the path."
    )


def read_weights(name_or_path: str | os.PathLike, use_safetensors: bool | None = None,
                 **hub_kwargs: Any) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a checkpoint and the name of the file (or index) they came from."""
    paths, filename = locate_weights(name_or_path, use_safetensors, **hub_kwargs)
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        state.update(read_weight_file(path))
    return state, filename


def read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of one .safetensors or .bin file; a CheckpointError naming the file if it is damaged."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_pickle(path)


# safetensors dtype names -> torch dtypes (the ones a BERT-family checkpoint can hold).
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, each read into memory of its own.

    The safetensors library validates the header against the file (offsets, sizes, dtypes); the
    data is then read with plain file reads instead of kept as views of a memory map. A model
    loaded from the file therefore does not depend on it staying unchanged (a writer that truncates
    it in place would otherwise crash the model or change its weights), and a load still holds one
    copy of the weights: each tensor is allocated once and filled from the file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
        out = {}
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
            for name in names:
                entry = header[name]
                dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
                if dtype is None:
                    raise ValueError(f"{name} is stored as {entry['dtype']}, a type compactbert does not read")
                tensor = torch.empty(entry["shape"], dtype=dtype)
                begin, end = entry["data_offsets"]
                if tensor.numel():
                    fh.seek(8 + size + begin)
                    if fh.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != end - begin:
                        raise OSError(f"{name} ends past the end of the file")
                out[name] = tensor
        return out
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it is probably truncated or corrupt: "
            "download it again (compactbert download NAME --force) or re-save the model"
        ) from exc


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path} holds objects other than tensors (a pickle that would run code or import modules); "
            "compactbert refused to load it. Use a safetensors file from a source you trust."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch weight file ({exc}); it is probably truncated or corrupt: "
            "download it again"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat mapping of names to tensors")
    return state


def read_json(path: Path | None, kind: type = dict) -> Any:
    """The JSON value of a checkpoint file, which must be a `kind` (object or list); an empty one
    when `path` is None (the file is absent). A CheckpointError names the file otherwise."""
    if path is None:
        return kind()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, kind):
        raise CheckpointError(f"{path} must hold a JSON {'object' if kind is dict else 'list'}, "
                              f"found {type(data).__name__}")
    return data


def _locate_shards(name_or_path: str | os.PathLike, index_path: Path, **hub_kwargs: Any) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index_path} is not a valid shard index (needs a 'weight_map' object)") from exc
    paths = []
    for shard in shards:
        if Path(shard).name != shard:
            raise CheckpointError(f"{index_path} names shard {shard!r} outside the checkpoint folder")
        shard_path = find_file(name_or_path, shard, **hub_kwargs)
        if shard_path is None:
            raise CheckpointError(f"shard {shard} listed in {index_path.name} is missing from {name_or_path}")
        paths.append(shard_path)
    return paths


# ---------------------------------------------------------------------------------------- writing

SHARD_INDEX = "model.safetensors.index.json"
_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def weight_writers(tensors: dict[str, torch.Tensor], max_shard_size: int | str) -> dict[str, Callable[[Path], None]]:
    """Writers of the weight files for `save_folder`: model.safetensors, or shards of at most
    `max_shard_size` (bytes, or a string such as "500MB") with the index transformers reads.

    huggingface_hub plans the shards (its split is the one transformers uses), so the file names and
    the index are those transformers writes.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    if (isinstance(max_shard_size, bool) or not isinstance(max_shard_size, (int, str))
            or (isinstance(max_shard_size, int) and max_shard_size <= 0) or str(max_shard_size).strip().startswith("-")):
        raise ConfigError(f"max_shard_size={max_shard_size!r} is not a positive size; give bytes or a string such as "
                          "'500MB' or '2GB'")
    try:
        split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"max_shard_size={max_shard_size!r} is not a size ({exc}); give bytes or a string "
                          "such as '500MB' or '2GB'") from exc
    writers: dict[str, Callable[[Path], None]] = {
        filename: (lambda path, names=names: write_safetensors({n: tensors[n] for n in names}, path))
        for filename, names in split.filename_to_tensors.items()
    }
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        writers[SHARD_INDEX] = lambda path: write_json(index, path)
    return writers


def stale_weight_files(directory: str | os.PathLike, written: dict[str, Any]) -> list[str]:
    """safetensors weight files in `directory` that a save writing `written` would leave behind
    (model.safetensors after a sharded save, the index and old shards after a single-file one);
    left in place, the loader could read them instead of the new weights."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = ["model.safetensors", SHARD_INDEX] + [p.name for p in directory.iterdir() if _SHARD_NAME.fullmatch(p.name)]
    return [n for n in names if n not in written and (directory / n).exists()]


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
