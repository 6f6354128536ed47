"""ONNX export: a model as a graph with dynamic batch and sequence axes, for runtimes outside Python.

`export_onnx(model, "out/", task="fill-mask")` writes one folder, atomically:

* `model.onnx`: inputs `input_ids`, `attention_mask` (and `token_type_ids` for families whose
  tokenizers return them), int64, shape (batch, sequence); outputs named as transformers names
  them (`last_hidden_state`, `pooler_output`, `logits`, `start_logits`, `end_logits`);
* `model_quantized.onnx` with `int8=True`: onnxruntime's dynamic quantization, int8 weights per
  output channel (per-tensor scales bend the meaning of real MiniLM embeddings far more; see
  docs/performance.md);
* `config.json` and the tokenizer's files, so the folder is self-contained;
* `onnx_export.json`: task, opset, input and output names, and the check below.

The graph is captured by torch.onnx's exporter (torch.export, translated by onnxscript; the older
TorchScript exporter is deprecated since torch 2.9). While it is captured, the encoder runs its
padded path with the attention mask always applied and plain products (nn/kernels.py `tracing`), so
nothing of the example input (its batch, length or padding) is baked into the graph. Before the
folder is written, onnxruntime runs the graph on padded batches of mixed lengths and shapes other
than the traced one, and the outputs must match the eager model (see `verify_onnx`).

onnx, onnxscript and onnxruntime are an optional extra: `pip install "compactbert[onnx]"`.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .errors import CompactBertError, ConfigError
from .io.files import write_json
from .logs import DropFrom, quiet_loggers
from .models.modeling import EncoderModel, ForMaskedLM, PreTrainedModel
from .models.task_models import ForQuestionAnswering, ForSequenceClassification, ForTokenClassification
from .registry import get_family

logger = logging.getLogger(__name__)

# Export task -> the model class it exports.
EXPORT_TASKS: dict[str, type[PreTrainedModel]] = {
    "base": EncoderModel,
    "fill-mask": ForMaskedLM,
    "text-classification": ForSequenceClassification,
    "token-classification": ForTokenClassification,
    "question-answering": ForQuestionAnswering,
}
DEFAULT_OPSET = 18  # what torch's exporter writes; 17 is converted from it by onnx
MIN_OPSET = 17  # below 17 (no LayerNormalization operator) onnx's conversion fails
# Largest difference to the eager float32 model the check accepts, relative to the largest output
# magnitude when that is above 1 (MobileBERT's hidden states reach the thousands, where float32
# itself only resolves about 1e-4): max |onnx - eager| <= TOLERANCE * max(1, max |eager|).
TOLERANCE = 1e-4
# Dynamic quantization changes values; its outputs are compared with float32 by cosine, per sequence,
# and reported. Below this the export warns (random check input says little about real text: the
# figures on real weights are in docs/performance.md).
INT8_WARN_COSINE = 0.99


class ExportError(CompactBertError):
    """The export could not be made, or its graph does not compute what the model computes."""


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely the graph matches the eager model."""

    directory: str
    task: str
    opset: int
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: float  # float32 graph vs the eager model, over the check batches (real tokens)
    max_abs_output: float  # largest |eager| output over the same batches
    tolerance: float
    int8_min_cosine: float | None = None  # the quantized graph's worst per-sequence cosine to the eager outputs
    files: list[str] = field(default_factory=list)


class _Graph(nn.Module):
    """The model with positional inputs and a tuple of named outputs, as the exporter traces it."""

    def __init__(self, model: PreTrainedModel, inputs: list[str], outputs: list[str]) -> None:
        super().__init__()
        self.model, self.inputs, self.outputs = model, inputs, outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.inputs, tensors)))
        return tuple(getattr(out, name) for name in self.outputs)


