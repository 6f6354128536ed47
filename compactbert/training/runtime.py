"""Where and how a training run executes: one device, this process's rank, mixed precision.

`Runtime.start` is called once at each training entry point (fine_tune, distill); the loop then asks
it to move batches, open autocast, scale losses, wrap the model for DistributedDataParallel, split
global batches across processes and average numbers over them. The rules, in one place:

* device: the one asked for; by default the model's own accelerator, else CUDA when present (under
  torchrun, the local rank's GPU), else the CPU. "cuda" without an index is the local rank's GPU.
* processes: under torchrun (WORLD_SIZE > 1) the process group uses NCCL when the tensors live on
  CUDA and gloo otherwise; DDP gets `device_ids=[local_rank]` on CUDA.
* precision: bf16 autocast on the device's type; fp16 autocast with a gradient scaler (CUDA, and
  the CPU where torch supports it), refused for families whose activations overflow float16.

We keep this small module instead of adopting `accelerate`: the loop's result must equal a single
process with the same global batch (each global batch is split across ranks, a rank left without
rows joins the all-reduce with zeros), and accelerate's data-loader sharding pads or drops rows
instead; the device, DDP and autocast parts it would replace are the few lines below.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from ..devices import model_device, resolve_device, to_device
from ..errors import ConfigError
from ..models.modeling import check_dtype

PRECISIONS = ("fp32", "bf16", "fp16")


def precision(bf16: bool, fp16: bool) -> str:
    """The autocast precision a config's two flags ask for."""
    if bf16 and fp16:
        raise ValueError("bf16 and fp16 exclude each other; choose one")
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process: the one that logs and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def choose_device(model: nn.Module, choice: Any = None, local_rank: int = 0) -> torch.device:
    """The device a run trains on (see the module's rules); `choice` as `resolve_device` takes it."""
    if choice is None:
        current = model_device(model)
        if current.type != "cpu" and world_size() == 1:
            return current
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
        resolve_device(device)  # this machine has that many GPUs
    return device


@dataclass
class Runtime:
    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def start(cls, model: nn.Module, device: Any = None, precision: str = "fp32") -> "Runtime":
        """Pick the device, join the process group under torchrun, move `model` there, check the precision."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        world, rank = world_size(), int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        target = choose_device(model, device, local_rank)
        if target.type == "cuda":
            torch.cuda.set_device(target)
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if target.type == "cuda" else "gloo")
            # Processes that leave while a peer's communication threads run abort ("terminate called
            # without an active exception"): wait for each other and close the group at exit.
            atexit.register(_close_process_group)
        elif world > 1 and torch.distributed.get_backend() == "nccl" and target.type != "cuda":
            raise ConfigError(f"the process group uses NCCL, which carries only CUDA tensors, but training runs on "
                              f"{target}; initialise it with 'gloo' or train with device='cuda'")
        if precision == "fp16":
            _check_fp16(model, target)
        model.to(target)
        return cls(target, precision, rank, local_rank, world)

    # ------------------------------------------------------------------ the model and its inputs

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls: DistributedDataParallel under torchrun, the model otherwise."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def move(self, batch: dict[str, Any]) -> dict[str, Any]:
        return to_device(batch, self.device)

    def autocast(self) -> ContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    # ------------------------------------------------------------------ processes

    def shard(self, examples: list[Any]) -> list[Any]:
        """This rank's contiguous share of a global batch (possibly empty for a short last batch)."""
        per = math.ceil(len(examples) / self.world)
        return examples[self.rank * per:(self.rank + 1) * per]

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.item() / self.world

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a barrier: every rank waits for rank 0)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    # ------------------------------------------------------------------ random state, for resume

    def rng_state(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)


def _check_fp16(model: nn.Module, device: torch.device) -> None:
    config = getattr(model, "config", None)
    if config is not None:
        check_dtype(config, torch.float16)
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"fp16 training runs on CUDA (or the CPU), not {device.type}; use bf16")


def keep_padding_row_zero(model: nn.Module) -> None:
    """After an optimizer step of a model with trigram input (MobileBERT): set the padding token's
    word-embedding row back to zero. A tied decoder's gradient moves it; compactbert never reads it,
    but transformers reads it as the 'next' neighbour of a padded sequence's last token, so a moved
    row makes the two disagree on padded batches. The Hub checkpoints have it at zero."""
    spec = getattr(getattr(model, "encoder", None), "spec", None)  # the built encoder's own spec
    if spec is None or not spec.trigram_input:
        return
    with torch.no_grad():
        model.encoder.embeddings.word.weight[spec.pad_token_id].zero_()


def keeps_global_rng(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run `function` on a copy of the global random state (CPU and every CUDA device): the seeding
    a training call does for shuffling, dropout and new heads leaves the caller's stream untouched."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            return function(*args, **kwargs)

    return wrapper


def _close_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
