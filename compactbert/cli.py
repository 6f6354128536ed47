"""The `compactbert` command line: fill-mask, download, list, env, bench, finetune, distill, agora.
Errors are one line and exit status 1."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import CompactBertError
from .options import HelpFormatter, add_config_options, add_parameter_options


_DEVICE_HELP = {"device": "where training runs: cpu, cuda, cuda:1, mps (default: CUDA when present, the local "
                          "rank's GPU under torchrun; else cpu)"}


def _add_hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", help="branch, tag or commit of the Hub repository")
    parser.add_argument("--cache-dir", help="Hub cache folder (default: the huggingface_hub cache)")
    parser.add_argument("--local-files-only", action="store_true", help="never touch the network")
    parser.add_argument("--token", help="Hub access token (default: the saved login, if any)")


def _hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("revision", "cache_dir", "token"):
        if getattr(args, name, None):
            out[name] = getattr(args, name)
    if getattr(args, "local_files_only", False):
        out["local_files_only"] = True
    return out


def _parser() -> argparse.ArgumentParser:
    # Training options come from the dataclasses that hold them (compactbert/options.py), so each
    # default is written once; the training modules are light to import.
    from .training.agora import agora_from_files
    from .training.distill import DistillationConfig
    from .training.finetune import TrainingConfig
    from .training.recipes import DataOptions

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter, **kwargs)

    parser = argparse.ArgumentParser(prog="compactbert", description="BORT, MobileBERT and DistilBERT in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    fill = command("fill-mask", "predict the words behind [MASK] / <mask>")
    fill.add_argument("texts", nargs="*", help="texts with [MASK] or <mask>; '-' or none: read lines from stdin")
    fill.add_argument("--model", required=True, help="Hub id, alias (see `compactbert list`) or local folder")
    fill.add_argument("--file", help="read texts from this file, one per line")
    fill.add_argument("--top-k", type=int, default=5, help="predictions per mask")
    fill.add_argument("--targets", help="comma-separated words to score instead of the whole vocabulary")
    fill.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    fill.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                      help="compute dtype (default float32; bfloat16 is fast where the CPU has native bf16, "
                           "see `compactbert env`)")
    fill.add_argument("--quantize", choices=["int8"], default=None,
                      help="int8 inference on the CPU (per-channel weights, per-token activations)")
    fill.add_argument("--device", help="where the model runs: cpu, cuda, cuda:1, mps (default: cpu)")
    fill.add_argument("--allow-untrained-head", action="store_true",
                      help="run a checkpoint without a masked-LM head anyway (random predictions; experiments only)")
    fill.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_hub_options(fill)

    download = command("download", "fetch a checkpoint into the Hub cache for offline use")
    download.add_argument("name", help="Hub id or alias")
    download.add_argument("--force", action="store_true", help="download again even if cached")
    _add_hub_options(download)

    tune = command("finetune", "fine-tune a model on your data and save it in Hub layout")
    tune.add_argument("task", choices=["text-classification", "token-classification", "question-answering",
                                       "multiple-choice"], help="what the model learns to do")
    tune.add_argument("--model", required=True, help="Hub id, alias or local folder to start from")
    tune.add_argument("--train", required=True, help="text classification: CSV with a header row or JSON lines; "
                      "token classification and QA: JSON lines (see docs/fine-tuning.md); or a `datasets` name")
    tune.add_argument("--validation", help="the same, to evaluate on after every epoch (keeps the best epoch)")
    add_config_options(tune, DataOptions, [f.name for f in dataclasses.fields(DataOptions)])
    add_config_options(tune, TrainingConfig, ["num_train_epochs", "per_device_train_batch_size",
                                              "gradient_accumulation_steps", "learning_rate", "warmup_ratio",
                                              "weight_decay", "seed", "max_grad_norm", "bf16", "fp16", "device",
                                              "checkpoint_dir", "progress"], _DEVICE_HELP)
    tune.add_argument("--resume", action="store_true",
                      help="continue from the trainer state in --checkpoint-dir (same result as one run)")
    tune.add_argument("--output-dir", required=True, help="where the best epoch is saved, with its tokenizer")
    _add_hub_options(tune)

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
                                                   "mask_smoothing", "seed", "bf16", "fp16", "device"], _DEVICE_HELP)
    still.add_argument("--output-dir", required=True, help="where the student is saved, with the tokenizer")
    _add_hub_options(still)

    ag = command("agora", "Agora fine-tuning (BORT's procedure) on a classification task")
    ag.add_argument("--model", required=True, help="the candidate: Hub id, alias or folder (a new head is added)")
    ag.add_argument("--labeller", required=True, help="a fine-tuned classifier that labels generated texts")
    ag.add_argument("--filler", required=True, help="a masked-LM that generates neighbours by in-filling "
                    "(not BORT's own checkpoint: its masked-LM head is untrained)")
    ag.add_argument("--train", required=True, help="CSV (header row) or JSON lines, or a `datasets` name")
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
    _add_hub_options(ag)

    listing = command("list", "known checkpoints, their aliases, and which are available offline")
    listing.add_argument("--cache-dir", help="Hub cache folder (default: the huggingface_hub cache)")
    sub.add_parser("bench", help="speed against transformers and other engines (see `compactbert bench --help`)",
                   add_help=False)
    command("env", "versions and settings, for bug reports")
    return parser


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = [t for t in args.texts if t != "-"]
    if args.file:
        try:
            texts += [line.rstrip("\n") for line in Path(args.file).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CompactBertError(f"cannot read --file {args.file}: {exc}") from exc
    if not texts or "-" in args.texts:
        if sys.stdin is None or (sys.stdin.isatty() and not texts):
            raise CompactBertError("no input: give texts as arguments, with --file, or on standard input")
        if not sys.stdin.isatty():
            texts += [line.rstrip("\n") for line in sys.stdin]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise CompactBertError("no input: every text given was empty")
    return texts


def _fill_mask(args: argparse.Namespace) -> int:
    targets = _targets(args.targets)
    if args.top_k < 1:
        raise CompactBertError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise CompactBertError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = _device(args.device)
    texts = _read_texts(args)
    from .pipelines import pipeline

    fill = pipeline("fill-mask", model=args.model, dtype=args.dtype, quantize=args.quantize, batch_size=args.batch_size,
                    device=device, allow_untrained_head=args.allow_untrained_head, **_hub_kwargs(args))
    results = fill(texts, top_k=args.top_k, targets=targets)
    if len(texts) == 1:
        results = [results]  # the pipeline unwraps a single text
    # One list per mask for every text, whatever the number of masks.
    per_text = [r if r and isinstance(r[0], list) else [r] for r in results]
    if args.json:
        print(json.dumps([{"text": t, "masks": m} for t, m in zip(texts, per_text)], ensure_ascii=False, indent=2))
        return 0
    for n, (text, masks) in enumerate(zip(texts, per_text)):
        if n:
            print()
        print(text)
        for m, predictions in enumerate(masks):
            if len(masks) > 1:
                print(f"  mask {m + 1}")
            print(f"  {'rank':>4}  {'score':>9}  token")
            for rank, p in enumerate(predictions, 1):
                print(f"  {rank:>4}  {format_score(p['score']):>9}  {p['token_str'].strip() or repr(p['token_str'])}")
    return 0


def format_score(score: float) -> str:
    """Four decimals, or three significant digits in exponent form below 0.001 (never a bare 0.0000)."""
    return f"{score:.4f}" if score >= 1e-3 or score == 0 else f"{score:.2e}"


def _targets(option: str | None) -> list[str] | None:
    if option is None:
        return None
    targets = [t.strip() for t in option.split(",") if t.strip()]
    if not targets:
        raise CompactBertError("--targets is empty: give comma-separated words, or leave it out to rank the "
                               "whole vocabulary")
    return targets


def _device(option: str | None) -> "str | None":
    """Check --device before anything loads: a device torch knows, and that this machine has."""
    if option is not None:
        from .devices import resolve_device

        resolve_device(option, "--device")
    return option


def _finetune(args: argparse.Namespace) -> int:
    from .training import DataOptions, TrainingConfig, finetune_task

    _show_progress("compactbert.training.finetune", "finetune")
    if args.resume and args.checkpoint_dir is None:
        raise CompactBertError("--resume continues from --checkpoint-dir: give the folder of the interrupted run")
    config = TrainingConfig(num_train_epochs=args.num_train_epochs,
                            per_device_train_batch_size=args.per_device_train_batch_size,
                            gradient_accumulation_steps=args.gradient_accumulation_steps,
                            learning_rate=args.learning_rate, warmup_ratio=args.warmup_ratio,
                            weight_decay=args.weight_decay, seed=args.seed, max_grad_norm=args.max_grad_norm,
                            bf16=args.bf16, fp16=args.fp16, device=_device(args.device),
                            checkpoint_dir=args.checkpoint_dir, output_dir=args.output_dir, progress=args.progress)
    data = DataOptions(text_column=args.text_column, text_pair_column=args.text_pair_column,
                       label_column=args.label_column, words_field=args.words_field, tags_field=args.tags_field,
                       max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
                       context_field=args.context_field, choices_field=args.choices_field)
    result, _ = finetune_task(args.task, args.model, args.train, args.validation, config, data, _hub_kwargs(args),
                              resume=args.resume)
    for record in result.history:
        print(json.dumps(record))
    print(f"saved to {args.output_dir}")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from .config import AutoConfig
    from .training import DistillationConfig, distill_from_files

    _show_progress("compactbert.training.distill", "distill")

    layers = _numbers(args.layers, int, "--layers") if args.layers else None
    config = DistillationConfig(
        num_train_epochs=args.num_train_epochs, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, bf16=args.bf16, fp16=args.fp16,
        device=_device(args.device),
        learning_rate=args.learning_rate, max_length=args.max_length, temperature=args.temperature,
        alpha_ce=args.alpha_ce, alpha_mlm=args.alpha_mlm, alpha_cos=args.alpha_cos,
        mask_smoothing=args.mask_smoothing, seed=args.seed, output_dir=args.output_dir)
    student_config = None
    if args.student_config:  # a config.json file, or a folder / Hub id holding one
        source = Path(args.student_config)
        student_config = (AutoConfig.from_dict(json.loads(source.read_text(encoding="utf-8")))
                          if source.is_file() else AutoConfig.from_pretrained(args.student_config))
    metrics = distill_from_files(args.teacher, args.corpus, config, layers, student_config, args.validation,
                                 _hub_kwargs(args))
    for record in metrics["history"]:
        print(json.dumps(record))
    if "agreement_before" in metrics:
        print(f"agreement with the teacher: {metrics['agreement_before']:.3f} -> {metrics['agreement_after']:.3f}")
        print(f"divergence from the teacher (KL, nats per masked token): {metrics['divergence_before']:.3f} -> "
              f"{metrics['divergence_after']:.3f}")
    print(f"saved to {args.output_dir}")
    return 0


class _NamedFormatter(logging.Formatter):
    """`compactbert: warning: ...` for our own loggers, `<logger name>: warning: ...` for a library's."""

    def format(self, record: logging.LogRecord) -> str:
        name = "compactbert" if record.name.split(".")[0] == "compactbert" else record.name
        return f"{name}: {record.levelname.lower()}: {record.getMessage()}"


