"""Agora: the fine-tuning procedure BORT needs (de Wynter, arXiv 2010.07990), released as code.

While hyperparameter sets remain:
  1. fine-tune one model per remaining set (from the pretrained weights) on the growing training
     set, and score each on the search part of the dev set;
  2. take the round's best model and collect the dev examples it gets wrong;
  3. generate `neighbours` new texts near each mistake, label them with the labeller S, and add
     them to the training set (dev texts and dev labels are never added);
  4. prune: sort the sets by score, take the worst as the root, and remove it together with every
     set sharing the largest number of equal positions with it (at least one set per round, so
     at most |Theta| rounds);
  5. keep the best model seen in any round.
Replay: when a round does not beat the best score so far, it is run again with new seeds, at most
`max_replays` times. Part of the dev set (`holdout`) is kept out of the search for an honest score.

The paper leaves the neighbour generator, the labeller, the pruning details, the replay rule and
the per-round budget unspecified; each choice here is a documented, pluggable default (docs/agora.md).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..io.atomic import save_together
from .data import write_json_atomic
from ..devices import model_device, resolve_device, to_device
from .finetune import TrainingConfig, fine_tune
from .runtime import keeps_global_rng
from .text_classification import TextExample, classification_collate, classification_metrics, classification_predictions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hyperparameters:
    """One theta: the positions compared by the pruning rule."""

    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    batch_size: int
    seed: int

    def as_tuple(self) -> tuple[float, float, float, int, int]:
        return dataclasses.astuple(self)


def hyperparameter_grid(learning_rates: Sequence[float], weight_decays: Sequence[float],
                        warmup_ratios: Sequence[float], batch_sizes: Sequence[int],
                        seeds: Sequence[int]) -> list[Hyperparameters]:
    """Every combination, in a fixed order."""
    return [Hyperparameters(*values) for values in
            itertools.product(learning_rates, weight_decays, warmup_ratios, batch_sizes, seeds)]


# The grid of the BORT README: seeds 0-4 x lr x weight decay x warm-up x batch (480 sets).
BORT_GRID = hyperparameter_grid([1e-4, 1e-5, 9e-6], [0, 10, 100, 350], [0.35, 0.40, 0.45, 0.50], [8, 16],
                                range(5))


def prune(scores: Sequence[tuple[Hyperparameters, float]]) -> list[Hyperparameters]:
    """The sets to drop after a round: the worst-scoring set (the root of the ascending sort; the
    earliest among equal scores) and every set sharing the largest number of equal positions
    with it. Never empty."""
    ranked = sorted(scores, key=lambda pair: pair[1])  # ascending, stable
    root = ranked[0][0]
    shared = {theta: sum(a == b for a, b in zip(theta.as_tuple(), root.as_tuple())) for theta, _ in ranked[1:]}
    most = max(shared.values(), default=0)
    return [root] + [theta for theta, n in shared.items() if most > 0 and n == most]


# ---------------------------------------------------------------------------- neighbours and labels

class InfillingGenerator:
    """The default neighbour generator g: masked-LM in-filling. About `fraction` of the text's
    non-special tokens (at least one) are masked and each is replaced by a token sampled from the
    model's `top_k` predictions other than the original; an output equal to the input is rejected
    and drawn again (up to `attempts` times per neighbour)."""

    def __init__(self, model: nn.Module, tokenizer: Any, fraction: float = 0.15, top_k: int = 10, seed: int = 0,
                 attempts: int = 5) -> None:
        if tokenizer.mask_token_id is None:
            raise ValueError("the in-filling model's tokenizer has no mask token")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.fraction, self.top_k, self.attempts = fraction, top_k, attempts
        self.generator = torch.Generator().manual_seed(seed)
        self.banned = sorted(tokenizer.all_special_ids)

    def __call__(self, text: str, count: int) -> list[str]:
        encoding = self.tokenizer.encode_batch([text], max_length=self.tokenizer.model_max_length)[0]
        ids = torch.tensor(encoding.ids)
        candidates = torch.tensor([i for i, special in enumerate(encoding.special_tokens_mask) if not special])
        original = self.tokenizer.decode(ids, skip_special_tokens=True)
        out: list[str] = []
        for _ in range(count * self.attempts):
            if len(out) == count or len(candidates) == 0:
                break
            n = max(1, round(self.fraction * len(candidates)))
            chosen = candidates[torch.randperm(len(candidates), generator=self.generator)[:n]]
            masked = ids.clone()
            masked[chosen] = self.tokenizer.mask_token_id
            where = torch.zeros(1, len(ids), dtype=torch.bool)
            where[0, chosen] = True
            inputs = to_device({"input_ids": masked[None], "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                                "positions": where}, model_device(self.model))
            with torch.no_grad():
                logits = self.model(**inputs).logits.float().cpu()
            logits[:, self.banned] = float("-inf")
            logits[torch.arange(n), ids[chosen.sort().values]] = float("-inf")  # never the original token
            best = logits.topk(self.top_k, dim=-1)
            pick = torch.multinomial(best.values.softmax(-1), 1, generator=self.generator).squeeze(1)
            filled = ids.clone()
            filled[chosen.sort().values] = best.indices[torch.arange(n), pick]
            neighbour = self.tokenizer.decode(filled, skip_special_tokens=True)
            if neighbour != original and neighbour not in out:
                out.append(neighbour)
        return out


class ClassifierLabeller:
    """The default labeller S: a sequence classifier's hard labels (argmax), translated to the
    data's label ids by `mapping` (labeller id -> data id; identity when None)."""

    def __init__(self, model: nn.Module, tokenizer: Any, mapping: Sequence[int] | None = None) -> None:
        self.model, self.tokenizer, self.mapping = model.eval(), tokenizer, mapping

    def __call__(self, examples: Sequence[TextExample]) -> list[int]:
        predictions = classification_predictions(self.model, examples, self.tokenizer)
        return predictions if self.mapping is None else [self.mapping[p] for p in predictions]


