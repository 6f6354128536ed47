"""compactbert: BORT, MobileBERT and DistilBERT in pure PyTorch, on one shared encoder core."""

from .config import AutoConfig, BaseConfig
from .families import AlbertConfig, BertConfig, BortConfig, DistilBertConfig, MobileBertConfig, RobertaConfig
from .errors import (
    CheckpointError, CompactBertError, ConfigError, InputError, UnknownModelError, UnsafeCheckpointError,
)
from .export import export_onnx
from .io.hub import list_checkpoints
from .pipelines import (
    FeatureExtractionPipeline, FillMaskPipeline, QuestionAnsweringPipeline, SentenceEmbeddingPipeline,
    TextClassificationPipeline, TokenClassificationPipeline, pipeline,
)
from .sentence import SentenceTransformer
from .models.auto import (
    AutoModel, AutoModelForMaskedLM, AutoModelForMultipleChoice, AutoModelForNextSentencePrediction,
    AutoModelForPreTraining, AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from .models.task_models import (
    ClassifierOutput, ForMultipleChoice, ForNextSentencePrediction, ForPreTraining, ForQuestionAnswering,
    ForSequenceClassification, ForTokenClassification, PreTrainingOutput, QuestionAnsweringOutput,
)
from .tokenization import BatchEncoding, Tokenizer
from .tokenizer_files import AutoTokenizer
from .models.modeling import EncoderModel, EncoderOutput, ForMaskedLM, MaskedLMOutput, PreTrainedModel

__version__ = "0.1.0"

__all__ = [
    "AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForMultipleChoice",
    "AutoModelForNextSentencePrediction", "AutoModelForPreTraining", "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoTokenizer", "BaseConfig",
    "BatchEncoding", "BertConfig", "BortConfig", "CheckpointError", "ClassifierOutput", "CompactBertError",
    "ConfigError", "DistilBertConfig", "EncoderModel", "EncoderOutput", "export_onnx", "FeatureExtractionPipeline",
    "FillMaskPipeline", "ForMaskedLM", "ForMultipleChoice", "ForNextSentencePrediction", "ForPreTraining",
    "ForQuestionAnswering", "ForSequenceClassification", "ForTokenClassification", "InputError",
    "AlbertConfig", "list_checkpoints", "MaskedLMOutput", "MobileBertConfig", "pipeline", "PreTrainedModel", "RobertaConfig",
    "PreTrainingOutput", "QuestionAnsweringOutput", "QuestionAnsweringPipeline", "SentenceEmbeddingPipeline", "SentenceTransformer", "TextClassificationPipeline",
    "TokenClassificationPipeline", "Tokenizer", "UnknownModelError", "UnsafeCheckpointError", "__version__",
]