def _configure_logging() -> None:
    """Show every warning once, on standard error, under the name of the logger that sent it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NamedFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # huggingface_hub gives its root logger a stream handler of its own, which would print each of its
    # records a second time, without the logger's name; with it removed they reach the handler above.
    from huggingface_hub.utils import logging as hub_logging

    hub_root = hub_logging.get_logger()
    for stream in [h for h in hub_root.handlers if type(h) is logging.StreamHandler]:
        hub_root.removeHandler(stream)


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


def _agora(args: argparse.Namespace) -> int:
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
                              seed=args.seed, device=_device(args.device), hub=_hub_kwargs(args))
    for entry in result.report:
        print(f"round {entry['round']}: best {entry['round_best']:.4f}, so far {entry['best_so_far']:.4f}, "
              f"{entry['mistakes']} mistakes, {entry['added']} added, {len(entry['pruned'])} pruned, "
              f"{entry['remaining']} remain")
    print(f"search dev: Agora {result.score:.4f} (round {result.round}), plain fine-tuning {result.baseline_score:.4f}")
    if result.held_out_score is not None:
        print(f"held-out dev: Agora {result.held_out_score:.4f}, plain fine-tuning {result.baseline_held_out_score:.4f}")
    print(f"saved to {args.output_dir} (report: agora_report.json)")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .io.files import locate_weights
    from .io.hub import find_file, offline_mode, resolve_file
    from .tokenizer_files import TOKENIZER_FILES

    if offline_mode():
        raise CompactBertError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded; run this command with it unset "
                               f"(env -u HF_HUB_OFFLINE compactbert download {args.name})")
    hub = _hub_kwargs(args)
    if args.force:
        hub["force_download"] = True
    config = resolve_file(args.name, "config.json", **hub)
    weights, _ = locate_weights(args.name, **hub)
    fetched = [config, *weights]
    for filename in TOKENIZER_FILES:
        path = find_file(args.name, filename, **hub)
        if path is not None:
            fetched.append(path)
    for path in fetched:
        print(f"  {path.name}")
    print(f"{args.name} is in the cache: {config.parent}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .io.hub import cached_state, list_checkpoints

    entries = list_checkpoints()
    states = [cached_state(e.alias, cache_dir=args.cache_dir) for e in entries]
    width = max(len(e.alias) for e in entries)
    repo_width = max(len(e.repo_id) for e in entries)
    state_width = max(len("here"), *(len(s) for s in states))
    print(f"{'alias':<{width}}  {'repository':<{repo_width}}  {'family':<10}  {'here':<{state_width}}  note")
    for e, state in zip(entries, states):
        print(f"{e.alias:<{width}}  {e.repo_id:<{repo_width}}  {e.family:<10}  {state or '-':<{state_width}}  {e.note}")
    print("\nhere: 'cached' = config and weights in the Hub cache, 'package' = shipped by an installed package; "
          "'-' needs the Hub (or `compactbert download` on a machine that reaches it)")
    return 0


def _env() -> int:
    print(f"compactbert      {_version('compactbert')}")
    print(f"python           {platform.python_version()} ({platform.platform()})")
    for package in ("torch", "tokenizers", "safetensors", "huggingface_hub", "numpy", "transformers"):
        print(f"{package:<16} {_version(package)}")
    try:
        import torch

        print(f"torch threads    {torch.get_num_threads()}")
        print(f"cuda available   {torch.cuda.is_available()}")
        from .nn.kernels import describe

        for mode, kernel in describe().items():
            print(f"CPU {mode:<12} {kernel}")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE"):
        print(f"{var:<16} {os.environ.get(var, '(unset)')}")
    return 0


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark has its own options
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "fill-mask":
            return _fill_mask(args)
        if args.command == "download":
            return _download(args)
        if args.command == "finetune":
            return _finetune(args)
        if args.command == "distill":
            return _distill(args)
        if args.command == "agora":
            return _agora(args)
        if args.command == "list":
            return _list(args)
        return _env()
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except (CompactBertError, ValueError, OSError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"compactbert: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("compactbert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
