"""The training commands of the command line: finetune, distill, transfer, extract and agora (their
options and handlers); compactbert/cli.py dispatches to them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from .cli import add_hub_options, checked_device, hub_kwargs
from .errors import CompactBertError
from .options import add_config_options, add_parameter_options

_DEVICE_HELP = {"device": "where training runs: cpu, cuda, cuda:1, mps (default: CUDA when present, the local "
                          "rank's GPU under torchrun; else cpu)"}


def add_training_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """The finetune, distill and agora subcommands. Their options come from the dataclasses and
    signatures that hold them (compactbert/options.py), so each default is written once."""
    from .training.agora import agora_from_files
    from .training.distill import DistillationConfig
    from .training.finetune import TrainingConfig
    from .training.lora import LoraSettings
    from .training.extract import ExtractionConfig
    from .training.progressive import TransferConfig
    from .training.recipes import DataOptions

    tune = command("finetune", "fine-tune a model on your data and save it in Hub layout")
    tune.add_argument("task", choices=["text-classification", "token-classification", "question-answering",
                                       "multiple-choice"], help="what the model learns to do")
    tune.add_argument("--model", required=True, help="Hub id, alias or local folder to start from")
    tune.add_argument("--train", required=True, help="text classification: CSV with a header row or JSON lines; "
                      "token classification and QA: JSON lines (see docs/fine-tuning.md); or hf:NAME, a Hub dataset")
    tune.add_argument("--validation", help="the same, to evaluate on after every epoch (keeps the best epoch)")
    add_config_options(tune, DataOptions, [f.name for f in dataclasses.fields(DataOptions)])
    add_config_options(tune, TrainingConfig, ["num_train_epochs", "per_device_train_batch_size",
                                              "gradient_accumulation_steps", "learning_rate", "warmup_ratio",
                                              "weight_decay", "seed", "max_grad_norm", "bf16", "fp16", "device",
                                              "checkpoint_dir", "progress"], _DEVICE_HELP)
    add_config_options(tune, LoraSettings, [f.name for f in dataclasses.fields(LoraSettings)])
    tune.add_argument("--resume", action="store_true",
                      help="continue from the trainer state in --checkpoint-dir (same result as one run)")
    tune.add_argument("--output-dir", required=True, help="where the best epoch is saved, with its tokenizer")
    add_hub_options(tune)

    still = command("distill", "distil a masked-LM teacher into a smaller student (DistilBERT's recipe)")
    still.add_argument("--teacher", required=True, help="Hub id, alias or folder of a masked-LM")
    still.add_argument("--corpus", required=True, nargs="+", help="plain text files, one sequence per line")
    student = still.add_mutually_exclusive_group()
    student.add_argument("--layers", help="comma-separated teacher layers to copy (default: half of them, "
                         "evenly spread: 0,2,4,7,9,11 for 12)")
    student.add_argument("--student-config", help="config.json of a fresh student instead")
    still.add_argument("--validation", help="text file: report the student's agreement with the teacher")
    add_config_options(still, DistillationConfig, ["num_train_epochs", "per_device_train_batch_size",
                                                   "gradient_accumulation_steps", "learning_rate", "max_length",
                                                   "temperature", "alpha_ce", "alpha_mlm", "alpha_cos",
                                                   "mask_smoothing", "kl_on", "max_steps", "seed", "bf16", "fp16",
                                                   "device"], _DEVICE_HELP)
    still.add_argument("--output-dir", required=True, help="where the student is saved, with the tokenizer")
    add_hub_options(still)

    move = command("transfer", "make a MobileBERT from an IB-BERT-like teacher: progressive knowledge transfer, "
                   "then pre-training distillation")
    move.add_argument("--teacher", required=True, help="folder or Hub id of the teacher masked-LM (MobileBERT "
                      "layout, e.g. IB-BERT; see docs/progressive-transfer.md)")
    move.add_argument("--student-config", required=True, help="config.json of the student (same depth, "
                      "inter-block width and heads as the teacher)")
    move.add_argument("--corpus", required=True, nargs="+", help="text files: one sentence per line, a blank "
                      "line between documents")
    move.add_argument("--validation", help="text file: each stage reports the student's agreement with the teacher")
    add_config_options(move, TransferConfig, [f.name for f in dataclasses.fields(TransferConfig)
                                              if f.name not in _NOT_OPTIONS], _DEVICE_HELP)
    move.add_argument("--no-next-sentence", action="store_true", help="single lines, no next-sentence prediction")
    move.add_argument("--resume", action="store_true", help="continue from the trainer state (same result as "
                      "one run)")
    move.add_argument("--output-dir", required=True, help="where the student is saved, with the tokenizer and "
                      "the stage reports")
    add_hub_options(move)

    find = command("extract", "search for the architecture with the best size, speed and error trade-off "
                   "(BORT's optimal subarchitecture extraction)")
    find.add_argument("--teacher", required=True, help="folder or Hub id of the teacher masked-LM (BERT, RoBERTa "
                      "or DistilBERT layout)")
    find.add_argument("--corpus", required=True, nargs="+", help="plain text files the surrogates are distilled on, "
                      "one sequence per line")
    find.add_argument("--validation", required=True, help="held-out text file: each surrogate's error is measured on it")
    find.add_argument("--space", default="default", help="'default' (D 2-12, A 4-16, H 512-1024, I 256-3072) or a "
                      "JSON file of lists depth, heads, width, ffn")
    add_config_options(find, ExtractionConfig, [f.name for f in dataclasses.fields(ExtractionConfig)
                                                if f.name not in ("space", "output_dir")], _DEVICE_HELP)
    find.add_argument("--resume", action="store_true", help="reuse the surrogates a run with the same settings "
                      "trained (also those of an exhaustive run)")
    find.add_argument("--output-dir", required=True, help="where the ranked table, plot and chosen config.json go")
    add_hub_options(find)

    ag = command("agora", "Agora fine-tuning (BORT's procedure) on a classification task")
    ag.add_argument("--model", required=True, help="the candidate: Hub id, alias or folder (a new head is added)")
    ag.add_argument("--labeller", required=True, help="a fine-tuned classifier that labels generated texts")
    ag.add_argument("--filler", required=True, help="a masked-LM that generates neighbours by in-filling "
                    "(not BORT's own checkpoint: its masked-LM head is untrained)")
    ag.add_argument("--train", required=True, help="CSV (header row) or JSON lines, or hf:NAME, a Hub dataset")
    ag.add_argument("--validation", required=True, help="the dev set: searched on, and partly held out")
    add_config_options(ag, DataOptions, ["text_column", "text_pair_column", "label_column"])
    ag.add_argument("--learning-rates", default="1e-4,1e-5,9e-6", help="comma-separated grid values")
    ag.add_argument("--weight-decays", default="0,0.01", help="comma-separated grid values")
    ag.add_argument("--warmup-ratios", default="0.1", help="comma-separated grid values")
    ag.add_argument("--batch-sizes", default="8,16", help="comma-separated grid values")
    ag.add_argument("--seeds", default="0", help="comma-separated grid values")
    ag.add_argument("--bort-grid", action="store_true", help="the BORT README's grid of 480 sets instead")
    add_parameter_options(ag, agora_from_files, {
        "epochs": "epochs per model (the per-round budget)",
        "holdout": "share of the dev set kept out of the search",
        "neighbours": "generated points per dev mistake",
        "max_replays": "re-runs of a round that did not improve",
        "seed": "seed of the holdout split, generation and training",
        "device": _DEVICE_HELP["device"],
    })
    ag.add_argument("--output-dir", required=True, help="where the best model and agora_report.json are saved")
    add_hub_options(ag)


def finetune(args: argparse.Namespace) -> int:
    from .training import DataOptions, LoraSettings, TrainingConfig, finetune_task

    _show_progress("compactbert.training.finetune", "finetune")
    if args.resume and args.checkpoint_dir is None:
        raise CompactBertError("--resume continues from --checkpoint-dir: give the folder of the interrupted run")
    config = TrainingConfig(num_train_epochs=args.num_train_epochs,
                            per_device_train_batch_size=args.per_device_train_batch_size,
                            gradient_accumulation_steps=args.gradient_accumulation_steps,
                            learning_rate=args.learning_rate, warmup_ratio=args.warmup_ratio,
                            weight_decay=args.weight_decay, seed=args.seed, max_grad_norm=args.max_grad_norm,
                            bf16=args.bf16, fp16=args.fp16, device=checked_device(args.device),
                            checkpoint_dir=args.checkpoint_dir, output_dir=args.output_dir, progress=args.progress)
    data = DataOptions(text_column=args.text_column, text_pair_column=args.text_pair_column,
                       label_column=args.label_column, words_field=args.words_field, tags_field=args.tags_field,
                       max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
                       context_field=args.context_field, choices_field=args.choices_field)
    lora = LoraSettings(lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        lora_targets=args.lora_targets)
    result, metrics = finetune_task(args.task, args.model, args.train, args.validation, config, data, hub_kwargs(args),
                                    resume=args.resume, lora=lora)
    for record in result.history:
        print(json.dumps(record))
    if lora.lora_r:
        print(f"LoRA: {metrics['trainable_parameters']:,} trainable parameters ({metrics['trainable_share']:.2%}); "
              f"load the result with compactbert.training.load_lora({args.output_dir!r})")
    print(f"saved to {args.output_dir}")
    return 0


def distill(args: argparse.Namespace) -> int:
    from .config import AutoConfig
    from .training import DistillationConfig, distill_from_files

    _show_progress("compactbert.training.distill", "distill")

    layers = _numbers(args.layers, int, "--layers") if args.layers else None
    config = DistillationConfig(
        num_train_epochs=args.num_train_epochs, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, bf16=args.bf16, fp16=args.fp16,
        device=checked_device(args.device),
        learning_rate=args.learning_rate, max_length=args.max_length, temperature=args.temperature,
        alpha_ce=args.alpha_ce, alpha_mlm=args.alpha_mlm, alpha_cos=args.alpha_cos,
        mask_smoothing=args.mask_smoothing, kl_on=args.kl_on, max_steps=args.max_steps, seed=args.seed,
        output_dir=args.output_dir)
    student_config = None
    if args.student_config:  # a config.json file, or a folder / Hub id holding one
        source = Path(args.student_config)
        student_config = (AutoConfig.from_dict(json.loads(source.read_text(encoding="utf-8")))
                          if source.is_file() else AutoConfig.from_pretrained(args.student_config))
    metrics = distill_from_files(args.teacher, args.corpus, config, layers, student_config, args.validation,
                                 hub_kwargs(args))
    for record in metrics["history"]:
        print(json.dumps(record))
    if "agreement_before" in metrics:
        print(f"agreement with the teacher: {metrics['agreement_before']:.3f} -> {metrics['agreement_after']:.3f}")
        print(f"divergence from the teacher (KL, nats per masked token): {metrics['divergence_before']:.3f} -> "
              f"{metrics['divergence_after']:.3f}")
    print(f"saved to {args.output_dir}")
    return 0


def extract(args: argparse.Namespace) -> int:
    from .training.extract import ExtractionConfig, extract_from_files

    _show_progress("compactbert.training.extract", "extract")
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExtractionConfig)
                if f.name not in ("space", "output_dir")}
    config = ExtractionConfig(**{**settings, "space": args.space, "device": checked_device(args.device),
                                 "output_dir": args.output_dir})
    result = extract_from_files(args.teacher, args.corpus, args.validation, config, args.resume, hub_kwargs(args))
    chosen = result.chosen
    print(f"chosen: {chosen.architecture.name} (W {chosen.w:.4f}, p {chosen.costs.parameters:,}, "
          f"i {chosen.costs.flops:,} operations per token, e {chosen.error:.4f}); "
          f"{result.trained} of {len(result.candidates)} candidates trained")
    print(f"distil it with: compactbert distill --teacher {args.teacher} --student-config "
          f"{Path(args.output_dir) / 'config.json'} --corpus ... --output-dir ...")
    print(f"saved to {args.output_dir}: {', '.join(sorted(result.files))}")
    return 0


# TransferConfig fields the transfer command does not take as --options: said otherwise (--output-dir,
# --no-next-sentence) or true by default (a store_true flag could not turn them off).
_NOT_OPTIONS = ("next_sentence", "output_dir", "divide_by_layers")


def transfer(args: argparse.Namespace) -> int:
    from .training.progressive import TransferConfig, transfer_from_files

    _show_progress("compactbert.training.progressive", "transfer")
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TransferConfig)
                if f.name not in _NOT_OPTIONS}
    config = TransferConfig(**{**settings, "device": checked_device(args.device), "output_dir": args.output_dir,
                               "next_sentence": not args.no_next_sentence})
    report = transfer_from_files(args.teacher, args.student_config, args.corpus, config, args.validation,
                                 args.resume, hub_kwargs(args))
    for stage, content in report.items():
        if "validation" in content:
            print(f"{stage}: {json.dumps(content['validation'])}")
    print(f"saved to {args.output_dir}")
    return 0


def _show_progress(logger_name: str, prefix: str) -> None:
    """Print a training module's INFO messages (per epoch or round) on standard error as they come."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    log = logging.getLogger(logger_name)
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False


