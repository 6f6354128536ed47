"""Benchmark: compactbert against transformers on the same weights, in one process.

    python -m compactbert.bench            # or: compactbert bench
    compactbert bench --families distilbert --sentences 64 --json

Builds each family at its Hub configuration with random weights (no download), with a tokenizer
trained on a generated corpus (WordPiece with 30,522 tokens, byte-level BPE with 50,265). Word
embeddings are scaled up so that masked-LM distributions are peaked and "identical top-5" is a
meaningful check. Implementations alternate within one process; the table reports ratios
(transformers time / compactbert time), real tokens per second, achieved GFLOP/s on real tokens and
peak memory. transformers is imported only here, only to compare, and only when installed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

# make_sentences is also imported from here by the memory-measuring subprocess
from .synthetic import bench_models, build_checkpoint, make_sentences


# ------------------------------------------------------------------------------------ cost model

def flops_per_token(config: Any, length: int) -> float:
    """Encoder FLOPs per real token at sequence length `length` (2 x multiply-accumulates)."""
    spec = config.encoder_spec()
    from .nn.encoder import Encoder

    linear = sum(m.weight.numel() for m in Encoder(spec).modules() if isinstance(m, torch.nn.Linear))
    attention = 2 * length * spec.inner_size * spec.num_layers
    return 2.0 * (linear + attention)


def head_flops(config: Any) -> float:
    spec = config.encoder_spec()
    return 2.0 * (spec.hidden_size ** 2 + spec.hidden_size * spec.vocab_size)


# ------------------------------------------------------------------------------------ timing

def _alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per implementation, alternating them `repeats` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _top5_agreement(a: list[list[dict]], b: list[list[dict]]) -> float:
    same = sum([p["token"] for p in x] == [p["token"] for p in y] for x, y in zip(a, b))
    return same / max(len(a), 1)


def _peak_memory(folder: Path, impl: str, sentences: int) -> float:
    """Peak resident memory (MB) the fill-mask workload adds over the loaded, warmed-up model.

    Each implementation runs in its own child process. Linux's peak counter (VmHWM) is reset after
    loading (`/proc/self/clear_refs`), so the transient of reading the weights is not counted.
    """
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from compactbert.bench import make_sentences, _FillMask
pipes = _FillMask({str(folder)!r}, {impl!r})
texts = make_sentences({sentences}, mask=pipes.mask)
pipes.run(texts[:2])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
base = status("VmRSS")
pipes.run(texts)
print(status("VmHWM") - base)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


class _FillMask:
    """One implementation's fill-mask pipeline on a folder, with its mask spelling."""

    def __init__(self, folder: str, impl: str, quantize: str | None = None) -> None:
        if impl == "transformers":
            import transformers

            self.pipe = transformers.pipeline("fill-mask", model=folder, device="cpu")
            self.mask = self.pipe.tokenizer.mask_token
            self.run = lambda texts, k=5: self.pipe(texts, top_k=k, batch_size=32)
        else:
            from .pipelines import pipeline

            self.pipe = pipeline("fill-mask", model=folder, batch_size=32, quantize=quantize)
            self.mask = self.pipe.tokenizer.mask_token
            self.run = lambda texts, k=5: self.pipe(texts, top_k=k)


# ------------------------------------------------------------------------------------ workloads

def bench_family(family: str, workdir: Path, sentences: int, repeats: int, with_transformers: bool,
                 memory: bool, tiny: bool = False) -> dict[str, Any]:
    from .models.auto import AutoModel
    from .tokenizer_files import AutoTokenizer

    folder = build_checkpoint(family, workdir / (family + ("-tiny" if tiny else "")), tiny)
    config = AutoModel.from_pretrained(folder).config
    result: dict[str, Any] = {"family": family}

    # 1. fill-mask pipeline
    ours = _FillMask(str(folder), "compactbert")
    texts = make_sentences(sentences, mask=ours.mask)
    tok = AutoTokenizer.from_pretrained(folder)
    lengths = [len(ids) for ids in tok(texts, truncation=True)["input_ids"]]
    real_tokens = sum(lengths)
    useful_flops = sum(flops_per_token(config, n) * n for n in lengths) + len(texts) * head_flops(config)
    fns = {"compactbert": lambda: ours.run(texts)}
    if with_transformers:
        theirs = _FillMask(str(folder), "transformers")
        fns["transformers"] = lambda: theirs.run(texts)
    times = _alternate(fns, repeats)
    fill = {"sentences": len(texts), "real_tokens": real_tokens,
            "tokens_per_s": real_tokens / times["compactbert"],
            "gflops": useful_flops / times["compactbert"] / 1e9}
    if with_transformers:
        fill["ratio"] = times["transformers"] / times["compactbert"]
        fill["transformers_tokens_per_s"] = real_tokens / times["transformers"]
        fill["top5_identical"] = _top5_agreement(ours.run(texts), theirs.run(texts))
    result["fill_mask"] = fill

    # 2. int8 (opt-in) against compactbert fp32
    int8 = _FillMask(str(folder), "compactbert", quantize="int8")
    times8 = _alternate({"fp32": lambda: ours.run(texts, 1), "int8": lambda: int8.run(texts, 1)}, repeats)
    top1 = [r[0]["token"] for r in ours.run(texts, 1)], [r[0]["token"] for r in int8.run(texts, 1)]
    result["int8"] = {"ratio": times8["fp32"] / times8["int8"],
                      "top1_agreement": sum(a == b for a, b in zip(*top1)) / len(texts)}

    # 3. encoder forward on one padded batch of 32, and 4. one 16-token sentence
    model = AutoModel.from_pretrained(folder)
    batch = tok(make_sentences(32, seed=5, mask=ours.mask)[:32], padding=True, truncation=True, return_tensors="pt")
    single = {k: v[:1, :16] for k, v in tok(make_sentences(1, seed=6, min_words=30, mask=ours.mask), truncation=True,
                                                    return_tensors="pt").items()}
    encoder, latency = {}, {}
    if with_transformers:
        import transformers

        reference = transformers.AutoModel.from_pretrained(folder).eval()
        with torch.inference_mode():
            fns = {"compactbert": lambda: model(**batch), "transformers": lambda: reference(**batch)}
            t = _alternate(fns, repeats)
            encoder = {"ratio": t["transformers"] / t["compactbert"],
                       "padding_share": 1 - batch["attention_mask"].float().mean().item()}
            fns = {"compactbert": lambda: model(**single), "transformers": lambda: reference(**single)}
            t = _alternate(fns, repeats * 10)
            latency = {"ratio": t["transformers"] / t["compactbert"], "ms": t["compactbert"] * 1e3}
    result["encoder"], result["latency"] = encoder, latency

    # 5. peak memory of the fill-mask workload, each implementation in its own process
    if memory:
        result["memory_mb"] = {"compactbert": _peak_memory(folder, "compactbert", sentences)}
        if with_transformers:
            result["memory_mb"]["transformers"] = _peak_memory(folder, "transformers", sentences)
    return result