def graph_names(model: PreTrainedModel, tokenizer: Any = None) -> tuple[list[str], list[str]]:
    """(input names, output names) of the graph exported from `model`. The inputs are what the
    tokenizer returns (token_type_ids only where it returns them; the graph then feeds type 0),
    so a tokenizer's numpy output feeds the graph as it is."""
    if tokenizer is not None:
        with_types = "token_type_ids" in tokenizer.model_input_names
    else:
        family = get_family(model.config.model_type)
        with_types = family is None or family.token_types
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    task = export_task(model)
    if task == "base":
        outputs = ["last_hidden_state"] + (["pooler_output"] if model.pooler is not None else [])
    elif task == "question-answering":
        outputs = ["start_logits", "end_logits"]
    else:
        outputs = ["logits"]
    return inputs, outputs


def export_task(model: PreTrainedModel) -> str:
    """The export task name of a model instance; an ExportError for heads that have none."""
    for task, cls in EXPORT_TASKS.items():
        if type(model) is cls:
            return task
    raise ExportError(f"{type(model).__name__} has no ONNX export; export one of "
                      f"{', '.join(c.__name__ for c in EXPORT_TASKS.values())} (tasks: {', '.join(EXPORT_TASKS)})")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the optional packages onnx, onnxscript and onnxruntime: "
                          f'pip install "compactbert[onnx]" ({exc})') from exc


def export_onnx(model: PreTrainedModel | str | os.PathLike, output_dir: str | os.PathLike, task: str | None = None,
                opset: int = DEFAULT_OPSET, int8: bool = False, tokenizer: Any = None,
                **load_kwargs: Any) -> ExportReport:
    """Export `model` (an instance, or a Hub id / alias / folder loaded for `task`) to ONNX in
    `output_dir`, check the graph in onnxruntime, and return what was written and measured.

    task: "base", "fill-mask", "text-classification", "token-classification" or
        "question-answering"; for an instance, its own class decides and `task` must agree.
    opset: ONNX opset version (>= 17).
    int8: also write model_quantized.onnx (dynamic int8, per-channel weights).
    tokenizer: written next to the graph; by default the one of a model loaded by name.
    load_kwargs: from_pretrained options (revision, cache_dir, local_files_only, token, ...).
    """
    if task is not None and task not in EXPORT_TASKS:
        raise ConfigError(f"unknown export task {task!r}; choose one of {', '.join(EXPORT_TASKS)}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r} (LayerNormalization is an operator "
                          f"from opset {MIN_OPSET})")
    for package in ("onnx", "onnxscript", "onnxruntime"):
        _require(package)
    if not isinstance(model, PreTrainedModel):
        name = model
        model = EXPORT_TASKS[task or "base"].from_pretrained(name, **load_kwargs)
        if tokenizer is None:
            tokenizer = _tokenizer_of(name, load_kwargs)
    elif load_kwargs:
        raise TypeError(f"loading options {sorted(load_kwargs)} apply only when the model is given by name")
    if task is not None and export_task(model) != task:
        raise ConfigError(f"task={task!r} but the model is a {type(model).__name__} (task {export_task(model)!r})")
    if model.quantized:
        raise ExportError("this model is quantized in PyTorch; export its float32 weights and pass int8=True "
                          "(`--int8`) for an int8 graph")
    model = _float32_cpu_eval(model)
    task = export_task(model)
    inputs, outputs = graph_names(model, tokenizer)
    report = ExportReport(directory=str(output_dir), task=task, opset=opset, inputs=inputs, outputs=outputs,
                          max_abs_diff=float("nan"), max_abs_output=float("nan"), tolerance=TOLERANCE)

    writers: dict[str, Callable[[Path], None]] = {"model.onnx": lambda path: _trace(model, inputs, path, opset)}
    if int8:
        writers["model_quantized.onnx"] = lambda path: _quantize(path.parent / "model.onnx", path)
    config = model.saved_config()
    writers["config.json"] = lambda path: write_json(config, path)
    if tokenizer is not None:
        writers.update(tokenizer.folder_files(output_dir)[0])
    else:
        logger.warning("no tokenizer given: the export folder holds the graph and config.json only")

    def check(path: Path) -> None:  # runs last, on the staged files: a failed check writes nothing
        _check_export(model, path.parent, report, int8)
        report.files = sorted(writers)
        write_json(asdict(report), path)

    writers["onnx_export.json"] = check
    from .io.atomic import save_folder

    save_folder(output_dir, writers)
    return report


