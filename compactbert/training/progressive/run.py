"""The progressive-transfer run: both stages, one step shared by them, resume, torchrun, reports."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...families.mobilebert import MobileBertConfig
from ...io.atomic import save_together, write_atomic
from ..masking import mask_tokens, token_weights
from ..pretraining_data import PretrainingCorpus, seeded
from ..runtime import Runtime, is_main_process, keep_padding_row_zero, keeps_global_rng, precision
from .losses import soft_mlm_loss, transfer_terms
from .pairs import check_pair, student_from_teacher
from .schedule import layer_rate, make_optimizer, phase_rate
from .settings import FREE_FIELDS, TransferConfig

logger = logging.getLogger("compactbert.training.progressive")



@dataclass
class _Counts:
    """A global batch's denominators, so that parts of it (micro-batches, processes) add up to it."""
    tokens: int
    queries: int  # real query tokens x heads
    masked: int
    rows: int


@dataclass
class TransferResult:
    report: dict[str, Any] = field(default_factory=dict)  # "stage1", "stage2": per-stage reports
    steps: int = 0  # steps taken in this call (after a resume: the remaining ones)


class _Transfer:
    """One run: the models, the data, and the step both stages share."""

    def __init__(self, teacher: nn.Module, student: nn.Module, tokenizer: Any, corpus: PretrainingCorpus,
                 config: TransferConfig, validation: Sequence[str] | None) -> None:
        self.teacher, self.student, self.tokenizer, self.corpus, self.config = teacher, student, tokenizer, corpus, config
        self.validation = list(validation) if validation else None
        self.run = Runtime.start(student, config.device, precision(config.bf16, False))
        teacher.to(self.run.device).eval()
        self.layers = student.config.num_hidden_layers
        self.heads = student.config.num_attention_heads
        self.global_size = config.per_device_train_batch_size * config.gradient_accumulation_steps * self.run.world
        self.weights = token_weights(torch.ones(len(tokenizer)), None, sorted(tokenizer.all_special_ids))
        scale = self.layers if config.divide_by_layers else 1
        self.loss_weights = tuple(w / scale for w in (config.feature_weight, config.attention_weight,
                                                      config.mean_weight, config.variance_weight))
        self.state_path = config.state_path()
        self.report: dict[str, Any] = {}
        self.bar: Any = None
        self.taken = 0

    # ------------------------------------------------------------------ data

    def inputs(self, stage: int, step: int) -> dict[str, torch.Tensor]:
        """The masked global batch of (stage, step), the same on every process."""
        config = self.config
        first, second, labels = self.corpus.batch(config.seed, stage, step, self.global_size, config.next_sentence)
        batch = dict(self.tokenizer(first, second, padding=True, truncation=True, max_length=config.max_length,
                                    return_tensors="pt"))
        generator = torch.Generator().manual_seed(seeded(config.seed, stage, step, 2))
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], batch["attention_mask"], self.weights, self.tokenizer.mask_token_id,
            len(self.weights), generator, config.mlm_probability)
        if labels is not None:
            batch["next_sentence_label"] = torch.tensor(labels)
        return self.run.move(batch)

    # ------------------------------------------------------------------ one step

    def step(self, stage: int, step: int, optimizer: torch.optim.Optimizer, loss_of: Any) -> dict[str, float]:
        """One optimizer step on global batch (stage, step): each part's loss is its share of the
        batch's, gradients are summed over processes, clipped, applied. Returns the loss terms."""
        run = self.run
        inputs = self.inputs(stage, step)
        real = inputs["attention_mask"]
        counts = _Counts(int(real.sum()), int(real.sum()) * self.heads, int((inputs["labels"] != -100).sum()),
                         len(real))
        rows = run.shard(list(range(len(real))))
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        micro = self.config.per_device_train_batch_size
        for start in range(0, len(rows), micro):
            part = {k: v[rows[start:start + micro]] for k, v in inputs.items()}
            with run.autocast():
                terms = loss_of(part, counts)
            terms["total"].backward()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
        trained = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        if run.world > 1:
            for param in trained:
                if param.grad is None:  # no rows here: join the sum with zeros
                    param.grad = torch.zeros_like(param)
                torch.distributed.all_reduce(param.grad)
            sums = {k: run.mean(v) * run.world for k, v in sums.items()}
        torch.nn.utils.clip_grad_norm_(trained, self.config.max_grad_norm)
        optimizer.step()
        keep_padding_row_zero(self.student)
        self.taken += 1
        if self.bar is not None:
            self.bar.update(1)
        return sums

    def stage1_loss(self, layer: int) -> Any:
        def loss_of(part: dict[str, torch.Tensor], counts: _Counts) -> dict[str, torch.Tensor]:
            args = (part["input_ids"], part["attention_mask"], part.get("token_type_ids"))
            with torch.no_grad():
                taught = self.teacher.encoder.run(*args, scores=True, depth=layer + 1)
            learnt = self.student.encoder.run(*args, scores=True, depth=layer + 1)
            real = part["attention_mask"].bool()
            terms = transfer_terms(taught.last_hidden_state[real], learnt.last_hidden_state[real], taught.scores[-1],
                                   learnt.scores[-1], real, self.loss_weights, counts.tokens, counts.queries)
            return {f.name: getattr(terms, f.name) for f in dataclasses.fields(terms)}
        return loss_of

    def stage2_loss(self, part: dict[str, torch.Tensor], counts: _Counts) -> dict[str, torch.Tensor]:
        config, student = self.config, self.student
        args = (part["input_ids"], part["attention_mask"], part.get("token_type_ids"))
        hidden = student.encoder.run(*args).last_hidden_state  # (b, T, H)
        where = part["labels"] != -100
        if bool(where.any()):
            with torch.no_grad():
                taught = self.teacher(*args, positions=where).logits  # (M, V)
            mlm = soft_mlm_loss(student.mlm(hidden[where]), taught, part["labels"][where], config.ground_truth_ratio,
                                config.temperature, counts.masked)
        else:
            mlm = hidden.sum() * 0.0
        terms = {"total": mlm, "mlm": mlm}
        if "next_sentence_label" in part:
            logits = student.nsp(student.pooler(hidden)).float()
            terms["nsp"] = F.cross_entropy(logits, part["next_sentence_label"], reduction="sum") / counts.rows
            terms["total"] = mlm + terms["nsp"]
        return terms

    # ------------------------------------------------------------------ the stages

    def optimizer(self, rate: float) -> torch.optim.Optimizer:
        return make_optimizer(self.student, self.config.optimizer, rate, self.config.weight_decay)

    def stage1(self, first_layer: int, first_step: int, saved: dict[str, Any] | None) -> None:
        config, per_layer = self.config, self.config.stage1_steps // self.layers
        optimizer = self.optimizer(config.stage1_learning_rate)
        if saved is not None:
            optimizer.load_state_dict(saved)
        report = self.report.setdefault("stage1", {"steps_per_layer": per_layer, "layers": [], "current": []})
        for layer in range(first_layer, self.layers):
            for group in optimizer.param_groups:  # the layers above, embeddings and heads get no gradient
                for param in group["params"]:
                    param.requires_grad_(0 <= group["layer"] <= layer)
            loss_of = self.stage1_loss(layer)
            started = time.perf_counter()
            for j in range(first_step if layer == first_layer else 0, per_layer):
                rate = config.stage1_learning_rate * phase_rate(j, per_layer)
                for group in optimizer.param_groups:
                    group["lr"] = rate * layer_rate(group["layer"], layer, config.below_layer_rate)
                terms = self.step(1, layer * per_layer + j, optimizer, loss_of)
                report["current"].append(terms)
                if (j + 1) % config.log_steps == 0 and self.run.rank == 0:
                    logger.info("stage 1, layer %d/%d, step %d/%d: %s", layer + 1, self.layers, j + 1, per_layer,
                                _rounded(terms))
                if j + 1 == per_layer:
                    current, report["current"] = report["current"], []
                    tail = current[-max(1, len(current) // 10):]
                    report["layers"].append({
                        "layer": layer, "steps": per_layer, "first": current[0],
                        "last_tenth": {k: sum(t[k] for t in tail) / len(tail) for k in tail[0]},
                        "seconds_this_session": round(time.perf_counter() - started, 2)})
                if (j + 1) % config.save_steps == 0 or j + 1 == per_layer:
                    self.save_state(1, layer, j + 1, optimizer)
        report.pop("current", None)
        self.finish_stage("stage1")

    def stage2(self, first_step: int, saved: dict[str, Any] | None) -> None:
        config, steps = self.config, self.config.stage2_steps
        for param in self.student.parameters():
            param.requires_grad_(True)
        optimizer = self.optimizer(config.learning_rate)
        if saved is not None:
            optimizer.load_state_dict(saved)
        report = self.report.setdefault("stage2", {"steps": steps, "history": [], "pending": []})
        warm = int(config.warmup_ratio * steps)
        for step in range(first_step, steps):
            factor = step / max(1, warm) if step < warm else (steps - step) / max(1, steps - warm)
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * factor
            report["pending"].append(self.step(2, step, optimizer, self.stage2_loss))
            if (step + 1) % config.log_steps == 0 or step + 1 == steps:
                pending, report["pending"] = report["pending"], []
                record = {"step": step + 1, **{k: sum(t[k] for t in pending) / len(pending) for k in pending[0]}}
                report["history"].append(record)
                if self.run.rank == 0:
                    logger.info("stage 2, step %d/%d: %s", step + 1, steps, _rounded(record))
            if (step + 1) % config.save_steps == 0 or step + 1 == steps:
                self.save_state(2, 0, step + 1, optimizer)
        report.pop("pending", None)
        self.finish_stage("stage2")

    def finish_stage(self, name: str) -> None:
        """Measure on the held-out text and write the stage's report beside the trainer state."""
        if self.run.rank != 0:
            return
        if self.validation:
            self.report[name]["validation"] = self.validate()
            logger.info("%s done: %s", name, _rounded(self.report[name]["validation"]))
        report = self.report[name]
        write_atomic(self.state_path.parent / f"{name}_report.json",
                     lambda path: path.write_text(_json(report), encoding="utf-8"))

    def validate(self) -> dict[str, float]:
        from ..masking import mlm_accuracy, mlm_comparison

        student = _AsMaskedLM(self.student)
        agreement, divergence = mlm_comparison(student, self.teacher, self.tokenizer, self.validation,
                                               seed=self.config.seed, max_length=self.config.max_length)
        return {"agreement": agreement, "divergence": divergence,
                "accuracy": mlm_accuracy(student, self.tokenizer, self.validation, seed=self.config.seed,
                                         max_length=self.config.max_length),
                "teacher_accuracy": mlm_accuracy(self.teacher, self.tokenizer, self.validation,
                                                 seed=self.config.seed, max_length=self.config.max_length)}

    # ------------------------------------------------------------------ state

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the state."""
        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in FREE_FIELDS}
        return {**settings, "world": self.run.world, "student": self.student.config.to_dict()}

    def save_state(self, stage: int, layer: int, done: int, optimizer: torch.optim.Optimizer) -> None:
        if self.run.rank != 0:
            return
        state = {"stage": stage, "layer": layer, "done": done, "model": self.student.state_dict(),
                 "optimizer": optimizer.state_dict(), "rng": self.run.rng_state(), "report": self.report,
                 "fingerprint": self.fingerprint()}
        write_atomic(self.state_path, lambda path: torch.save(state, path))

    def execute(self, resume: bool) -> TransferResult:
        config = self.config
        per_layer = config.stage1_steps // self.layers
        stage, layer, done, saved = (1, 0, 0, None) if per_layer else (2, 0, 0, None)
        if resume and self.state_path.exists():
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
            if state["fingerprint"] != self.fingerprint():
                changed = sorted(k for k in set(state["fingerprint"]) | set(self.fingerprint())
                                 if state["fingerprint"].get(k) != self.fingerprint().get(k))
                raise ConfigError(f"the trainer state in {self.state_path} belongs to a run with other settings "
                                  f"({', '.join(changed)}); resume with the same ones, or remove it to start over")
            self.student.load_state_dict(state["model"])
            self.report = state["report"]
            self.run.set_rng_state(state["rng"])
            stage, layer, done, saved = state["stage"], state["layer"], state["done"], state["optimizer"]
            if stage == 1 and done == per_layer:  # the phase was complete: the next one starts afresh
                layer, done = layer + 1, 0
            if self.run.rank == 0:
                logger.info("resuming from %s: stage %d, layer %d, step %d", self.state_path, stage, layer, done)
        total = per_layer * self.layers + config.stage2_steps
        finished = (layer * per_layer + done) if stage == 1 else per_layer * self.layers + done
        if config.progress and self.run.rank == 0:
            from tqdm.auto import tqdm  # a dependency of huggingface_hub

            self.bar = tqdm(total=total, initial=finished, desc="progressive transfer", unit="step")
        self.student.train(config.student_dropout)
        if stage == 1:
            if layer < self.layers:
                self.stage1(layer, done, saved)
            elif "stage1" in self.report and "validation" not in self.report["stage1"]:
                self.finish_stage("stage1")
            stage, done, saved = 2, 0, None
        if config.stage2_steps:
            self.stage2(done, saved)
        if self.bar is not None:
            self.bar.close()
        self.student.eval()
        return TransferResult(self.report, self.taken)


class _AsMaskedLM(nn.Module):
    """A pre-training model seen as its masked-LM part (logits at chosen positions), for the measures."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from ...models.modeling import ForMaskedLM

        return ForMaskedLM.forward(self.model, *args, **kwargs)


def _rounded(terms: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in terms.items()}


def _json(content: Any) -> str:
    return json.dumps(content, indent=2) + "\n"


# ---------------------------------------------------------------------------- entry points

@keeps_global_rng
def progressive_transfer(teacher: nn.Module, student: nn.Module, tokenizer: Any, corpus: PretrainingCorpus,
                         config: TransferConfig, validation: Sequence[str] | None = None,
                         resume: bool = False) -> TransferResult:
    """Stage 1 (layer by layer) then stage 2 (pre-training distillation) of `student` from the
    frozen `teacher` (a masked-LM of the paired geometry) on `corpus`. With `validation` (lines of
    held-out text), each stage's report holds the student's masked-LM agreement with the teacher,
    divergence from it and accuracy. The trainer state is written every `save_steps`;
    `resume=True` continues from it with the same result as one run."""
    check_pair(teacher.config, student.config)
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token; masked-LM training needs one")
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer's {len(tokenizer)} tokens do not fit the models' vocabulary of "
                         f"{student.config.vocab_size}")
    layers = student.config.num_hidden_layers
    if 0 < config.stage1_steps < layers:
        raise ValueError(f"stage1_steps={config.stage1_steps} gives the {layers} layers no step each; "
                         f"use at least {layers} (or 0 to skip stage 1)")
    if config.next_sentence and not hasattr(student, "nsp"):
        raise ValueError("next_sentence=True needs a student with a next-sentence head (ForPreTraining); "
                         "build it with student_from_teacher(..., next_sentence=True) or set next_sentence=False")
    torch.manual_seed(config.seed)
    return _Transfer(teacher, student, tokenizer, corpus, config, validation).execute(resume)


@keeps_global_rng
def transfer_from_files(teacher: str | os.PathLike, student_config: MobileBertConfig | str | os.PathLike,
                        corpus: Sequence[str | os.PathLike], config: TransferConfig,
                        validation: str | os.PathLike | None = None, resume: bool = False,
                        hub: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load the teacher (a folder or Hub id of a MobileBERT-layout masked-LM, e.g. an IB-BERT) and
    its tokenizer, build the student from `student_config` (a config or a config.json file) with
    the teacher's embeddings and heads, run both stages and save the student, the tokenizer and
    the stage reports in `config.output_dir` (one atomic save); the trainer state is then removed."""
    from ...config import AutoConfig
    from ...models.modeling import ForMaskedLM
    from ...tokenizer_files import AutoTokenizer

    if config.output_dir is None:
        raise ValueError("config.output_dir must say where to save the student")
    hub = hub or {}
    if not isinstance(student_config, MobileBertConfig):
        student_config = AutoConfig.from_dict(json.loads(Path(student_config).read_text(encoding="utf-8")))
    tokenizer = AutoTokenizer.from_pretrained(teacher, **hub)
    teacher_model = ForMaskedLM.from_pretrained(teacher, **hub)
    check_pair(teacher_model.config, student_config)
    torch.manual_seed(config.seed)
    student = student_from_teacher(teacher_model, student_config, config.next_sentence)
    held_out = [line.strip() for line in Path(validation).read_text(encoding="utf-8").splitlines()
                if line.strip()] if validation else None
    result = progressive_transfer(teacher_model, student, tokenizer, PretrainingCorpus(corpus), config, held_out,
                                  resume)
    if is_main_process():
        save_together(config.output_dir, [student, tokenizer],
                      {f"{name}_report.json": report for name, report in result.report.items()})
        state = config.state_path()
        state.unlink(missing_ok=True)
        for name in result.report:
            (state.parent / f"{name}_report.json").unlink(missing_ok=True)
        if state.parent.exists() and not any(state.parent.iterdir()):
            state.parent.rmdir()
    return result.report
