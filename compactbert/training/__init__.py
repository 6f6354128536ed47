"""Training: the fine-tuning loop, task data and metrics, one-call recipes, masked-LM masking,
distillation, MobileBERT's progressive knowledge transfer and Agora. Imports the rest of the
package; nothing in the core imports it."""

from .agora import (
    BORT_GRID, AgoraResult, ClassifierLabeller, ClassifierTrainer, Hyperparameters, InfillingGenerator, agora,
    agora_from_files, fresh_head_copies, hyperparameter_grid, labeller_mapping, prune, split_dev,
)
from .distill import (
    DistillationConfig, DistillationLoss, DistillationResult, TextCorpus, default_layers, distill, distill_from_files,
    distillation_loss, student_from_teacher,
)
from .finetune import TrainingConfig, TrainingResult, fine_tune, linear_schedule, parameter_groups
from .lora import AdapterFiles, LoraSettings, add_lora, load_lora, trained_heads
from .masking import mask_tokens, mlm_accuracy, mlm_agreement, mlm_collate, mlm_comparison, token_weights
from .metrics import classification_scores, entity_scores, entity_spans, normalize_answer, squad_scores
from .multiple_choice import ChoiceExample, choice_collate, choice_metrics, read_choice_examples
from .question_answering import QAExample, QAWindow, qa_collate, qa_metrics, qa_windows, read_qa_examples
from .lamb import Lamb
from .pretraining_data import PretrainingCorpus
from .progressive import (
    TransferConfig, TransferResult, ib_bert_config, mobilebert_config, progressive_transfer, transfer_from_files,
)
from .recipes import TASKS, DataOptions, finetune_task
from .text_classification import (
    TextExample, classification_collate, classification_metrics, classification_predictions, label_mapping,
    read_csv_examples,
)
from .token_classification import (
    TaggedExample, predict_tags, read_tagged_examples, tag_mapping, token_collate, token_metrics, word_pieces,
)

__all__ = [
    "ChoiceExample", "choice_collate", "choice_metrics", "read_choice_examples",
    "AgoraResult", "BORT_GRID", "ClassifierLabeller", "ClassifierTrainer", "Hyperparameters", "InfillingGenerator",
    "agora", "agora_from_files", "fresh_head_copies", "hyperparameter_grid", "labeller_mapping", "prune", "split_dev",
    "DistillationConfig", "DistillationLoss", "DistillationResult", "TextCorpus", "default_layers", "distill",
    "distill_from_files", "distillation_loss", "mask_tokens", "mlm_accuracy", "mlm_agreement", "mlm_collate", "mlm_comparison",
    "student_from_teacher", "token_weights",
    "AdapterFiles", "LoraSettings", "add_lora", "load_lora", "trained_heads",
    "Lamb", "PretrainingCorpus", "TransferConfig", "TransferResult", "ib_bert_config", "mobilebert_config",
    "progressive_transfer", "transfer_from_files",
    "DataOptions", "QAExample", "QAWindow", "TASKS", "TaggedExample", "TextExample", "TrainingConfig",
    "TrainingResult", "classification_collate", "classification_metrics", "classification_predictions",
    "classification_scores", "entity_scores", "entity_spans", "fine_tune", "finetune_task", "label_mapping",
    "linear_schedule", "normalize_answer", "parameter_groups", "predict_tags", "qa_collate", "qa_metrics",
    "qa_windows", "read_csv_examples", "read_qa_examples", "read_tagged_examples", "squad_scores", "tag_mapping",
    "token_collate", "token_metrics", "word_pieces",
]
