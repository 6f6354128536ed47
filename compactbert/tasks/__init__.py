"""Pre- and post-processing per task, shared by the pipelines and the training recipes: how a task
turns text into model inputs that the tokenizer alone does not decide (question-answering windows,
mask spellings and fill-mask targets)."""
