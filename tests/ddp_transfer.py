"""Progressive transfer of a tiny IB-BERT pair, run directly or under torchrun. Rank 0 writes the
student's parameters and the loss history to argv[1]."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compactbert as cb  # noqa: E402
from compactbert.training.pretraining_data import PretrainingCorpus  # noqa: E402
from compactbert.training.progressive import TransferConfig, progressive_transfer, student_from_teacher  # noqa: E402
from conftest import minilm_folder  # noqa: E402
from test_progressive import documents, tiny_pair  # noqa: E402

torch.set_num_threads(1)
out = Path(sys.argv[1])
corpus_file = out.with_suffix(".txt")
if int(os.environ.get("RANK", "0")) == 0:
    documents(corpus_file, lines=40)
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    torch.distributed.init_process_group("gloo")
    torch.distributed.barrier()  # the corpus file exists for every process
teacher_config, student_config = tiny_pair()
torch.manual_seed(0)
teacher = cb.ForMaskedLM.from_config(teacher_config)
student = student_from_teacher(teacher, student_config)
initial = {k: v.clone() for k, v in student.state_dict().items()}
tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
# global batch 8 = per device 4 (or 2) x 2 micro-batches x processes
world = int(os.environ.get("WORLD_SIZE", "1"))
config = TransferConfig(stage1_steps=6, stage2_steps=4, per_device_train_batch_size=4 // world,
                        gradient_accumulation_steps=2, checkpoint_dir=out.with_suffix(".state"))
result = progressive_transfer(teacher, student, tokenizer, PretrainingCorpus([corpus_file]), config)
if int(os.environ.get("RANK", "0")) == 0:
    losses = [layer["first"]["total"] for layer in result.report["stage1"]["layers"]]
    losses += [record["total"] for record in result.report["stage2"]["history"]]
    torch.save({"params": {k: v.clone() for k, v in student.state_dict().items()}, "initial": initial,
                "losses": losses}, sys.argv[1])
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
