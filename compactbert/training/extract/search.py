"""The search: surrogate errors from a short distillation, the W-coefficient, the approximation
scheme (one surrogate per interval of width epsilon) or exhaustive search, resume, and the outputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ...config import BaseConfig
from ...errors import ConfigError
from ...io.atomic import write_atomic
from ...options import option
from ..distill import DistillationConfig, TextCorpus, distill
from ..masking import mlm_scores
from ..runtime import keeps_global_rng
from .space import Architecture, Costs, SearchSpace, costs, geometry_fields, size_speed_factor

logger = logging.getLogger("compactbert.training.extract")


@dataclass
class ExtractionConfig:
    space: Any = option("default", "'default', a JSON file, or a dict of lists depth, heads, width, ffn")
    epsilon: float = option(0.1, "interval width of the approximation: candidates whose size-and-speed factors are "
                            "within a factor (1 - epsilon) share one surrogate")
    exhaustive: bool = option(False, "train a surrogate for every candidate instead")
    budget_steps: int = option(200, "distillation steps of each surrogate")
    per_device_train_batch_size: int = option(32, "sequences per surrogate step")
    learning_rate: float = option(5e-4, "peak learning rate of the surrogates")
    max_length: int = option(128, "tokens per training and held-out sequence")
    sequence_length: int = option(128, "the sequence length at which i(f), operations per token, is counted")
    temperature: float = option(2.0, "BORT's distillation temperature")
    alpha_kl: float = option(0.5, "BORT's weight of T^2 x KL(teacher || student) at the masked tokens")
    alpha_mlm: float = option(0.1, "BORT's weight of the masked-LM cross-entropy")
    device: str | None = option(None, "cpu, cuda, cuda:1, mps; default: CUDA when present, else cpu")
    bf16: bool = option(False, "bfloat16 autocast for the surrogates' forward passes")
    seed: int = option(0, "seed of every surrogate's initialisation, masks and order")
    progress: bool = option(False, "a progress bar over the surrogates on standard error")
    output_dir: str | os.PathLike | None = option(None, "the ranked table, plot, chosen config.json and state")

    def __post_init__(self) -> None:
        if not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if min(self.budget_steps, self.per_device_train_batch_size, self.max_length, self.sequence_length) < 1:
            raise ValueError("budget_steps, per_device_train_batch_size, max_length and sequence_length must be >= 1")


@dataclass
class Candidate:
    architecture: Architecture
    costs: Costs
    factor: float  # ((p(T) - p) / p(T)) x ((i(T) - i) / i(T))
    bucket: int | None = None  # the approximation's interval (None: factor 0, never chosen)
    train: bool = False  # a surrogate is trained for it
    error: float | None = None  # e: held-out masked-LM cross-entropy (nats) after the surrogate budget
    accuracy: float | None = None  # held-out masked-LM accuracy, reported beside e
    seconds: float | None = None

    @property
    def w(self) -> float | None:
        return None if self.error is None else self.factor / self.error

    def row(self) -> dict[str, Any]:
        return {"name": self.architecture.name, **dataclasses.asdict(self.architecture),
                "parameters": self.costs.parameters, "net_parameters": self.costs.net_parameters,
                "flops_per_token": self.costs.flops, "factor": self.factor, "bucket": self.bucket,
                "trained": self.train, "error": self.error, "accuracy": self.accuracy, "W": self.w,
                "seconds": self.seconds}


@dataclass
class ExtractionResult:
    chosen: Candidate
    candidates: list[Candidate]
    maximum: Candidate
    trained: int  # surrogates trained in all (this call and the resumed ones)
    seconds: float  # surrogate training time, this call
    files: dict[str, str] = field(default_factory=dict)


def plan(space: SearchSpace, teacher_config: BaseConfig, config: ExtractionConfig) -> tuple[list[Candidate], Candidate]:
    """Every candidate with its analytic costs and factor, ordered by (p, i), the intervals and the
    ones whose surrogate is trained; and T, the maximum point."""
    top = space.maximum()
    top_costs = costs(top.config(teacher_config), config.sequence_length)
    maximum = Candidate(top, top_costs, 0.0)
    candidates = []
    for architecture in space.candidates:
        own = costs(architecture.config(teacher_config), config.sequence_length)
        candidates.append(Candidate(architecture, own, size_speed_factor(own, top_costs)))
    candidates.sort(key=lambda c: (c.costs.parameters, c.costs.flops, c.architecture))
    useful = [c for c in candidates if c.factor > 0]
    if not useful:
        raise ConfigError("every candidate of this space is as large or as slow as its maximum point; widen the space")
    best = max(c.factor for c in useful)
    for c in useful:
        # Interval k holds the factors in (best (1 - eps)^(k+1), best (1 - eps)^k]: within (1 - eps) of each other.
        c.bucket = int(math.floor(math.log(c.factor / best) / math.log(1.0 - config.epsilon) + 1e-9))
    if config.exhaustive:
        for c in useful:
            c.train = True
    else:
        # One surrogate per interval: its largest model (last in (p, i) order), the member expected to
        # err least, so that W(representative) >= (1 - eps) W(any member) when errors fall with size.
        representative: dict[int, Candidate] = {}
        for c in useful:
            representative[c.bucket] = c  # type: ignore[index]
        for c in representative.values():
            c.train = True
    return candidates, maximum


@keeps_global_rng
def surrogate_error(teacher: nn.Module, tokenizer: Any, corpus: TextCorpus, held_out: Sequence[str],
                    student_config: BaseConfig, config: ExtractionConfig) -> tuple[float, float]:
    """e(f): a fresh student of `student_config`, distilled from the teacher for `budget_steps` with
    BORT's loss (alpha_mlm x MLM + alpha_kl x T^2 x KL at the masked tokens), then its held-out
    masked-LM (cross-entropy, accuracy) at seeded masks."""
    from ...models.modeling import ForMaskedLM

    torch.manual_seed(config.seed)
    student = ForMaskedLM.from_config(student_config)
    distill(teacher, student, tokenizer, corpus, DistillationConfig(
        num_train_epochs=10 ** 6, max_steps=config.budget_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate, temperature=config.temperature, alpha_ce=config.alpha_kl,
        alpha_mlm=config.alpha_mlm, alpha_cos=0.0, kl_on="masked", max_length=config.max_length,
        device=config.device, bf16=config.bf16, seed=config.seed))
    return mlm_scores(student, tokenizer, held_out, seed=config.seed, max_length=config.max_length)


_STATE_FILE = "surrogates.json"


def extract(teacher: nn.Module, tokenizer: Any, corpus: TextCorpus, held_out: Sequence[str],
            config: ExtractionConfig, resume: bool = False) -> ExtractionResult:
    """Search `config.space` for the architecture of the teacher's family with the highest
    W = factor / e, training surrogates for every candidate (exhaustive) or one per interval, and
    write the outputs to `config.output_dir`. Each surrogate's result is saved as it lands;
    `resume=True` reuses those of a run with the same settings."""
    if config.output_dir is None:
        raise ValueError("config.output_dir must say where the results go")
    if not held_out:
        raise ValueError("extraction needs held-out text to measure each surrogate's error")
    geometry_fields(teacher.config)
    space = SearchSpace.load(config.space)
    candidates, maximum = plan(space, teacher.config, config)
    out = Path(config.output_dir)
    state_path = out / _STATE_FILE
    fingerprint = {**{k: v for k, v in dataclasses.asdict(config).items()
                      if k not in ("device", "progress", "output_dir", "exhaustive", "epsilon", "space")},
                   "teacher": teacher.config.to_dict(), "corpus": corpus.paths, "held_out": len(held_out)}
    done: dict[str, Any] = {}
    if resume and state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("fingerprint") != fingerprint:
            raise ConfigError(f"{state_path} holds surrogates trained with other settings; resume with the same ones "
                              "or remove it to start over")
        done = state["results"]
    todo = [c for c in candidates if c.train]
    bar = None
    if config.progress:
        from tqdm.auto import tqdm  # a dependency of huggingface_hub

        bar = tqdm(total=len(todo), initial=sum(c.architecture.name in done for c in todo), desc="surrogates",
                   unit="model")
    started = time.perf_counter()
    for count, candidate in enumerate(todo, 1):
        name = candidate.architecture.name
        if name not in done:
            begin = time.perf_counter()
            error, accuracy = surrogate_error(teacher, tokenizer, corpus, held_out,
                                              candidate.architecture.config(teacher.config), config)
            done[name] = {"error": error, "accuracy": accuracy, "seconds": round(time.perf_counter() - begin, 2)}
            write_atomic(state_path, lambda path: path.write_text(
                json.dumps({"fingerprint": fingerprint, "results": done}, indent=2) + "\n", encoding="utf-8"))
            logger.info("surrogate %d/%d %s: e=%.4f, accuracy %.3f, W=%.4f (%.0f s)", count, len(todo), name, error,
                        accuracy, candidate.factor / error, done[name]["seconds"])
            if bar is not None:
                bar.update(1)
        candidate.error, candidate.accuracy, candidate.seconds = (done[name]["error"], done[name]["accuracy"],
                                                                  done[name]["seconds"])
    if bar is not None:
        bar.close()
    chosen = max((c for c in candidates if c.w is not None), key=lambda c: c.w)  # type: ignore[arg-type,return-value]
    result = ExtractionResult(chosen, candidates, maximum, len(todo), time.perf_counter() - started)
    from .outputs import write_outputs

    result.files = write_outputs(result, teacher.config, space, config)
    return result


@keeps_global_rng
def extract_from_files(teacher: str | os.PathLike, corpus: Sequence[str | os.PathLike],
                       validation: str | os.PathLike, config: ExtractionConfig, resume: bool = False,
                       hub: dict[str, Any] | None = None) -> ExtractionResult:
    """Load the teacher masked-LM (folder or Hub id) and its tokenizer, and `extract` on the text
    files, measuring each surrogate on the `validation` text file."""
    from ...models.modeling import ForMaskedLM
    from ...tokenizer_files import AutoTokenizer

    hub = hub or {}
    tokenizer = AutoTokenizer.from_pretrained(teacher, **hub)
    model = ForMaskedLM.from_pretrained(teacher, **hub)
    held_out = [line.strip() for line in Path(validation).read_text(encoding="utf-8").splitlines() if line.strip()]
    return extract(model.eval(), tokenizer, TextCorpus(corpus), held_out, config, resume)