def _tokenizer_of(name: str | os.PathLike, load_kwargs: dict[str, Any]) -> Any:
    """The tokenizer stored with a checkpoint; None (with a warning later) if it has none."""
    from .io.hub import find_file
    from .tokenizer_files import AutoTokenizer

    hub = {k: v for k, v in load_kwargs.items() if k in ("revision", "cache_dir", "local_files_only", "token",
                                                        "subfolder")}
    vocabularies = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")
    if not any(find_file(name, filename, **hub) is not None for filename in vocabularies):
        return None
    return AutoTokenizer.from_pretrained(name, **hub)


def _float32_cpu_eval(model: PreTrainedModel) -> PreTrainedModel:
    """The model as the exporter needs it: float32, on the CPU, in eval mode (a copy if it is not)."""
    if model.dtype != torch.float32 or model.device.type != "cpu" or model.training:
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    return model.eval()


def _example(model: PreTrainedModel, inputs: list[str], lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    """A padded batch of random token ids with these real lengths (token types: a second segment)."""
    spec = model.config.encoder_spec()
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(0, spec.vocab_size, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    pad = spec.pad_token_id if spec.pad_token_id is not None and spec.pad_token_id < spec.vocab_size else 0
    ids = ids.masked_fill(mask == 0, pad)
    if spec.positions_after_padding:  # RoBERTa counts positions over tokens that are not padding
        ids = ids.masked_fill((ids == pad) & (mask == 1), (pad + 1) % spec.vocab_size)
    batch = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in inputs:
        types = (torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * mask
        batch["token_type_ids"] = types if spec.type_vocab_size > 1 else torch.zeros_like(types)
    return batch


def _trace(model: PreTrainedModel, inputs: list[str], path: Path, opset: int) -> None:
    outputs = graph_names(model)[1]
    example = _example(model, inputs, [7, 4], seed=0)
    # In eval mode: the exporter puts the module back into the mode it found it in, and a wrapper left
    # in training mode would turn the model's dropout on for every later call.
    graph = _Graph(model, inputs, outputs).eval()
    spec = model.config.encoder_spec()
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=spec.usable_positions)
    with torch.no_grad(), warnings.catch_warnings(), quiet_loggers("torch.onnx", "torch.export", "onnxscript"):
        # The exporter's own deprecation notes and progress concern its developers, not this export,
        # which the check batches verify.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx|torch\.export|onnxscript")
        torch.onnx.export(graph, tuple(example[name] for name in inputs), str(path), input_names=inputs,
                          output_names=outputs, dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in inputs),),
                          opset_version=opset, dynamo=True, verbose=False, external_data=False)
    import onnx

    onnx.checker.check_model(str(path))
    written = {entry.domain: entry.version for entry in onnx.load(str(path), load_external_data=False).opset_import}
    if written.get("", written.get("ai.onnx")) != opset:
        raise ExportError(f"the exporter could not write opset {opset} (it wrote {written}); choose opset >= "
                          f"{MIN_OPSET}")


def _quantize(source: Path, target: Path) -> None:
    quantization = _require("onnxruntime.quantization")
    root = logging.getLogger()
    # onnxruntime.quantization logs, on the root logger, a dump of every integer tensor it leaves alone
    # (positions, masks) and advice for image models; none of it concerns the user.
    quiet = DropFrom("onnxruntime")
    root.addFilter(quiet)
    try:
        quantization.quantize_dynamic(str(source), str(target), per_channel=True,
                                      weight_type=quantization.QuantType.QInt8)
    finally:
        root.removeFilter(quiet)




# Check batches: shapes unlike the traced one (batch 2, length 7), padded rows of mixed lengths.
CHECK_LENGTHS = ([13, 5, 1], [2], [30, 30, 9, 17])