def labeller_mapping(id2label: dict[int, str], label2id: dict[str, int], name: str = "the labeller") -> list[int]:
    """Labeller id -> data id, matching label names (case-insensitively). By id only where names
    carry no meaning: the labeller's are transformers' defaults (LABEL_0, ...) or the data's are
    integers; a ValueError names both sets otherwise."""
    ours = {k.lower(): v for k, v in label2id.items()}
    theirs = [id2label[i] for i in sorted(id2label)]
    if len(theirs) != len(ours):
        raise ValueError(f"{name} has {len(theirs)} labels ({', '.join(theirs)}), the data {len(ours)} "
                         f"({', '.join(label2id)})")
    if all(t.lower() in ours for t in theirs):
        return [ours[t.lower()] for t in theirs]
    default_names = all(t == f"LABEL_{i}" for i, t in enumerate(theirs))
    integer_data = all(k.lstrip("-").isdigit() for k in label2id)
    if (default_names or integer_data) and sorted(label2id.values()) == list(range(len(theirs))):
        logger.warning("%s's labels (%s) are matched to the data's (%s) by id", name, ", ".join(theirs),
                       ", ".join(label2id))
        return list(range(len(theirs)))
    raise ValueError(f"{name}'s labels ({', '.join(theirs)}) do not match the data's ({', '.join(label2id)}); "
                     "rename the data's labels or use a labeller trained on them")


# ---------------------------------------------------------------------------- training one theta

class ClassifierTrainer:
    """Fine-tunes a fresh candidate (pretrained encoder + new head, built by `make_model`) for one
    theta with `fine_tune`, keeping its best epoch on the search dev set; returns (model, score)."""

    def __init__(self, make_model: Callable[[], nn.Module], tokenizer: Any, epochs: int = 3,
                 metric: str = "accuracy", max_grad_norm: float = 1.0, device: Any = None) -> None:
        self.make_model, self.tokenizer = make_model, tokenizer
        self.epochs, self.metric, self.max_grad_norm, self.device = epochs, metric, max_grad_norm, device

    @keeps_global_rng
    def __call__(self, theta: Hyperparameters, train: Sequence[TextExample],
                 dev: Sequence[TextExample]) -> tuple[nn.Module, float]:
        torch.manual_seed(theta.seed)  # the new head's initialisation
        model = self.make_model()
        config = TrainingConfig(num_train_epochs=self.epochs, per_device_train_batch_size=theta.batch_size,
                                learning_rate=theta.learning_rate, weight_decay=theta.weight_decay,
                                warmup_ratio=theta.warmup_ratio, seed=theta.seed, metric_for_best_model=self.metric,
                                max_grad_norm=self.max_grad_norm, device=self.device)
        result = fine_tune(model, list(train), classification_collate(self.tokenizer), config,
                           lambda m: classification_metrics(m, dev, self.tokenizer))
        return model, float(result.best_metric)


# ---------------------------------------------------------------------------- the loop