def _numbers(text: str, kind: type, option: str) -> list[Any]:
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated {kind.__name__}s, got {text!r}") from None


def agora(args: argparse.Namespace) -> int:
    from .training import BORT_GRID, agora_from_files, hyperparameter_grid

    _show_progress("compactbert.training.agora", "agora")

    thetas = BORT_GRID if args.bort_grid else hyperparameter_grid(
        _numbers(args.learning_rates, float, "--learning-rates"), _numbers(args.weight_decays, float, "--weight-decays"),
        _numbers(args.warmup_ratios, float, "--warmup-ratios"), _numbers(args.batch_sizes, int, "--batch-sizes"),
        _numbers(args.seeds, int, "--seeds"))
    result = agora_from_files(args.model, args.train, args.validation, args.labeller, args.filler, thetas,
                              args.output_dir, epochs=args.epochs, holdout=args.holdout, neighbours=args.neighbours,
                              max_replays=args.max_replays, text_column=args.text_column,
                              label_column=args.label_column, text_pair_column=args.text_pair_column,
                              seed=args.seed, device=checked_device(args.device), hub=hub_kwargs(args))
    for entry in result.report:
        print(f"round {entry['round']}: best {entry['round_best']:.4f}, so far {entry['best_so_far']:.4f}, "
              f"{entry['mistakes']} mistakes, {entry['added']} added, {len(entry['pruned'])} pruned, "
              f"{entry['remaining']} remain")
    print(f"search dev: Agora {result.score:.4f} (round {result.round}), plain fine-tuning {result.baseline_score:.4f}")
    if result.held_out_score is not None:
        print(f"held-out dev: Agora {result.held_out_score:.4f}, plain fine-tuning {result.baseline_held_out_score:.4f}")
    print(f"saved to {args.output_dir} (report: agora_report.json)")
    return 0
