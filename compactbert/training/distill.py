"""DistilBERT's triple-loss distillation of a masked-LM teacher into a smaller student.

    loss = alpha_ce * T^2 * KL(teacher_T || student_T)   over every real (non-padding) token
         + alpha_mlm * cross-entropy                      over the masked tokens
         + alpha_cos * (1 - cos(h_student, h_teacher))    last hidden states, every real token

with temperature T = 2 and (alpha_ce, alpha_mlm, alpha_cos) = (5, 2, 1), as in the paper. Masks
are redrawn for every batch: 15% of the maskable tokens, of which 80% become the mask token,
10% a random token and 10% stay. With `mask_smoothing` (0.7 in the paper), a token is picked
with probability proportional to count^-0.7 over the corpus, favouring rare tokens.

The text corpus is read from plain text files one line at a time (a line is one sequence), never
held in memory; one counting pass first sizes the learning-rate schedule and the smoothing counts.
Under torchrun, every process reads the stream and takes its share of each global batch, and
gradients are averaged (DistributedDataParallel); only rank 0 logs and saves.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..io.atomic import save_together
from ..options import option
from .finetune import ScheduleSettings, linear_schedule, parameter_groups
from .runtime import Runtime, is_main_process, keep_padding_row_zero, keeps_global_rng, precision
from .masking import chunks, mlm_collate, token_weights

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the student

def default_layers(teacher_layers: int, student_layers: int | None = None) -> list[int]:
    """Evenly spread teacher layers, first and last included: [0, 2, 4, 7, 9, 11] for 12 -> 6."""
    count = student_layers or max(1, teacher_layers // 2)
    if not 1 <= count <= teacher_layers:
        raise ValueError(f"a student of {count} layers cannot be taken from a teacher of {teacher_layers}")
    if count == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (count - 1)) for i in range(count)]


def student_from_teacher(teacher: nn.Module, layers: Sequence[int] | None = None) -> nn.Module:
    """A student of the teacher's class and width holding a copy of the teacher's embeddings, the
    chosen layers (in order) and the masked-LM head; nothing else is new."""
    total = teacher.config.encoder_spec().num_layers
    layers = list(layers) if layers is not None else default_layers(total)
    if not layers or any(not 0 <= i < total for i in layers):
        raise ValueError(f"layers {layers} must be indices of the teacher's {total} layers")
    student = type(teacher).from_config(teacher.config.with_layers(len(layers)))
    state = {}
    for name, value in teacher.state_dict().items():
        if name.startswith("encoder.layers."):
            index, rest = name[len("encoder.layers."):].split(".", 1)
            if int(index) not in layers:
                continue
            for position, source in enumerate(layers):  # a layer may be taken more than once
                if source == int(index):
                    state[f"encoder.layers.{position}.{rest}"] = value.clone()
        else:
            state[name] = value.clone()
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    return student


# ---------------------------------------------------------------------------- the loss

@dataclass
class DistillationLoss:
    total: torch.Tensor
    ce: torch.Tensor  # T^2-scaled KL divergence to the teacher's softened distribution
    mlm: torch.Tensor  # cross-entropy at the masked positions
    cos: torch.Tensor  # 1 - cosine similarity of the last hidden states


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_hidden: torch.Tensor,
                      teacher_hidden: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0,
                      alpha_ce: float = 5.0, alpha_mlm: float = 2.0, alpha_cos: float = 1.0,
                      tokens: int | None = None, masked: int | None = None) -> DistillationLoss:
    """The triple loss over N real tokens: logits (N, V), hidden states (N, H), labels (N,) with -100
    at unmasked tokens. The KL and cosine terms are averaged over `tokens` (default N), the MLM term
    over `masked` (default: the masked tokens here); pass a whole batch's counts when these N tokens
    are one part of it, and the parts' losses add up to the batch's."""
    t = temperature
    chosen = labels != -100
    tokens = tokens or len(labels)
    masked = masked or max(1, int(chosen.sum()))
    ce = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                  reduction="sum", log_target=True) * (t * t / tokens)
    mlm = F.cross_entropy(student_logits[chosen], labels[chosen], reduction="sum") / masked
    if alpha_cos:
        cos = (1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)).sum() / tokens
    else:  # not computed: the hidden states may differ in width (a narrower student)
        cos = student_logits.new_zeros(())
    return DistillationLoss(alpha_ce * ce + alpha_mlm * mlm + alpha_cos * cos, ce, mlm, cos)


# ---------------------------------------------------------------------------- the corpus

class TextCorpus:
    """Lines of plain text files, streamed: each non-blank line is one sequence."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = [os.fspath(p) for p in paths]
        for path in self.paths:
            if not os.path.isfile(path):
                raise ValueError(f"corpus file {path} does not exist")

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield line.rstrip("\n")

    def statistics(self, tokenizer: Any, max_length: int) -> tuple[int, torch.Tensor]:
        """(number of lines, token counts per vocabulary id), in one streaming pass."""
        lines, counts = 0, torch.zeros(len(tokenizer), dtype=torch.long)
        for batch in chunks(iter(self), 256):
            lines += len(batch)
            for encoding in tokenizer.encode_batch(batch, max_length=max_length):
                counts += torch.bincount(torch.tensor(encoding.ids), minlength=len(counts))
        if lines == 0:
            raise ValueError(f"the corpus {', '.join(self.paths)} holds no text")
        return lines, counts


