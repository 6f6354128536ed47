"""One module per model family. Importing this package registers every family with
`compactbert.registry`; a new family is one new module here plus its line below."""

from .bert import BertConfig, BortConfig
from .distilbert import DistilBertConfig
from .mobilebert import MobileBertConfig
from .roberta import RobertaConfig

__all__ = ["BertConfig", "BortConfig", "DistilBertConfig", "MobileBertConfig", "RobertaConfig"]
