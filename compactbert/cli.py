"""The `compactbert` command line: fill-mask, download, export, predict, embed, list, env, bench, finetune,
distill, transfer, extract, agora.
Errors are one line and exit status 1."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import CompactBertError
from .options import HelpFormatter


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", help="branch, tag or commit of the Hub repository")
    parser.add_argument("--cache-dir", help="Hub cache folder (default: the huggingface_hub cache)")
    parser.add_argument("--local-files-only", action="store_true", help="never touch the network")
    parser.add_argument("--token", help="Hub access token (default: the saved login, if any)")


def hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("revision", "cache_dir", "token"):
        if getattr(args, name, None):
            out[name] = getattr(args, name)
    if getattr(args, "local_files_only", False):
        out["local_files_only"] = True
    return out


def _parser() -> argparse.ArgumentParser:
    from .cli_batch import add_batch_commands
    from .cli_training import add_training_commands

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter, **kwargs)

    parser = argparse.ArgumentParser(prog="compactbert", description="compact BERT models (BORT, MobileBERT, "
                                     "DistilBERT, RoBERTa, ALBERT) in PyTorch")
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
    add_hub_options(fill)

    download = command("download", "fetch a checkpoint into the Hub cache for offline use")
    download.add_argument("name", help="Hub id or alias")
    download.add_argument("--force", action="store_true", help="download again even if cached")
    add_hub_options(download)

    add_training_commands(command)
    add_batch_commands(command)

    from .export import DEFAULT_OPSET, EXPORT_TASKS

    export = command("export", "write a model as an ONNX graph, with its config and tokenizer, for other runtimes")
    export.add_argument("format", choices=["onnx"], help="the graph format")
    export.add_argument("model", help="Hub id, alias or local folder")
    export.add_argument("output_dir", help="the folder to write (replaced atomically if it exists)")
    export.add_argument("--task", choices=list(EXPORT_TASKS), default="base",
                        help="which head the graph ends in (base: hidden states and the pooler)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version (>= 17)")
    export.add_argument("--int8", action="store_true",
                        help="also write model_quantized.onnx: onnxruntime dynamic int8, per-channel weights")
    add_hub_options(export)

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
    device = checked_device(args.device)
    texts = _read_texts(args)
    from .pipelines import pipeline

    fill = pipeline("fill-mask", model=args.model, dtype=args.dtype, quantize=args.quantize, batch_size=args.batch_size,
                    device=device, allow_untrained_head=args.allow_untrained_head, **hub_kwargs(args))
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


def checked_device(option: str | None) -> "str | None":
    """Check --device before anything loads: a device torch knows, and that this machine has."""
    if option is not None:
        from .devices import resolve_device

        resolve_device(option, "--device")
    return option


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


def _download(args: argparse.Namespace) -> int:
    from .io.files import locate_weights
    from .io.hub import find_file, offline_mode, resolve_file
    from .tokenizer_files import TOKENIZER_FILES

    if offline_mode():
        raise CompactBertError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded; run this command with it unset "
                               f"(env -u HF_HUB_OFFLINE compactbert download {args.name})")
    hub = hub_kwargs(args)
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


def _export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    report = export_onnx(args.model, args.output_dir, task=args.task, opset=args.opset, int8=args.int8,
                         **hub_kwargs(args))
    print(f"wrote {report.directory}: {', '.join(report.files)}")
    print(f"inputs {', '.join(report.inputs)}; outputs {', '.join(report.outputs)} (opset {report.opset})")
    print(f"checked in onnxruntime on padded batches of mixed lengths: max |onnx - eager| = {report.max_abs_diff:.2e} "
          f"(allowed {report.tolerance:g} x max(1, {report.max_abs_output:.3g}))")
    if report.int8_min_cosine is not None:
        print(f"int8 graph: min cosine to float32 {report.int8_min_cosine:.5f} on random input "
              "(real-text figures: docs/performance.md)")
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
        if args.command in ("finetune", "distill", "transfer", "extract", "agora"):
            from . import cli_training

            return {"finetune": cli_training.finetune, "distill": cli_training.distill,
                    "transfer": cli_training.transfer, "extract": cli_training.extract,
                    "agora": cli_training.agora}[args.command](args)
        if args.command in ("predict", "embed"):
            from . import cli_batch

            return cli_batch.run(args)
        if args.command == "export":
            return _export(args)
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