# ---------------------------------------------------------------------------- the loop

@dataclass
class DistillationConfig(ScheduleSettings):
    num_train_epochs: int = option(3, "passes over the corpus")
    per_device_train_batch_size: int = option(
        32, "sequences per forward pass on each device; an optimizer step sees this x "
        "gradient_accumulation_steps x processes")
    gradient_accumulation_steps: int = option(1, "forward passes whose gradients add up to one optimizer step")
    learning_rate: float = option(5e-4, "peak learning rate (the paper's)")
    betas: tuple[float, float] = option((0.9, 0.98), "Adam betas (the paper's)")
    weight_decay: float = option(0.0, "decoupled decay, never on biases or norms")
    warmup_ratio: float = option(0.05, "share of the steps spent warming up linearly")
    max_grad_norm: float = option(5.0, "global gradient-norm clip")
    temperature: float = option(2.0, "softmax temperature of the KL term")
    alpha_ce: float = option(5.0, "weight of the KL term")
    alpha_mlm: float = option(2.0, "weight of the masked-LM term")
    alpha_cos: float = option(1.0, "weight of the hidden-state cosine term")
    mlm_probability: float = option(0.15, "share of tokens masked in each batch")
    mask_smoothing: float | None = option(None, "0.7 picks tokens with chance count^-0.7 (the paper); None: uniform")
    kl_on: str = option("tokens", "where the KL and cosine terms are taken: every real token (tokens, DistilBERT) "
                        "or the masked tokens only (masked, BORT)")
    max_steps: int | None = option(None, "stop after this many optimizer steps (the schedule is sized to them)")
    max_length: int = option(128, "tokens per sequence (longer lines are truncated)")
    bf16: bool = option(False, "bfloat16 autocast for both models' forward passes (CPU and CUDA)")
    fp16: bool = option(False, "float16 autocast with loss scaling (CUDA, or the CPU; refused for MobileBERT)")
    device: str | None = option(None, "cpu, cuda, cuda:1, mps; default: the student's accelerator, else CUDA "
                                "when present (the local rank's GPU under torchrun), else cpu")
    seed: int = option(0, "seed of masking, shuffling and the student's initialisation")
    output_dir: str | os.PathLike | None = option(None, "the student is saved here (Hub layout) with the tokenizer")

    def __post_init__(self) -> None:
        self.check_schedule()
        if not 0 < self.mlm_probability < 1 or self.temperature <= 0:
            raise ValueError("mlm_probability must be in (0, 1) and temperature positive")
        if self.kl_on not in ("tokens", "masked"):
            raise ValueError(f"kl_on={self.kl_on!r}: choose 'tokens' (every real token) or 'masked'")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")


@dataclass
class DistillationResult:
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: mean loss terms
    steps: int = 0