# ------------------------------------------------------------------------------------ report

def _cell(value: Any, spec: str, width: int, suffix: str = "") -> str:
    """`value` formatted and right-aligned in `width` characters; '-' when it was not measured."""
    text = "-" if value is None else format(value, spec) + suffix
    return f"{text:>{width}}"


COLUMNS = (("family", 11), ("fill-mask", 9), ("top5 same", 9), ("tok/s", 8), ("GFLOP/s", 8), ("encoder", 8),
           ("latency", 8), ("int8", 6), ("int8 top1", 9), ("peak MB ours/theirs", 20))


def render(results: list[dict[str, Any]], machine: str) -> str:
    header = " ".join(f"{name:<{width}}" if n == 0 else f"{name:>{width}}" for n, (name, width) in enumerate(COLUMNS))
    lines = [f"compactbert bench on {machine}", "", header]
    widths = [width for _, width in COLUMNS]
    for r in results:
        f, mem = r["fill_mask"], r.get("memory_mb", {})
        memory = (f"{_cell(mem.get('compactbert'), '.0f', 0)}/{_cell(mem.get('transformers'), '.0f', 0)}"
                  if mem else None)
        cells = [f"{r['family']:<{widths[0]}}", _cell(f.get("ratio"), ".2f", widths[1], "x"),
                 _cell(f.get("top5_identical"), ".1%", widths[2]), _cell(f["tokens_per_s"], ".0f", widths[3]),
                 _cell(f["gflops"], ".1f", widths[4]), _cell(r["encoder"].get("ratio"), ".2f", widths[5], "x"),
                 _cell(r["latency"].get("ratio"), ".2f", widths[6], "x"),
                 _cell(r["int8"]["ratio"], ".2f", widths[7], "x"), _cell(r["int8"]["top1_agreement"], ".1%", widths[8]),
                 _cell(memory, "", widths[9])]
        lines.append(" ".join(cells))
    lines += ["", "ratios: transformers time / compactbert time, same weights, same process, alternating "
              "(int8: compactbert fp32 / compactbert int8); '-': not measured"]
    return "\n".join(lines)


def quiet_loading() -> None:
    """Keep the report readable: no load reports (the bench's folders are masked-LM checkpoints loaded
    into other heads on purpose) and no progress bars from transformers."""
    logging.getLogger("compactbert").setLevel(logging.ERROR)
    try:
        import transformers
    except ImportError:
        return
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from .nn.kernels import describe

    modes = "; ".join(f"{mode}: {kernel}" for mode, kernel in describe().items())
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads ({modes})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compactbert bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=list(bench_models()), default=list(bench_models()))
    parser.add_argument("--sentences", type=int, default=128, help="fill-mask workload size (64-256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="where to keep the generated checkpoints (default: a temp folder)")
    parser.add_argument("--no-transformers", action="store_true", help="skip the comparison")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--tiny", action="store_true", help="small models: checks the benchmark runs, not speed")
    parser.add_argument("--peers", action="store_true",
                        help="every compactbert mode against transformers, ONNX Runtime and CTranslate2, with "
                             "quality on real weights (compactbert/peers.py; pip install 'compactbert[peers]')")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    quiet_loading()
    if args.peers:
        from .peers import run

        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="compactbert-peers-"))
        return run(args.families, workdir, args.repeats, args.tiny, args.json)
    with_transformers = not args.no_transformers
    if with_transformers:
        try:
            import transformers  # noqa: F401
        except ImportError:
            with_transformers = False
            print("transformers is not installed: compactbert numbers only", file=sys.stderr)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="compactbert-bench-"))
    results = [bench_family(f, workdir, args.sentences, args.repeats, with_transformers, not args.no_memory,
                            args.tiny) for f in args.families]
    machine = machine_description()
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
    else:
        print(render(results, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
