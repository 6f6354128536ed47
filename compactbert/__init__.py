"""compactbert: BORT, MobileBERT and DistilBERT in pure PyTorch, on one shared encoder core."""

from .config import AutoConfig, BaseConfig, BertConfig, BortConfig, DistilBertConfig, MobileBertConfig
from .errors import (
    CheckpointError, CompactBertError, ConfigError, InputError, UnknownModelError, UnsafeCheckpointError,
)
from .hub import list_checkpoints
from .pipelines import (
    FeatureExtractionPipeline, FillMaskPipeline, TextClassificationPipeline, TokenClassificationPipeline, pipeline,
)
from .tasks import (
    AutoModelForMultipleChoice, AutoModelForNextSentencePrediction, AutoModelForPreTraining,
    AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoModelForTokenClassification,
    ClassifierOutput, ForMultipleChoice, ForNextSentencePrediction, ForPreTraining, ForQuestionAnswering,
    ForSequenceClassification, ForTokenClassification, PreTrainingOutput, QuestionAnsweringOutput,
)
from .tokenization import AutoTokenizer, BatchEncoding, Tokenizer
from .modeling import (
    AutoModel, AutoModelForMaskedLM, EncoderModel, EncoderOutput, ForMaskedLM, MaskedLMOutput, PreTrainedModel,
)

__version__ = "0.1.0"

__all__ = [
    "AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForMultipleChoice",
    "AutoModelForNextSentencePrediction", "AutoModelForPreTraining", "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoTokenizer", "ClassifierOutput", "FeatureExtractionPipeline", "TextClassificationPipeline",
    "TokenClassificationPipeline",
    "ForMultipleChoice", "ForNextSentencePrediction", "ForPreTraining", "ForQuestionAnswering",
    "ForSequenceClassification", "ForTokenClassification", "PreTrainingOutput", "QuestionAnsweringOutput", "BatchEncoding", "FillMaskPipeline",
    "Tokenizer", "pipeline", "BaseConfig", "BertConfig", "BortConfig",
    "CheckpointError", "CompactBertError", "ConfigError", "DistilBertConfig", "EncoderModel", "EncoderOutput",
    "ForMaskedLM", "InputError", "MaskedLMOutput", "MobileBertConfig", "PreTrainedModel", "UnknownModelError",
    "UnsafeCheckpointError", "list_checkpoints", "__version__",
]
