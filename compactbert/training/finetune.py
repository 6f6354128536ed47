"""A compact fine-tuning loop, readable in one sitting.

AdamW with no weight decay on biases and norms, linear warm-up then linear decay, global
gradient-norm clipping, gradient accumulation, bf16 or fp16 autocast on any device,
evaluation after every epoch, keep-best, seeded shuffling, resume, torchrun. Works for any
compactbert model whose forward returns `.loss`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..nn.layers import NoNorm
from ..io.atomic import write_atomic
from ..options import option
from .runtime import Runtime, keep_padding_row_zero, keeps_global_rng, precision

logger = logging.getLogger(__name__)


class ScheduleSettings:
    """What TrainingConfig and DistillationConfig share beyond their fields: building one with a
    name compactbert used before 0.3 is a TypeError naming the new one, and the schedule and
    precision are checked with messages saying what to change."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        old = next((name for name in RENAMED if name in kwargs), None)
        if old is not None:
            raise TypeError(f"{cls.__name__}({old}=...) is now {RENAMED[old]}, as transformers names it"
                            + (" (per device, before accumulation: the global batch is this x "
                               "gradient_accumulation_steps x processes)" if old == "batch_size" else ""))
        return super().__new__(cls)

    def check_schedule(self) -> None:
        if min(self.num_train_epochs, self.per_device_train_batch_size, self.gradient_accumulation_steps) < 1:
            raise ValueError("num_train_epochs, per_device_train_batch_size and gradient_accumulation_steps must be "
                             "at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        precision(self.bf16, self.fp16)


@dataclass
class TrainingConfig(ScheduleSettings):
    """Settings of `fine_tune`, named as transformers' TrainingArguments name them."""

    num_train_epochs: int = option(3, "passes over the training data")
    per_device_train_batch_size: int = option(
        16, "examples per forward pass on each device; an optimizer step sees this x "
        "gradient_accumulation_steps x processes")
    gradient_accumulation_steps: int = option(1, "forward passes whose gradients add up to one optimizer step")
    learning_rate: float = option(5e-5, "peak learning rate, reached after warm-up")
    weight_decay: float = option(0.01, "decoupled decay, never on biases or norm weights")
    warmup_ratio: float = option(0.1, "share of all steps spent warming up linearly from 0")
    max_grad_norm: float = option(1.0, "global gradient-norm clip; 0 disables clipping")
    bf16: bool = option(False, "bfloat16 autocast for the forward pass (CPU and CUDA)")
    fp16: bool = option(False, "float16 autocast with loss scaling (CUDA, or the CPU; refused for MobileBERT)")
    device: str | None = option(None, "cpu, cuda, cuda:1, mps; default: the model's accelerator, else CUDA when "
                                "present (the local rank's GPU under torchrun), else cpu")
    seed: int = option(0, "shuffling, dropout and initialisation of new heads")
    metric_for_best_model: str = option("accuracy", "evaluation metric that decides the best epoch")
    greater_is_better: bool | None = option(
        None, "whether a higher metric is better; by default yes, unless the metric's name ends in loss, "
        "mse, mae, rmse, error or perplexity")
    output_dir: str | os.PathLike | None = option(None, "the best model is saved here (Hub layout)")
    checkpoint_dir: str | os.PathLike | None = option(None, "trainer state after every epoch, for resume=True")
    progress: bool = option(False, "a progress bar on standard error (rank 0 only)")

    def __post_init__(self) -> None:
        self.check_schedule()

    def better(self, score: float, best: float | None) -> bool:
        """Whether `score` beats the best so far, in the metric's direction."""
        greater = self.greater_is_better
        if greater is None:  # transformers' rule ("...loss" is lower-better), and the usual error names
            greater = not self.metric_for_best_model.lower().endswith(_LOWER_IS_BETTER)
        return best is None or (score > best if greater else score < best)


_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "perplexity")
# compactbert's names before 0.3 -> transformers' names, which replaced them.
RENAMED = {"epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
           "gradient_accumulation": "gradient_accumulation_steps", "metric": "metric_for_best_model"}


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


_STATE_FILE = "trainer_state.pt"


def _save_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write the trainer state atomically: an interrupted write keeps the previous epoch's state."""
    write_atomic(os.path.join(directory, _STATE_FILE), lambda path: torch.save(state, path))


