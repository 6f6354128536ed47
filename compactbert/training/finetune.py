"""A compact fine-tuning loop, readable in one sitting.

AdamW with no weight decay on biases and norms, linear warm-up then linear decay, global
gradient-norm clipping, gradient accumulation, optional bf16 autocast, evaluation after every
epoch, keep-best, seeded shuffling. Works for any compactbert model whose forward returns `.loss`.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..layers import NoNorm
from ..options import option

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    epochs: int = option(3, "passes over the training data")
    batch_size: int = option(16, "examples per optimizer step (per micro-batch x gradient_accumulation)")
    learning_rate: float = option(5e-5, "peak learning rate, reached after warm-up")
    weight_decay: float = option(0.01, "decoupled decay, never on biases or norm weights")
    warmup_ratio: float = option(0.1, "share of all steps spent warming up linearly from 0")
    max_grad_norm: float = option(1.0, "global gradient-norm clip; 0 disables clipping")
    gradient_accumulation: int = option(1, "micro-batches per optimizer step")
    bf16: bool = option(False, "bfloat16 autocast for the forward pass")
    seed: int = option(0, "shuffling and initialisation of new heads")
    metric: str = option("accuracy", "evaluation metric that decides the best epoch")
    greater_is_better: bool | None = option(
        None, "whether a higher metric is better; by default yes, unless the metric's name ends in loss, "
        "mse, mae, rmse, error or perplexity")
    output_dir: str | os.PathLike | None = option(None, "the best model is saved here (Hub layout)")
    checkpoint_dir: str | os.PathLike | None = option(None, "trainer state after every epoch, for resume=True")
    progress: bool = option(False, "a progress bar on standard error (rank 0 only)")

    def __post_init__(self) -> None:
        check_schedule(self.epochs, self.batch_size, self.gradient_accumulation, self.warmup_ratio)

    def better(self, score: float, best: float | None) -> bool:
        """Whether `score` beats the best so far, in the metric's direction."""
        greater = self.greater_is_better
        if greater is None:  # transformers' rule ("...loss" is lower-better), and the usual error names
            greater = not self.metric.lower().endswith(_LOWER_IS_BETTER)
        return best is None or (score > best if greater else score < best)


_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "perplexity")


def check_schedule(epochs: int, batch_size: int, gradient_accumulation: int, warmup_ratio: float) -> None:
    """The checks every training config shares, with messages saying what to change."""
    if epochs < 1 or batch_size < 1 or gradient_accumulation < 1:
        raise ValueError("epochs, batch_size and gradient_accumulation must be at least 1")
    if batch_size % gradient_accumulation:
        raise ValueError(f"batch_size {batch_size} must be divisible by gradient_accumulation {gradient_accumulation}")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")


@dataclass
class TrainingResult:
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train_loss and eval metrics
    best_epoch: int | None = None  # 1-based
    best_metric: float | None = None


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weight matrices and embeddings decay; biases and norm weights do not."""
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, NoNorm)):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in no_decay_ids or name.endswith("bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate factor rising linearly from 0 over warm-up, then falling linearly to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Distributed:
    """Rank and world size under torchrun (gloo on CPU, nccl on GPU); a single process otherwise."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            # Processes that leave while a peer's communication threads run abort ("terminate called
            # without an active exception"): wait for each other and close the group at exit.
            atexit.register(_close_process_group)

    def shard(self, examples: list[Any]) -> list[Any]:
        """This rank's contiguous share of a global batch (possibly empty for a short last batch)."""
        per = math.ceil(len(examples) / self.world)
        return examples[self.rank * per:(self.rank + 1) * per]

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.item() / self.world


def keeps_global_rng(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run `function` on a copy of the global random state (CPU and every CUDA device): the seeding
    a training call does for shuffling, dropout and new heads leaves the caller's stream untouched."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            return function(*args, **kwargs)

    return wrapper


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process: the one that logs and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def _close_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


_STATE_FILE = "trainer_state.pt"


def _save_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write the trainer state atomically: an interrupted write keeps the previous epoch's state."""
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, _STATE_FILE)
    torch.save(state, target + ".tmp")
    os.replace(target + ".tmp", target)


