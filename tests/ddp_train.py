"""Train a tiny classifier; run directly or under torchrun. Each rank writes its parameters, losses,
evaluation calls and result to argv[1] (rank 0) or argv[1] + ".rank<N>"."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compactbert as cb  # noqa: E402
from compactbert.training import TrainingConfig, classification_collate, fine_tune, read_csv_examples  # noqa: E402
from conftest import TINY, minilm_folder  # noqa: E402

torch.set_num_threads(1)
rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
config = TINY["bert"](vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
examples = read_csv_examples(Path(__file__).resolve().parent.parent / "examples/data/sentiment_train.csv")[:30]
torch.manual_seed(0)
model = cb.AutoModelForSequenceClassification.from_config(config)
initial = {k: v.clone() for k, v in model.state_dict().items()}
evaluations = []


def evaluate(m):
    """A score that peaks at epoch 2 of 3, so keep-best restores epoch 2's weights on every rank."""
    evaluations.append(len(evaluations) + 1)
    return {"accuracy": [0.5, 0.9, 0.7][len(evaluations) - 1], "weight_sum": float(m.classifier.weight.sum())}


# 30 examples, global batch 8 = per device 4 (one process) or 2 (two) x 2 accumulation steps x processes:
# the last batch (6) splits unevenly across two processes only if sharded naively
result = fine_tune(model, examples, classification_collate(tokenizer),
                   TrainingConfig(num_train_epochs=3, per_device_train_batch_size=8 // (2 * world),
                                  gradient_accumulation_steps=2, seed=3), evaluate)
torch.save({"params": {k: v.clone() for k, v in model.state_dict().items()}, "initial": initial,
            "losses": [h["train_loss"] for h in result.history], "history": result.history,
            "best_epoch": result.best_epoch, "evaluations": evaluations},
           sys.argv[1] + (f".rank{rank}" if rank else ""))
