"""Kill a fine_tune run with SIGKILL at random instants, resume it each time, and compare the end
with an uninterrupted run: python kill_train.py WORKDIR. Children are forked (torch is imported
once); each resumes from the trainer state in WORKDIR/state until one finishes. Prints a JSON
summary on the last line."""

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compactbert as cb  # noqa: E402
from compactbert.training import TrainingConfig, classification_collate, fine_tune, read_csv_examples  # noqa: E402
from conftest import TINY, minilm_folder  # noqa: E402

workdir = Path(sys.argv[1])
tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
examples = read_csv_examples(Path(__file__).resolve().parent.parent / "examples/data/sentiment_train.csv")[:48]
config = TINY["bert"](vocab_size=30522, hidden_dropout_prob=0.1)  # dropout: the random state must resume too
EPOCHS = 6


def train(state_dir: Path | None, resume: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = cb.AutoModelForSequenceClassification.from_config(config)
    fine_tune(model, examples, classification_collate(tokenizer),
              TrainingConfig(num_train_epochs=EPOCHS, per_device_train_batch_size=8, seed=1,
                             checkpoint_dir=state_dir, device="cpu"),
              evaluate=lambda m: {"accuracy": 0.5}, resume=resume)
    return model.state_dict()


start = time.perf_counter()
expected = train(None, resume=False)
duration = time.perf_counter() - start

rng = random.Random(0)
state = workdir / "state"
kills = 0
for attempt in range(200):
    pid = os.fork()
    if pid == 0:
        try:
            torch.save(train(state, resume=True), workdir / "final.pt")
            os._exit(0)
        finally:
            os._exit(1)
    time.sleep(rng.uniform(0.0, 1.5 * duration / EPOCHS))  # about one epoch: most kills land mid-epoch
    finished, status = os.waitpid(pid, os.WNOHANG)
    if finished == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        continue
    break
final = torch.load(workdir / "final.pt", weights_only=True)
equal = all(torch.equal(final[k], expected[k]) for k in expected)
print(json.dumps({"kills": kills, "attempts": attempt + 1, "equal": equal}))
