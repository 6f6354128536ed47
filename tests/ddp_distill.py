"""Distil a tiny teacher into a 1-layer student; run directly or under torchrun. Rank 0 writes
the student's parameters and the loss history to argv[1]."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compactbert as cb  # noqa: E402
from compactbert.training import DistillationConfig, TextCorpus, distill, student_from_teacher  # noqa: E402
from conftest import TINY, minilm_folder  # noqa: E402

torch.set_num_threads(1)
corpus = Path(sys.argv[1]).with_suffix(".txt")
lines = (Path(__file__).resolve().parent.parent / "examples/data/corpus_train.txt").read_text().splitlines()[:30]
if int(os.environ.get("RANK", "0")) == 0:
    corpus.write_text("\n".join(lines) + "\n")
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    torch.distributed.init_process_group("gloo")
    torch.distributed.barrier()  # the corpus file exists for every process
config = TINY["bert"](vocab_size=30522, num_hidden_layers=2, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
torch.manual_seed(0)
teacher = cb.ForMaskedLM.from_config(config)
student = student_from_teacher(teacher, [1])
tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
# 30 lines, global batch 8 (per device 4 or 2, 2 micro-batches): the last batch (6) splits unevenly
# across two processes
per_device = 8 // (2 * int(os.environ.get("WORLD_SIZE", "1")))
result = distill(teacher, student, tokenizer, TextCorpus([corpus]),
                 DistillationConfig(num_train_epochs=2, per_device_train_batch_size=per_device,
                                    gradient_accumulation_steps=2, seed=3, learning_rate=1e-3))
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({"params": {k: v.clone() for k, v in student.state_dict().items()},
                "losses": [h["loss"] for h in result.history]}, sys.argv[1])
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
