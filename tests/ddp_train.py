"""Train a tiny classifier; run directly or under torchrun. Rank 0 writes parameters and losses to argv[1]."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compactbert as cb  # noqa: E402
from compactbert.training import TrainingConfig, classification_collate, fine_tune, read_csv_examples  # noqa: E402
from conftest import minilm_folder  # noqa: E402

torch.set_num_threads(1)
config = cb.BertConfig.tiny(vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
examples = read_csv_examples(Path(__file__).resolve().parent.parent / "examples/data/sentiment_train.csv")[:30]
torch.manual_seed(0)
model = cb.AutoModelForSequenceClassification.from_config(config)
initial = {k: v.clone() for k, v in model.state_dict().items()}
# 30 examples, global batch 8: the last batch (6) splits unevenly across two processes only if sharded naively
result = fine_tune(model, examples, classification_collate(tokenizer),
                   TrainingConfig(epochs=2, batch_size=8, gradient_accumulation=2, seed=3))
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({"params": {k: v.clone() for k, v in model.state_dict().items()}, "initial": initial,
                "losses": [h["train_loss"] for h in result.history]}, sys.argv[1])