@keeps_global_rng
def fine_tune(model: nn.Module, train: Sequence[Any], collate: Callable[[list[Any]], dict[str, torch.Tensor]],
              config: TrainingConfig, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
              resume: bool = False) -> TrainingResult:
    """Train `model` on `train`; `collate` turns a list of examples into model keyword arguments
    (with labels). After each epoch `evaluate(model)` returns metrics; the best epoch by
    `config.metric` is restored at the end (and saved to `config.output_dir`).

    With `config.checkpoint_dir`, the trainer state (model, optimizer, schedule, random generators,
    history) is saved after every epoch; `resume=True` continues from it, giving the same result
    as an uninterrupted run.

    Runs unchanged under `torchrun --nproc_per_node=N`: each global batch of `batch_size` is split
    across the processes and gradients are averaged (DistributedDataParallel), so the result equals
    a single-process run with the same global batch. Only rank 0 logs and saves.
    """
    dist = _Distributed()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    micro = config.batch_size // config.gradient_accumulation
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    runner: nn.Module = model
    if dist.world > 1:
        runner = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    scheduler = linear_schedule(optimizer, int(config.warmup_ratio * total), total)
    result, best_state, first_epoch = TrainingResult(), None, 1
    state_path = os.path.join(config.checkpoint_dir, _STATE_FILE) if config.checkpoint_dir else None
    if resume and state_path and os.path.exists(state_path):
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        result = TrainingResult(state["history"], state["best_epoch"], state["best_metric"])
        best_state, first_epoch = state["best_state"], state["epoch"] + 1
        if dist.rank == 0:
            logger.info("resuming after epoch %d from %s", state["epoch"], state_path)
    bar = _progress_bar(total, config.progress and dist.rank == 0, done=(first_epoch - 1) * steps_per_epoch)
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), config.batch_size):
            global_batch = [train[i] for i in order[start:start + config.batch_size]]
            mine = dist.shard(global_batch)
            parts = [mine[m:m + micro] for m in range(0, len(mine), micro)] or [[]]
            optimizer.zero_grad(set_to_none=True)
            for n, part in enumerate(parts):
                last = n == len(parts) - 1
                sync = runner.no_sync() if (dist.world > 1 and not last) else contextlib.nullcontext()
                with sync:
                    if not part:  # a short last batch left this rank nothing: join the all-reduce with zeros
                        (sum(p.sum() for p in model.parameters()) * 0.0).backward()
                        continue
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                        loss = runner(**collate(part)).loss
                    # Weight each micro-batch by its share of the global batch (times the world size,
                    # which DDP's averaging divides out): the gradient is the global-batch mean.
                    (loss * len(part) * dist.world / len(global_batch)).backward()
                    losses.append(loss.item() * len(part))
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if bar is not None:
                bar.update(1)
        record = {"epoch": epoch, "train_loss": dist.mean(sum(losses)) * dist.world / len(train)}
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                record.update(evaluate(model))
            score = record.get(config.metric)
            if score is not None and config.better(score, result.best_metric):
                result.best_metric, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
        if dist.rank == 0:
            logger.info("epoch %d: %s", epoch, record)
        result.history.append(record)
        if config.checkpoint_dir is not None and dist.rank == 0:
            _save_state(config.checkpoint_dir, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "shuffle_rng": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "history": result.history, "best_epoch": result.best_epoch,
                "best_metric": result.best_metric, "best_state": best_state})
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if config.output_dir is not None and dist.rank == 0 and hasattr(model, "save_pretrained"):
        model.save_pretrained(config.output_dir)
    return result


def _progress_bar(total: int, enabled: bool, done: int = 0) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a dependency of huggingface_hub

    return tqdm(total=total, initial=done, desc="fine-tuning", unit="step")
