"""Device names as transformers users write them, checked before anything is loaded."""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError

def resolve_device(choice: Any, what: str = "device") -> torch.device:
    """The torch device `choice` stands for, if this machine has it.

    Accepts what transformers accepts for one device: None or -1 (the CPU), a CUDA index (0, 1, ...),
    "cpu", "cuda", "cuda:1", "mps", "auto" (the first CUDA device when there is one, else the CPU),
    or a torch.device. `what` names the argument in errors ("device", or a CLI option "--device").
    """
    what = f"{what} {choice}" if what.startswith("--") else f"{what}={choice!r}"
    if choice is None:
        return torch.device("cpu")
    if isinstance(choice, bool):
        raise ConfigError(f"{what} is not a device; use 'cpu', 'cuda', 'cuda:1', an index or 'auto'")
    if isinstance(choice, int):
        device = torch.device("cpu") if choice < 0 else torch.device("cuda", choice)
    elif choice == "auto":
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            device = torch.device(choice)
        except (RuntimeError, ValueError, TypeError):
            raise ConfigError(f"{what} is not a device name; use 'cpu', 'cuda', 'cuda:1', 'mps', an "
                              "index or 'auto'") from None
    if device.type == "meta":
        raise ConfigError(f"{what}: a model cannot be loaded onto the meta device; use 'cpu' or 'cuda'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what}: this torch build or machine has no CUDA device (use 'cpu' or "
                              "'auto')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{what}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{what}: MPS is not available here")
    return device


def device_from_map(device_map: Any) -> torch.device:
    """The one device of a transformers `device_map`: a device name or index, "auto", or a dict
    whose values all name the same device (compactbert models are small: one device holds them)."""
    if isinstance(device_map, dict):
        targets = {str(resolve_device(v, "device_map")) for v in device_map.values()}
        if len(targets) != 1:
            raise ConfigError(f"device_map={device_map!r} spreads the model over {len(targets) or 'no'} devices; "
                              "compactbert loads a model onto one device: pass device='cuda:0' (or 'auto', "
                              "'cpu')")
        return torch.device(targets.pop())
    return resolve_device(device_map, "device_map")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's (first) parameter."""
    return next(model.parameters()).device


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors on `device` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (/proc/cpuinfo); empty where it is not readable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()