@keeps_global_rng
def fine_tune(model: nn.Module, train: Sequence[Any], collate: Callable[[list[Any]], dict[str, torch.Tensor]],
              config: TrainingConfig, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
              resume: bool = False) -> TrainingResult:
    """Train `model` on `train`; `collate` turns a list of examples into model keyword arguments
    (with labels). After each epoch `evaluate(model)` returns metrics; the best epoch by
    `config.metric_for_best_model` is restored at the end (and saved to `config.output_dir`).

    The model moves to `config.device` (see TrainingConfig.device) and stays there; batches follow
    it. With `config.checkpoint_dir`, the trainer state (model, optimizer, schedule, loss scale,
    random generators of the CPU and the device, history) is saved after every epoch; `resume=True`
    continues from it, giving the same result as an uninterrupted run.

    Runs unchanged under `torchrun --nproc_per_node=N`: a step takes a global batch of
    per_device_train_batch_size x gradient_accumulation_steps x N examples, splits it across the
    processes and averages gradients (DistributedDataParallel), so the result equals one process
    with the same global batch. Rank 0 evaluates (the others wait for its metrics), logs and saves.
    """
    run = Runtime.start(model, config.device, precision(config.bf16, config.fp16))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    micro = config.per_device_train_batch_size
    global_size = micro * config.gradient_accumulation_steps * run.world
    steps_per_epoch = math.ceil(len(train) / global_size)
    total = steps_per_epoch * config.num_train_epochs
    runner = run.wrap(model)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    scheduler = linear_schedule(optimizer, int(config.warmup_ratio * total), total)
    scaler = run.scaler()
    result, best_state, first_epoch = TrainingResult(), None, 1
    state_path = os.path.join(config.checkpoint_dir, _STATE_FILE) if config.checkpoint_dir else None
    if resume and state_path and os.path.exists(state_path):
        # On the CPU first: load_state_dict copies into the model's device, and the optimizer moves its
        # state to its parameters' device.
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state.get("scaler", {}))
        generator.set_state(state["shuffle_rng"])
        run.set_rng_state(state["rng"] if "rng" in state else {"cpu": state["torch_rng"]})  # (before 0.3)
        result = TrainingResult(state["history"], state["best_epoch"], state["best_metric"])
        best_state, first_epoch = state["best_state"], state["epoch"] + 1
        if run.rank == 0:
            logger.info("resuming after epoch %d from %s", state["epoch"], state_path)
    bar = _progress_bar(total, config.progress and run.rank == 0, done=(first_epoch - 1) * steps_per_epoch)
    for epoch in range(first_epoch, config.num_train_epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), global_size):
            global_batch = [train[i] for i in order[start:start + global_size]]
            mine = run.shard(global_batch)
            parts = [mine[m:m + micro] for m in range(0, len(mine), micro)] or [[]]
            optimizer.zero_grad(set_to_none=True)
            for n, part in enumerate(parts):
                last = n == len(parts) - 1
                sync = runner.no_sync() if (run.world > 1 and not last) else contextlib.nullcontext()
                with sync:
                    if not part:  # a short last batch left this rank nothing: join the all-reduce with zeros
                        (sum(p.sum() for p in model.parameters()) * 0.0).backward()
                        continue
                    with run.autocast():
                        loss = runner(**run.move(collate(part))).loss
                    # Weight each micro-batch by its share of the global batch (times the world size,
                    # which DDP's averaging divides out): the gradient is the global-batch mean.
                    scaler.scale(loss * len(part) * run.world / len(global_batch)).backward()
                    losses.append(loss.item() * len(part))
            if config.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            keep_padding_row_zero(model)
            scaler.update()
            scheduler.step()
            if bar is not None:
                bar.update(1)
        record = {"epoch": epoch, "train_loss": run.mean(sum(losses)) * run.world / len(train)}
        if evaluate is not None:
            record.update(run.from_main(_evaluate(model, evaluate) if run.rank == 0 else None))
            score = record.get(config.metric_for_best_model)
            if score is not None and config.better(score, result.best_metric):
                result.best_metric, result.best_epoch = score, epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if run.rank == 0:
            logger.info("epoch %d: %s", epoch, record)
        result.history.append(record)
        if config.checkpoint_dir is not None and run.rank == 0:
            _save_state(config.checkpoint_dir, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "shuffle_rng": generator.get_state(), "rng": run.rng_state(), "history": result.history,
                "best_epoch": result.best_epoch, "best_metric": result.best_metric, "best_state": best_state})
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if config.output_dir is not None and run.rank == 0 and hasattr(model, "save_pretrained"):
        model.save_pretrained(config.output_dir)
    return result


def _evaluate(model: nn.Module, evaluate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        return evaluate(model)


def _progress_bar(total: int, enabled: bool, done: int = 0) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a dependency of huggingface_hub

    return tqdm(total=total, initial=done, desc="fine-tuning", unit="step")
