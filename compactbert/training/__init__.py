"""Training: the fine-tuning loop (distillation and Agora will join it). Imports the rest of the
package; nothing in the core imports it."""

from .finetune import (
    TextExample, TrainingConfig, TrainingResult, classification_collate, classification_metrics, fine_tune,
    label_mapping, linear_schedule, parameter_groups, read_csv_examples,
)

__all__ = [
    "TextExample", "TrainingConfig", "TrainingResult", "classification_collate", "classification_metrics",
    "fine_tune", "label_mapping", "linear_schedule", "parameter_groups", "read_csv_examples",
]
