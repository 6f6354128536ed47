"""Make a small MobileBERT the way its paper did, and measure what the procedure buys.

    python examples/progressive_transfer.py                 # the measured run (about 40 min on 2 cores)
    python examples/progressive_transfer.py --quick         # a smoke run (about a minute)

1. A corpus of English prose from this Python's own documentation (pydoc topics and the docstrings
   of the standard library, read with `ast`, nothing imported): documents of sentences, 5% of the
   documents held out.
2. A small IB-BERT teacher (4 layers, inter-block 128, intra-block 256, FFN 1024, 4 heads, 64-wide
   trigram embedding, LayerNorm, GELU) trained by masked-LM from scratch, with the uncased WordPiece
   vocabulary of all-minilm-l6-v2.
3. Three students of the MobileBERT design (intra-block 64, FFN 128, 2 stacked FFNs, NoNorm, ReLU)
   trained for the same number of steps with the same optimizer (LAMB), batches and masks:
   (a) progressive transfer, half the steps layer by layer then half pre-training distillation;
   (b) pre-training distillation only; (c) masked-LM from scratch (ground-truth target only, fresh
   embeddings). Each is scored on the held-out sentences: top-1 agreement with the teacher and
   masked-LM accuracy at the same seeded masks.

The table is printed and written to OUT/results.json; docs/progressive-transfer.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import compactbert as cb
from python_docs import write_corpus
from compactbert.training import TrainingConfig, fine_tune, mlm_accuracy, mlm_collate, mlm_comparison
from compactbert.training.pretraining_data import PretrainingCorpus
from compactbert.training.progressive import (
    TransferConfig, ib_bert_config, mobilebert_config, progressive_transfer, student_from_teacher,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="progressive-transfer", help="work folder (teacher, corpus, results)")
    parser.add_argument("--teacher-epochs", type=int, default=8, help="masked-LM epochs of the teacher")
    parser.add_argument("--budget", type=int, default=1000, help="steps per student, the same for all three")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the students' runs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny budget, one teacher epoch")
    args = parser.parse_args()
    if args.quick:
        args.teacher_epochs, args.budget, args.batch = 1, 16, 16
    torch.set_num_threads(torch.get_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = cb.AutoTokenizer.from_pretrained("all-minilm-l6-v2")
    corpus_path, held_out, train_lines = write_corpus(out)
    if args.quick:
        held_out = held_out[:200]
    print(f"corpus: {train_lines} training sentences, {len(held_out)} held out (Python {sys.version.split()[0]})")

    teacher_dir = out / f"teacher-{args.teacher_epochs}"
    teacher_config = ib_bert_config(vocab_size=len(tokenizer), num_hidden_layers=4, hidden_size=128,
                                    intra_bottleneck_size=256, intermediate_size=1024, embedding_size=64,
                                    max_position_embeddings=128)
    if not (teacher_dir / "config.json").exists():
        torch.manual_seed(0)
        teacher = cb.ForMaskedLM.from_config(teacher_config)
        lines = [line for line in corpus_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        started = time.perf_counter()
        fine_tune(teacher, lines, mlm_collate(tokenizer, max_length=64),
                  TrainingConfig(num_train_epochs=args.teacher_epochs, per_device_train_batch_size=args.batch,
                                 learning_rate=1e-3, warmup_ratio=0.05, weight_decay=0.01, progress=True))
        print(f"teacher trained in {time.perf_counter() - started:.0f} s")
        teacher.save_pretrained(teacher_dir)
        tokenizer.save_pretrained(teacher_dir)
    teacher = cb.ForMaskedLM.from_pretrained(teacher_dir).eval()
    teacher_accuracy = mlm_accuracy(teacher, tokenizer, held_out, max_length=64)
    print(f"teacher: {teacher.num_parameters():,} parameters, held-out masked-LM accuracy {teacher_accuracy:.3f}")

    student_config = mobilebert_config(teacher_config, intra_bottleneck_size=64, intermediate_size=128,
                                       num_feedforward_networks=2)
    corpus = PretrainingCorpus([corpus_path])
    half = args.budget // 2 // 4 * 4  # stage 1: a whole number of steps per layer
    arms = {"(a) progressive transfer + distillation": dict(stage1_steps=half, stage2_steps=args.budget - half),
            "(b) distillation only": dict(stage1_steps=0, stage2_steps=args.budget),
            "(c) masked-LM from scratch": dict(stage1_steps=0, stage2_steps=args.budget, ground_truth_ratio=1.0)}
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, settings in arms.items():
            torch.manual_seed(seed)
            if name.startswith("(c)"):
                student = cb.ForMaskedLM.from_config(student_config)  # nothing from the teacher
            else:
                student = student_from_teacher(teacher, student_config, next_sentence=False)
            config = TransferConfig(per_device_train_batch_size=args.batch, next_sentence=False, max_length=64,
                                    seed=seed, log_steps=100, checkpoint_dir=out / "state", **settings)
            started = time.perf_counter()
            progressive_transfer(teacher, student, tokenizer, corpus, config)
            seconds = time.perf_counter() - started
            agreement, divergence = mlm_comparison(student, teacher, tokenizer, held_out, max_length=64)
            accuracy = mlm_accuracy(student, tokenizer, held_out, max_length=64)
            results.append({"arm": name, "seed": seed, "agreement": agreement, "divergence": divergence,
                            "accuracy": accuracy, "seconds": seconds, **settings})
            print(f"seed {seed} {name}: top-1 agreement {agreement:.3f}, masked-LM accuracy {accuracy:.3f}, "
                  f"divergence {divergence:.3f} nats, {seconds:.0f} s")
            (out / "state" / "transfer_state.pt").unlink(missing_ok=True)
    (out / "results.json").write_text(json.dumps({"teacher_accuracy": teacher_accuracy, "budget": args.budget,
                                                  "batch": args.batch, "train_sentences": train_lines,
                                                  "held_out": len(held_out), "results": results}, indent=2))
    print(f"\n| student ({args.budget} steps of {args.batch}) | top-1 agreement | masked-LM accuracy "
          f"| divergence (nats) | seconds |\n|---|---|---|---|---|")
    for name in arms:
        rows = [r for r in results if r["arm"] == name]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("agreement", "accuracy", "divergence", "seconds")}
        print(f"| {name} | {mean['agreement']:.3f} | {mean['accuracy']:.3f} | {mean['divergence']:.3f} "
              f"| {mean['seconds']:.0f} |")
    print(f"| teacher | 1 | {teacher_accuracy:.3f} | 0 | |")


if __name__ == "__main__":
    main()