@keeps_global_rng
def distill(teacher: nn.Module, student: nn.Module, tokenizer: Any, corpus: TextCorpus,
            config: DistillationConfig) -> DistillationResult:
    """Train `student` to imitate `teacher` (a frozen masked-LM of the same vocabulary) on `corpus`."""
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ValueError(f"teacher vocabulary {teacher.config.vocab_size} != student vocabulary "
                         f"{student.config.vocab_size}")
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token; masked-LM distillation needs one")
    widths = (teacher.config.encoder_spec().hidden_size, student.config.encoder_spec().hidden_size)
    if config.alpha_cos and widths[0] != widths[1]:
        raise ValueError(f"the cosine term compares hidden states, but the teacher is {widths[0]} wide and the "
                         f"student {widths[1]}; set alpha_cos=0 or use a student of the teacher's width")
    if len(tokenizer) > teacher.config.vocab_size:
        raise ValueError(f"the tokenizer's {len(tokenizer)} tokens do not fit the models' vocabulary of "
                         f"{teacher.config.vocab_size}")
    run = Runtime.start(student, config.device, precision(config.bf16, config.fp16))
    teacher.to(run.device)
    torch.manual_seed(config.seed)
    lines, counts = corpus.statistics(tokenizer, config.max_length)
    weights = token_weights(counts, config.mask_smoothing, sorted(tokenizer.all_special_ids))
    # Seeded alike on every process, so all draw the same masks.
    masked_batch = mlm_collate(tokenizer, config.mlm_probability, config.seed, config.max_length, weights)
    micro = config.per_device_train_batch_size
    global_size = micro * config.gradient_accumulation_steps * run.world
    total = math.ceil(lines / global_size) * config.num_train_epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    runner = run.wrap(student)
    optimizer = torch.optim.AdamW(parameter_groups(student, config.weight_decay), lr=config.learning_rate,
                                  betas=config.betas)
    scheduler = linear_schedule(optimizer, int(config.warmup_ratio * total), total)
    scaler = run.scaler()
    teacher.eval()
    result = DistillationResult()
    for epoch in range(1, config.num_train_epochs + 1):
        if result.steps >= total:
            break
        student.train()
        sums = {"loss": 0.0, "ce": 0.0, "mlm": 0.0, "cos": 0.0}
        batches = 0
        for global_batch in chunks(iter(corpus), global_size):
            # Every process masks the whole global batch alike, then trains on its share of the rows:
            # the result equals one process training on the whole batch.
            inputs = run.move(masked_batch(global_batch))
            rows = run.shard(list(range(len(global_batch))))
            optimizer.zero_grad(set_to_none=True)
            masked = max(1, int((inputs["labels"] != -100).sum()))
            counts = (masked if config.kl_on == "masked" else int(inputs["attention_mask"].sum()), masked)
            for part in chunks(iter(rows), micro) if rows else [[]]:
                if not part:  # nothing left for this process: join the gradient all-reduce with zeros
                    (sum(p.sum() for p in student.parameters()) * 0.0).backward()
                    continue
                # Each part's loss is its share of the global batch's mean (token counts of the whole
                # batch), times the world size, which DDP's gradient averaging divides out.
                with run.autocast():
                    terms = _loss(teacher, runner, {k: v[part] for k, v in inputs.items()}, config, counts)
                scaler.scale(terms.total * run.world).backward()
                for key, value in zip(sums, (terms.total, terms.ce, terms.mlm, terms.cos)):
                    sums[key] += value.item()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            keep_padding_row_zero(student)
            scaler.update()
            scheduler.step()
            batches += 1
            result.steps += 1
            if result.steps >= total:
                break
        record = {"epoch": epoch, **{k: run.mean(v) * run.world / max(1, batches) for k, v in sums.items()}}
        result.history.append(record)
        if run.rank == 0:
            logger.info("epoch %d: %s", epoch, record)
    student.eval()
    if config.output_dir is not None and run.rank == 0:
        save_together(config.output_dir, [student, tokenizer])
    return result


def _loss(teacher: nn.Module, student: nn.Module, inputs: dict[str, torch.Tensor], config: DistillationConfig,
          counts: tuple[int, int]) -> DistillationLoss:
    # The loss covers every real token (or the masked ones), packed: (N, ...)
    real = inputs["attention_mask"].bool() if config.kl_on == "tokens" else inputs["labels"] != -100
    args = (inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
    with torch.no_grad():
        taught = teacher(*args, positions=real)  # logits (N, V), hidden states (N, H)
    learnt = student(*args, positions=real)
    # The loss in float32 whatever the autocast precision of the forward passes.
    return distillation_loss(learnt.logits.float(), taught.logits.float(), learnt.last_hidden_state.float(),
                             taught.last_hidden_state.float(),
                             inputs["labels"][real], config.temperature, config.alpha_ce, config.alpha_mlm,
                             config.alpha_cos, *counts)


@keeps_global_rng
def distill_from_files(teacher: str | os.PathLike, corpus: Sequence[str | os.PathLike], config: DistillationConfig,
                       layers: Sequence[int] | None = None, student_config: Any = None,
                       validation: str | os.PathLike | None = None,
                       hub: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a teacher masked-LM by name or folder, build the student (teacher layers, or a fresh
    model from `student_config`), distill on the text files and save the student with the
    tokenizer and metrics.json in `config.output_dir`. With `validation` (a text file), the
    student's masked-LM agreement with the teacher and its divergence from the teacher
    (`mlm_comparison`) are measured before and after."""
    from ..models.modeling import ForMaskedLM
    from ..tokenizer_files import AutoTokenizer
    from .masking import mlm_comparison

    if config.output_dir is None:
        raise ValueError("config.output_dir must say where to save the student")
    hub = hub or {}
    tokenizer = AutoTokenizer.from_pretrained(teacher, **hub)
    torch.manual_seed(config.seed)
    teacher_model = ForMaskedLM.from_pretrained(teacher, **hub)
    if student_config is not None:
        if layers is not None:
            raise ValueError("give either layers (a student cut from the teacher) or a student config, not both")
        student = ForMaskedLM.from_config(student_config)
    else:
        student = student_from_teacher(teacher_model, layers)
    held_out = list(TextCorpus([validation])) if validation else None
    metrics: dict[str, Any] = {"student_layers": student.config.encoder_spec().num_layers}
    if held_out:
        metrics["agreement_before"], metrics["divergence_before"] = mlm_comparison(
            student, teacher_model, tokenizer, held_out, seed=config.seed)
    # distill saves nothing here: the student, tokenizer and metrics.json are saved together below
    result = distill(teacher_model, student, tokenizer, TextCorpus(corpus),
                     dataclasses.replace(config, output_dir=None))
    if held_out:
        metrics["agreement_after"], metrics["divergence_after"] = mlm_comparison(
            student, teacher_model, tokenizer, held_out, seed=config.seed)
    metrics["history"] = result.history
    if is_main_process():
        save_together(config.output_dir, [student, tokenizer], {"metrics.json": metrics})
    return metrics
