"""The settings of a progressive-transfer run (every default written once, and read by the
command line), and where its trainer state lives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...options import option

OPTIMIZERS = ("lamb", "adamw")


@dataclass
class TransferConfig:
    stage1_steps: int = option(240, "layer-by-layer steps in all, stage1_steps // layers per layer (0: no stage 1)")
    stage2_steps: int = option(260, "pre-training distillation steps (0: no stage 2)")
    per_device_train_batch_size: int = option(
        32, "sequences per forward pass on each device; a step sees this x gradient_accumulation_steps x processes")
    gradient_accumulation_steps: int = option(1, "forward passes whose gradients add up to one step")
    stage1_learning_rate: float = option(1.5e-3, "stage 1: the rate of the layer being transferred")
    learning_rate: float = option(1.5e-3, "stage 2: peak learning rate (the paper's 0.0015 with LAMB)")
    below_layer_rate: float = option(0.1, "stage 1: rate of the layers below the current one, as a share")
    warmup_ratio: float = option(0.04, "stage 2: share of steps warming up linearly (released: 10,000 of 260,000)")
    optimizer: str = option("lamb", "lamb (the paper's) or adamw")
    weight_decay: float = option(0.01, "decoupled decay, never on biases or norms")
    max_grad_norm: float = option(1.0, "global gradient-norm clip")
    feature_weight: float = option(100.0, "stage 1: weight of the feature-map MSE")
    attention_weight: float = option(1.0, "stage 1: weight of the attention transfer")
    mean_weight: float = option(5000.0, "stage 1: weight of the per-token mean MSE")
    variance_weight: float = option(5.0, "stage 1: weight of the per-token variance L1")
    divide_by_layers: bool = option(True, "divide the stage-1 weights by the number of layers, as released")
    ground_truth_ratio: float = option(0.5, "stage 2: share of the one-hot label in the masked-LM target")
    temperature: float = option(1.0, "stage 2: temperature of the teacher's distribution")
    next_sentence: bool = option(True, "pairs of lines and next-sentence prediction (blank lines separate documents)")
    mlm_probability: float = option(0.15, "share of tokens masked in each batch")
    max_length: int = option(128, "tokens per sequence or pair (longer ones are truncated)")
    student_dropout: bool = option(False, "dropout in the student while it learns (the released code has none)")
    bf16: bool = option(False, "bfloat16 autocast for both models' forward passes")
    device: str | None = option(None, "cpu, cuda, cuda:1, mps; default: CUDA when present (the local rank's GPU "
                                "under torchrun), else cpu")
    seed: int = option(0, "seed of batches, masks, pairs and the student's initialisation")
    save_steps: int = option(100, "write the trainer state every this many steps (and at every phase's end)")
    log_steps: int = option(20, "log the losses every this many steps")
    progress: bool = option(False, "a progress bar on standard error (rank 0 only)")
    output_dir: str | os.PathLike | None = option(None, "the student is saved here (Hub layout) with the tokenizer")
    checkpoint_dir: str | os.PathLike | None = option(
        None, "the trainer state for resume (default: <output_dir>.transfer-state, removed when done)")

    def __post_init__(self) -> None:
        if min(self.stage1_steps, self.stage2_steps) < 0 or self.stage1_steps + self.stage2_steps == 0:
            raise ValueError("stage1_steps and stage2_steps must be >= 0, and not both 0")
        if min(self.per_device_train_batch_size, self.gradient_accumulation_steps, self.save_steps,
               self.log_steps) < 1:
            raise ValueError("batch size, accumulation, save_steps and log_steps must be at least 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.ground_truth_ratio <= 1 or not 0 < self.mlm_probability < 1 or self.temperature <= 0:
            raise ValueError("ground_truth_ratio must be in [0, 1], mlm_probability in (0, 1), temperature > 0")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.below_layer_rate <= 1:
            raise ValueError("warmup_ratio must be in [0, 1) and below_layer_rate in [0, 1]")

    def state_path(self) -> Path:
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir) / STATE_FILE
        if self.output_dir is None:
            raise ValueError("set output_dir or checkpoint_dir: the trainer state needs a place")
        out = Path(self.output_dir)
        return out.with_name(out.name + ".transfer-state") / STATE_FILE


STATE_FILE = "transfer_state.pt"
# Fields that may change between a run and its resumption (where it runs, what it shows, where it saves).
FREE_FIELDS = ("device", "progress", "log_steps", "save_steps", "output_dir", "checkpoint_dir")