@dataclass
class AgoraResult:
    model: nn.Module  # the best model of any round
    score: float  # its score on the search dev set
    theta: Hyperparameters
    round: int  # 1-based round that produced it
    baseline_score: float  # the best plain fine-tune over the whole grid (round 1), on the search dev set
    held_out_score: float | None = None  # the best model on the held-out dev part
    baseline_held_out_score: float | None = None  # the best plain fine-tune on the held-out dev part
    train_size: int = 0  # training examples at the end (original + generated)
    report: list[dict[str, Any]] = field(default_factory=list)  # one entry per round


def split_dev(dev: Sequence[TextExample], holdout: float, seed: int = 0) -> tuple[list[TextExample], list[TextExample]]:
    """(search part, held-out part): a seeded shuffle, `holdout` of the examples held out."""
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    order = torch.randperm(len(dev), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = round(holdout * len(dev))
    return [dev[i] for i in order[cut:]], [dev[i] for i in order[:cut]]


def agora(train: Sequence[TextExample], dev: Sequence[TextExample], thetas: Sequence[Hyperparameters],
          trainer: Callable[[Hyperparameters, Sequence[TextExample], Sequence[TextExample]], tuple[nn.Module, float]],
          generator: Callable[[str, int], list[str]], labeller: Callable[[Sequence[TextExample]], list[int]],
          predict: Callable[[nn.Module, Sequence[TextExample]], list[int]], holdout: float = 0.0,
          neighbours: int = 1, max_replays: int = 1, seed: int = 0,
          report_path: str | os.PathLike | None = None) -> AgoraResult:
    """Run Agora. `trainer(theta, train, dev)` returns a newly trained (model, score) and never
    touches that model again, so the best one is kept as it is. `predict(model, examples)` gives a
    model's labels (to find its dev mistakes and score it on the held-out part). The per-round
    report is logged and, with `report_path`, rewritten as JSON after every round."""
    if not thetas:
        raise ValueError("Agora needs at least one hyperparameter set")
    if len(set(thetas)) != len(thetas):
        raise ValueError("the hyperparameter sets must be distinct")
    search, held_out = split_dev(dev, holdout, seed)
    if not search:
        raise ValueError("no dev examples are left for the search; lower holdout or add dev data")
    dev_texts = {(e.text, e.text_pair) for e in dev}
    pool = list(train)
    remaining = list(thetas)
    best: dict[str, Any] | None = None
    report: list[dict[str, Any]] = []
    baseline: dict[str, Any] | None = None
    for round_number in range(1, len(thetas) + 1):
        if not remaining:
            break
        improved, replays = False, 0
        while True:
            shift = replays * 1000  # a replay draws new seeds
            scores, round_best = [], None
            for theta in remaining:
                run = dataclasses.replace(theta, seed=theta.seed + shift)
                model, score = trainer(run, pool, search)
                scores.append((theta, score))
                if round_best is None or score > round_best["score"]:
                    round_best = {"score": score, "theta": run, "model": model}
            improved = best is None or round_best["score"] > best["score"]
            if improved or replays >= max_replays:
                break
            replays += 1
            logger.info("agora round %d did not improve on %.4f; replaying with new seeds (%d/%d)",
                        round_number, best["score"], replays, max_replays)
        if baseline is None:  # round 1 trains every set on the original data: plain fine-tuning
            baseline = round_best
        if improved:
            best = {**round_best, "round": round_number}
        mistakes = [e for e, p in zip(search, predict(round_best["model"], search)) if p != e.label]
        texts = [(text, e.text_pair) for e in mistakes for text in generator(e.text, neighbours)]
        texts = [t for t in texts if t not in dev_texts]  # dev examples never enter training
        new = [TextExample(text, -1, pair) for text, pair in texts]
        labels = labeller(new) if new else []
        pool += [dataclasses.replace(e, label=label) for e, label in zip(new, labels)]
        pruned = prune(scores)
        remaining = [theta for theta in remaining if theta not in pruned]
        entry = {"round": round_number, "scores": [{**dataclasses.asdict(t), "score": s} for t, s in scores],
                 "round_best": round_best["score"], "best_so_far": best["score"], "replays": replays,
                 "mistakes": len(mistakes), "added": len(new), "train_size": len(pool),
                 "pruned": [dataclasses.asdict(t) for t in pruned], "remaining": len(remaining)}
        report.append(entry)
        logger.info("agora round %d: best %.4f (so far %.4f), %d mistakes, %d points added, %d sets pruned, "
                    "%d remain", round_number, round_best["score"], best["score"], len(mistakes), len(new),
                    len(pruned), len(remaining))
        _write_report(report_path, report)
    assert best is not None and baseline is not None  # at least one round ran
    model = best["model"]
    result = AgoraResult(model, best["score"], best["theta"], best["round"], baseline["score"],
                         train_size=len(pool), report=report)
    if held_out:
        result.held_out_score = _accuracy(predict(model, held_out), held_out)
        result.baseline_held_out_score = _accuracy(predict(baseline["model"], held_out), held_out)
    _write_report(report_path, report, result)
    return result


def _accuracy(predictions: Sequence[int], examples: Sequence[TextExample]) -> float:
    return sum(p == e.label for p, e in zip(predictions, examples)) / max(1, len(examples))


def _write_report(path: str | os.PathLike | None, rounds: list[dict[str, Any]], result: AgoraResult | None = None) -> None:
    if path is None:
        return
    content: dict[str, Any] = {"rounds": rounds}
    if result is not None:
        content["final"] = {"best_score": result.score, "best_theta": dataclasses.asdict(result.theta),
                            "best_round": result.round, "baseline_score": result.baseline_score,
                            "held_out_score": result.held_out_score,
                            "baseline_held_out_score": result.baseline_held_out_score,
                            "train_size": result.train_size}
    write_json_atomic(path, content)


# ---------------------------------------------------------------------------- from files

def fresh_head_copies(base: nn.Module) -> Callable[[], nn.Module]:
    """Candidates that share `base`'s pretrained weights, each with its new head drawn afresh from
    the current random state (the trainer seeds it per theta); the checkpoint is read only once."""
    report = getattr(base, "load_report", None)
    new = report.new_head if report else []

    def make() -> nn.Module:
        model = copy.deepcopy(base)
        model.init_parameters(new)
        return model

    return make


@keeps_global_rng
def agora_from_files(model: str | os.PathLike, train: str | os.PathLike, validation: str | os.PathLike,
                     labeller: str | os.PathLike, filler: str | os.PathLike, thetas: Sequence[Hyperparameters],
                     output_dir: str | os.PathLike, epochs: int = 3, holdout: float = 0.3, neighbours: int = 1,
                     max_replays: int = 1, text_column: str = "text", label_column: str = "label",
                     text_pair_column: str | None = None, seed: int = 0, device: Any = None,
                     hub: dict[str, Any] | None = None) -> AgoraResult:
    """Agora on a classification task in files: candidates from `model` (a fresh head each), the
    labeller S a fine-tuned classifier folder or name, the generator in-filling with the masked-LM
    `filler`. Saves the best model with its tokenizer and agora_report.json in `output_dir`.
    device: where the three models run and candidates train (as `resolve_device` takes it; default
    CUDA when present, else the CPU)."""
    from ..models.modeling import ForMaskedLM
    from ..models.auto import AutoModelForSequenceClassification
    from ..tokenizer_files import AutoTokenizer
    from .text_classification import label_mapping, read_csv_examples

    hub = hub or {}
    target = resolve_device("auto" if device is None else device)
    columns = dict(text_column=text_column, label_column=label_column, text_pair_column=text_pair_column)
    label2id = label_mapping(train, label_column)
    examples = read_csv_examples(train, label2id=label2id, **columns)
    dev = read_csv_examples(validation, label2id=label2id, split="validation", **columns)
    tokenizer = AutoTokenizer.from_pretrained(model, **hub)
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(
        model, id2label={i: name for name, i in label2id.items()}, device=target, **hub)
    judge = AutoModelForSequenceClassification.from_pretrained(labeller, device=target, **hub)
    mapping = labeller_mapping({i: judge.config.label_name(i) for i in range(judge.config.num_labels)}, label2id,
                               f"the labeller {labeller}")
    infill = InfillingGenerator(ForMaskedLM.from_pretrained(filler, device=target, **hub),
                                AutoTokenizer.from_pretrained(filler, **hub), seed=seed)
    os.makedirs(output_dir, exist_ok=True)
    result = agora(examples, dev, thetas, ClassifierTrainer(fresh_head_copies(base), tokenizer, epochs, device=target), infill,
                   ClassifierLabeller(judge, AutoTokenizer.from_pretrained(labeller, **hub), mapping),
                   lambda m, items: classification_predictions(m, items, tokenizer), holdout=holdout,
                   neighbours=neighbours, max_replays=max_replays, seed=seed,
                   report_path=os.path.join(output_dir, "agora_report.json"))
    save_together(output_dir, [result.model, tokenizer])  # beside agora_report.json, written each round
    return result
