"""One module per model family. Importing this package registers every family with
`compactbert.registry`, in the order below (the order of `compactbert list`, the benchmark and the
tests); a new family is one new module here plus its import line."""

from .bert import BertConfig, BortConfig  # noqa: I001  (registration order, not alphabetical)
from .mobilebert import MobileBertConfig
from .distilbert import DistilBertConfig
from .roberta import RobertaConfig
from .albert import AlbertConfig

__all__ = ["AlbertConfig", "BertConfig", "BortConfig", "DistilBertConfig", "MobileBertConfig", "RobertaConfig"]
