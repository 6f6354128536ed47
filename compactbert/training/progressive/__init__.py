"""MobileBERT's progressive knowledge transfer: how the Hub's MobileBERT was made from IB-BERT.

A wide teacher (IB-BERT: inverted-bottleneck BERT-large) and the narrow student share the depth L,
the inter-block width and the head count. Training has two stages
(`../shared/reference/training.md` section 4; the released TensorFlow code, google-research/mobilebert):

Stage 1, layer by layer. Phase l (l = 0 .. L-1, stage-1 steps / L each) trains only on layer l's
transfer losses, each weight divided by L:

    feature   100  x MSE(LN(teacher_l), LN(student_l))        LN without parameters, every real token
    attention   1  x -sum_k p_teacher log_softmax(student scores), mean over real queries, heads, batch
    mean     5000  x MSE of the per-token means of the block outputs
    variance    5  x L1 of the per-token variances

Layer l trains at the full rate, the layers below at 0.1x; the layers above, the embeddings and the
heads do not move and their optimizer state is not touched. Inside a phase the rate warms up over
the first 10% (the released background schedule). The student's embeddings and heads start from
the teacher's. Only the first l + 1 layers of either model run in phase l.

Stage 2, pre-training distillation, every parameter training: the masked-LM target at the masked
tokens is 0.5 x one-hot + 0.5 x the teacher's distribution (ratio configurable), plus next-sentence
prediction on ground truth when the corpus is read as documents (`next_sentence`).

Where this differs from the released code (docs/progressive-transfer.md): the mean and variance
targets are teacher layer l's (the released code takes them from the stacked list of all teacher
layers, a bug); padding tokens and padding queries are left out of every average (the released
code averages over padded positions and masks with -6 instead of -inf); the released stage-1 rate
is 3x its learning-rate flag, ours is `stage1_learning_rate` as given.

Batches, masks and next-sentence pairs depend only on (seed, stage, step), so a resumed run equals
an uninterrupted one; under torchrun every process builds the global batch, trains on its share of
the rows and gradients are summed over processes, so N processes equal one.
"""

from .losses import TransferTerms, soft_mlm_loss, transfer_terms
from .pairs import PAIRED_FIELDS, check_pair, ib_bert_config, mobilebert_config, student_from_teacher
from .run import TransferResult, progressive_transfer, transfer_from_files
from .schedule import layer_rate, make_optimizer, parameter_groups, phase_rate
from .settings import TransferConfig

__all__ = [
    "PAIRED_FIELDS", "TransferConfig", "TransferResult", "TransferTerms", "check_pair", "ib_bert_config",
    "layer_rate", "make_optimizer", "mobilebert_config", "parameter_groups", "phase_rate", "progressive_transfer",
    "soft_mlm_loss", "student_from_teacher", "transfer_from_files", "transfer_terms",
]
