"""The batch-inference commands of the command line: predict and embed (compactbert/batch.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .cli import add_hub_options, checked_device, hub_kwargs


def add_batch_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    predict = command("predict", "run a task over a large input file, streamed, in resumable shards")
    predict.add_argument("--task", required=True, choices=["text-classification", "token-classification", "fill-mask",
                                                           "question-answering"], help="what to predict")
    _common(predict)
    predict.add_argument("--text-pair-column", help="text classification: a second text column, for pairs")
    predict.add_argument("--question-column", default="question", help="question answering: the question column")
    predict.add_argument("--context-column", default="context", help="question answering: the context column")
    predict.add_argument("--top-k", type=int, default=5, help="fill-mask: predictions per mask")
    predict.add_argument("--quantize", choices=["int8"], help="int8 inference on the CPU")

    embed = command("embed", "sentence embeddings of a large input file, as .npy shards (resumable)")
    _common(embed)
    embed.add_argument("--normalize", action="store_true", help="unit-length vectors (sentence-transformers "
                       "folders with a Normalize module are normalised anyway)")
    embed.add_argument("--quantize", choices=["int8"], help="int8 inference on the CPU")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hub id, alias or local folder")
    parser.add_argument("--input", required=True, help=".txt (one text per line), .csv (header row), .jsonl or "
                        ".parquet")
    parser.add_argument("--output", required=True, help="folder of shards; rerunning the same command resumes")
    parser.add_argument("--text-column", default="text", help="the text column (CSV, JSON Lines, parquet)")
    parser.add_argument("--rows-per-shard", type=int, default=10_000, help="rows per output file")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (length-sorted)")
    parser.add_argument("--max-length", type=int, help="tokens per text (default: the model's limit)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype")
    parser.add_argument("--device", help="where the model runs: cpu, cuda, cuda:1 (under torchrun each process "
                        "takes its share of the shards)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar with rate and ETA (default: when standard error is a terminal)")
    add_hub_options(parser)


def run(args: argparse.Namespace) -> int:
    from .batch import BatchJob, run_batch

    task = "embed" if args.command == "embed" else args.task
    job = BatchJob(task=task, model=args.model, input=args.input, output=args.output, text_column=args.text_column,
                   text_pair_column=getattr(args, "text_pair_column", None),
                   question_column=getattr(args, "question_column", "question"),
                   context_column=getattr(args, "context_column", "context"), rows_per_shard=args.rows_per_shard,
                   top_k=getattr(args, "top_k", 5), normalize=getattr(args, "normalize", False),
                   batch_size=args.batch_size, max_length=args.max_length, dtype=args.dtype, quantize=args.quantize,
                   device=checked_device(args.device))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    summary: dict[str, Any] = run_batch(job, hub_kwargs(args), progress=progress)
    print(json.dumps(summary))
    state = "complete" if summary["complete"] else "this process's share is done; other processes are still writing"
    print(f"{args.output}: {summary['written']} shard(s) written, {summary['skipped']} already there; {state}")
    return 0