def _check_export(model: PreTrainedModel, directory: Path, report: ExportReport, int8: bool) -> None:
    report.max_abs_diff, report.max_abs_output = verify_onnx(model, directory / "model.onnx")
    limit = TOLERANCE * max(1.0, report.max_abs_output)
    if not report.max_abs_diff <= limit:
        raise ExportError(f"the exported graph differs from the model by {report.max_abs_diff:.3g} "
                          f"(allowed {limit:.3g}); nothing was written. Please report this with the model name")
    if int8:
        report.int8_min_cosine = int8_cosine(model, directory / "model_quantized.onnx")
        if not report.int8_min_cosine >= INT8_WARN_COSINE:
            logger.warning("the int8 graph's outputs have cosine %.4f to float32 on random input (below %s): "
                           "check its quality on your data before using it", report.int8_min_cosine,
                           INT8_WARN_COSINE)


def _session_inputs(path: Path) -> list[str]:
    ort = _require("onnxruntime")
    return [i.name for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()]


def run_onnx(path: str | os.PathLike, batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run an exported graph on one batch (torch tensors or numpy arrays): output name -> array."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: np.asarray(batch[i.name].numpy() if isinstance(batch[i.name], torch.Tensor) else batch[i.name],
                               dtype=np.int64) for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _eager_and_graph(model: PreTrainedModel, path: Path) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                        np.ndarray]]:
    """For each check batch: (eager outputs, graph outputs, real-token mask)."""
    outputs = graph_names(model)[1]
    inputs = _session_inputs(path)
    runs = []
    for seed, lengths in enumerate(CHECK_LENGTHS, start=1):
        batch = _example(model, inputs, lengths, seed)
        with torch.no_grad():
            out = model(**batch)
        eager = {name: getattr(out, name).float().numpy() for name in outputs}
        runs.append((eager, run_onnx(path, batch), batch["attention_mask"].numpy().astype(bool)))
    return runs


def verify_onnx(model: PreTrainedModel, path: str | os.PathLike) -> tuple[float, float]:
    """(max |graph - eager|, max |eager|) over padded check batches of mixed lengths, at real tokens
    for per-token outputs and over every row for per-sequence ones."""
    worst = largest = 0.0
    for eager, graph, real in _eager_and_graph(model, Path(path)):
        for name, expected in eager.items():
            got = graph[name]
            if got.shape != expected.shape:
                raise ExportError(f"the graph's {name} has shape {got.shape}, the model's {expected.shape}")
            keep = real if expected.ndim >= 2 and expected.shape[:2] == real.shape else np.ones(expected.shape[:1], bool)
            diff = np.abs(got[keep].astype(np.float64) - expected[keep])
            finite = np.isfinite(expected[keep])
            worst = max(worst, float(diff[finite].max(initial=0.0)))
            if not np.array_equal(np.isfinite(got[keep]), finite):
                worst = float("inf")
            largest = max(largest, float(np.abs(expected[keep][finite]).max(initial=0.0)))
    return worst, largest


def int8_cosine(model: PreTrainedModel, path: str | os.PathLike) -> float:
    """The smallest cosine, over the sequences of the check batches, between a quantized graph's
    outputs and the eager model's (each sequence's real tokens taken together; a classifier's few
    logits per sequence are taken together over the batch, as two or three numbers alone make a
    cosine that says little)."""
    worst = 1.0
    for eager, graph, real in _eager_and_graph(model, Path(path)):
        for name, expected in eager.items():
            got = graph[name]
            if expected.ndim >= 2 and expected.shape[:2] == real.shape:  # per token: zero the padding
                weight = real.reshape(real.shape + (1,) * (expected.ndim - 2))
                expected, got = expected * weight, got * weight
            rows = 1 if expected.ndim == 2 and expected.shape[:2] != real.shape and expected.shape[1] < 16 \
                else len(expected)
            a, b = expected.reshape(rows, -1), got.reshape(rows, -1)
            cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
            worst = min(worst, float(cos.min()))
    return worst
