"""Models: the shared encoder plus a head, with loading from and saving to Hub-layout folders.

There is one class per task, not per family: the family lives in the config (`model_type`), which
chooses the encoder options and the checkpoint key table.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..io import LoadReport, hub_to_internal, internal_to_hub, place_weights, read_weights
from ..io.convert import decoder_is_tied
from ..io.atomic import save_folder
from ..io.files import stale_weight_files, weight_writers, write_json
from ..config import AutoConfig, BaseConfig
from ..devices import device_from_map, resolve_device
from ..nn.encoder import Encoder, EncoderRun, check_attn_implementation, init_parameter
from ..errors import ConfigError, InputError
from ..registry import family_of
from ..nn.heads import MaskedLMHead, Pooler
from ..nn.kernels import Products, dequantize_int8, is_int8, quantize_int8, release_caches
from .outputs import EncoderOutput, MaskedLMOutput, ModelOutput
from ..io.hub import PushToHubMixin, check_push_options, known_checkpoint, push_folder, split_hub_kwargs

logger = logging.getLogger(__name__)
# config.json field recording the inference mode of a quantized save; transformers ignores it.
QUANTIZE_KEY = "compactbert_quantize"

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: torch.dtype | str | None, file_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype to build the model in: float32 unless asked; 'auto' follows the weight file."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        return file_dtype if file_dtype in _DTYPES.values() else torch.float32
    if isinstance(dtype, str):
        dtype = _DTYPES.get(dtype.replace("torch.", ""), dtype)  # type: ignore[arg-type]
    if dtype not in _DTYPES.values():
        raise ConfigError(f"dtype {dtype!r} is not supported; choose float32, bfloat16, float16 or 'auto'")
    return dtype  # type: ignore[return-value]


class PreTrainedModel(PushToHubMixin, Products):
    """Base of every compactbert model: config, encoder, weight init, Hub-layout I/O."""

    task: ClassVar[str] = ""  # key of KeyTable.hub_classes
    keeps_prefix: ClassVar[bool] = True  # head models store the encoder under "bert." etc.

    def __init__(self, config: BaseConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder_spec())
        self.load_report: LoadReport | None = None

    # ---------------------------------------------------------------- construction helpers
    @property
    def key_table(self):
        return family_of(self.config).key_table

    def post_init(self) -> None:
        """Initialise all weights, then tie what the config ties."""
        self.init_parameters()
        self.tie_weights()

    def init_parameters(self, names: list[str] | set[str] | None = None) -> None:
        """Draw parameters afresh (all, or those named), as transformers initialises them: normal(0,
        initializer_range) matrices and embeddings, zero biases, identity norms, a zero padding row."""
        std = self.config.initializer_range
        fresh = set()
        for owner, module in self.named_modules():
            for leaf, param in module.named_parameters(recurse=False):
                name = f"{owner}.{leaf}" if owner else leaf
                if names is None or name in names:
                    init_parameter(module, leaf, param, std)
                    fresh.add(name)
        self.encoder.after_init({n[len("encoder."):] for n in fresh if n.startswith("encoder.")})

    def _materialize(self, names: list[str], device: torch.device, dtype: torch.dtype) -> None:
        """Give the parameters `names`, still on the meta device, storage on `device` and fresh values."""
        for name in names:
            owner, _, leaf = name.rpartition(".")
            module = self.get_submodule(owner)
            shape = getattr(module, leaf).shape
            setattr(module, leaf, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.init_parameters(names)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share tied weights; models without tied weights do nothing."""

    @property
    def attn_implementation(self) -> str:
        """"sdpa" (torch's fused attention, the default) or "eager" (explicit matmul and softmax)."""
        return self.encoder.attn_implementation

    def set_attn_implementation(self, name: str) -> "PreTrainedModel":
        """Choose the attention kernel by transformers' name: "sdpa" or "eager" (same results within
        float rounding; eager is what output_attentions computes anyway)."""
        self.encoder.attn_implementation = check_attn_implementation(name)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def from_config(cls, config: BaseConfig, dtype: torch.dtype | str | None = None,
                    torch_dtype: torch.dtype | str | None = None, device: Any = None,
                    attn_implementation: str | None = None) -> "PreTrainedModel":
        """A randomly initialised model (in eval mode: call .train() to train it)."""
        target = resolve_dtype(_one_dtype(dtype, torch_dtype))
        check_size(config)
        model = cls(config)
        model.post_init()
        model.eval()
        model.set_attn_implementation(attn_implementation or "sdpa")
        return model.to(device=resolve_device(device), dtype=target)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                        config: BaseConfig | None = None, strict: bool = True, quantize: str | None = None, *,
                        torch_dtype: torch.dtype | str | None = None, device: Any = None, device_map: Any = None,
                        attn_implementation: str | None = None, output_loading_info: bool = False,
                        use_safetensors: bool | None = None, low_cpu_mem_usage: bool | None = None,
                        **kwargs: Any) -> Any:
        """Load a local Hub-layout folder or a Hub repository (id or alias).

        dtype (or transformers' torch_dtype): None -> float32 whatever the file stores; a torch
            dtype or name; "auto" -> the file's.
        device, or a single-device device_map: "cpu", "cuda", "cuda:1", an index, "auto" (CUDA when
            present), {"": device}. The weights go from the file straight to that device.
        attn_implementation: "sdpa" (default) or "eager".
        strict: missing encoder weights are an error (True) or randomly initialised (False).
        quantize: "int8" for int8 inference on the CPU (see `quantize`); None -> the mode the
            folder's config records (a quantized save), when loading in float32.
        output_loading_info: also return transformers' dict of missing_keys, unexpected_keys,
            mismatched_keys and error_msgs (Hub names).
        use_safetensors: True -> only safetensors files, False -> only PyTorch .bin files, None ->
            safetensors when present.
        low_cpu_mem_usage: accepted for transformers' scripts; every load works that way: the model
            is built on the meta device and takes the loaded tensors as its parameters (peak memory
            about one copy of the weights), and only weights the file lacks are initialised.
        Other keyword arguments: Hub options (revision, cache_dir, local_files_only, token,
        subfolder, force_download) and config fields to override (e.g. num_labels in task heads).
        """
        del low_cpu_mem_usage  # the only way compactbert loads
        hub_kwargs, overrides = split_hub_kwargs(kwargs)
        if device is not None and device_map is not None:
            raise TypeError("from_pretrained() takes device or device_map, not both")
        target_device = device_from_map(device_map) if device_map is not None else resolve_device(device)
        attn_implementation = check_attn_implementation(attn_implementation or "sdpa")
        if config is None:
            config = AutoConfig.from_pretrained(name_or_path, **hub_kwargs)
        config = cls._apply_overrides(config, overrides)
        check_size(config)
        state, filename = read_weights(name_or_path, use_safetensors=use_safetensors, **hub_kwargs)
        file_dtype = next((t.dtype for t in state.values() if t.is_floating_point()), None)
        target = resolve_dtype(_one_dtype(dtype, torch_dtype), file_dtype)
        check_dtype(config, target)

        with torch.device("meta"):
            model = cls(config)
        model.tie_weights()
        report = LoadReport(source=f"{name_or_path}/{filename}")
        internal, origin = hub_to_internal(state, model.key_table, report)
        state.clear()  # `internal` holds the only references: each tensor is freed once placed
        place_weights(model, internal, origin, model.key_table, report, strict=strict,
                      device=target_device, dtype=target)
        model._materialize(report.new_head, target_device, target)
        if file_dtype is not None and file_dtype != target and file_dtype.is_floating_point:
            report.notes.append(f"weights stored as {file_dtype} were converted to {target}")
        if hasattr(model, "mlm") and not decoder_is_tied(model, model.key_table):
            model.config.tie_word_embeddings = False
        model.load_report = report
        message = report.message()
        if report.new_head or report.unexpected:
            logger.warning(message)
        elif message:
            logger.info(message)
        entry = known_checkpoint(str(name_or_path))
        if entry is not None and entry.untrained_mlm_head and isinstance(model, ForMaskedLM):
            _warn_once(f"{entry.repo_id}: {entry.note}")
        model.eval()
        model.set_attn_implementation(attn_implementation)
        if quantize is None and target == torch.float32:
            quantize = config.extra.get(QUANTIZE_KEY)  # the mode a quantized save recorded
        if quantize:
            model.quantize(quantize)
        return (model, model._loading_info()) if output_loading_info else model

    def _loading_info(self) -> dict[str, list]:
        """transformers' `output_loading_info` dict, from the load report (Hub names)."""
        report = self.load_report
        assert report is not None
        missing = [self.key_table.to_hub(n, with_prefix=self.keeps_prefix)[0][0] for n in report.new_head]
        return {"missing_keys": missing, "unexpected_keys": report.unexpected + report.unused,
                "mismatched_keys": [], "error_msgs": []}

    @classmethod
    def _apply_overrides(cls, config: BaseConfig, overrides: dict[str, Any]) -> BaseConfig:
        if not overrides:
            return config
        unknown = [k for k in overrides if not hasattr(config, k) and k != "num_labels"]
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected arguments: {', '.join(unknown)}")
        if "num_labels" in overrides:
            n = int(overrides.pop("num_labels"))
            if config.id2label is None or len(config.id2label) != n:
                overrides.setdefault("id2label", {i: f"LABEL_{i}" for i in range(n)})
                overrides.setdefault("label2id", None)
        if "id2label" in overrides and "label2id" not in overrides:
            overrides["label2id"] = None
        return config.replace(**overrides)

    # ---------------------------------------------------------------- saving
    def hub_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the Hub's names, each tied tensor once."""
        return internal_to_hub(self, self.key_table, with_prefix=self.keeps_prefix)

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True,
                        max_shard_size: int | str = "50GB", push_to_hub: bool = False,
                        safe_serialization: bool = True, **push_options: Any) -> Path:
        """Write config.json and the weights (safetensors) in Hub layout, atomically.

        max_shard_size: weights larger than this (bytes, or "500MB", "2GB") are written as
            model-0000k-of-0000n.safetensors shards with model.safetensors.index.json, as transformers
            writes them (default "50GB", transformers 5's).
        is_main_process: False writes nothing (call it on every rank of a distributed run).
        push_to_hub: then upload the folder through huggingface_hub; push options: repo_id (default:
            the folder's name), token, private, commit_message, create_pr, revision.
        Other files already in the folder (a tokenizer) are kept; the written files replace the old
        ones only after all were fully written, and weight files of an earlier save that the new
        layout does not use (a single file after shards, or the other way) are removed.
        """
        directory = Path(save_directory)
        check_push_options(push_to_hub, push_options, "save_pretrained")
        if not safe_serialization:
            raise ConfigError("compactbert writes safetensors only: a pickled .bin can run code when it is loaded")
        if not is_main_process:
            return directory
        save_folder(directory, *self.folder_files(directory, max_shard_size))
        if push_to_hub:
            push_folder(directory, **push_options)
        return directory

    def folder_files(self, directory: str | os.PathLike, max_shard_size: int | str = "50GB",
                     ) -> tuple[dict[str, Any], list[str]]:
        """(file name -> writer, old files to remove) of a save into `directory`: config.json, the
        weights, and the weight files of an earlier layout; for `save_folder`, alone or together
        with a tokenizer's files (`io.atomic.save_together`)."""
        data = self.saved_config()
        files = weight_writers(self.hub_state_dict(), max_shard_size)
        files["config.json"] = lambda path: write_json(data, path)
        return files, stale_weight_files(directory, files)

    def saved_config(self) -> dict[str, Any]:
        """config.json as a save writes it: the config, the transformers class name, the dtype."""
        data = self.config.to_dict()
        data["architectures"] = [self.key_table.hub_classes[self.task]]
        data["tie_word_embeddings"] = (decoder_is_tied(self, self.key_table) if hasattr(self, "mlm")
                                       else self.config.tie_word_embeddings)
        data["dtype"] = str(self.dtype).replace("torch.", "")
        data.pop(QUANTIZE_KEY, None)
        if self.quantized:
            data[QUANTIZE_KEY] = self.quantized
        return data

    def train(self, mode: bool = True) -> "PreTrainedModel":
        """Training mode drops the packed inference weights (kernels.py); they return on the next
        gradient-free call."""
        if mode:
            release_caches(self)
        return super().train(mode)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """nn.Module.load_state_dict, then the packed inference weights are dropped: the copy into
        inference tensors (a model loaded under torch.inference_mode) bumps no version counter."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        release_caches(self)
        return result

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, select: torch.Tensor | None = None,
                inputs_embeds: None = None) -> EncoderRun:
        # inputs_embeds is accepted because callers that wrap transformers models (peft's task
        # wrappers) always pass it, as None; vectors in place of token ids are not supported.
        if inputs_embeds is not None:
            raise InputError("inputs_embeds is not supported: pass input_ids (token ids from the tokenizer)")
        return self.encoder.run(input_ids, attention_mask, token_type_ids, select,
                                hidden_states=bool(output_hidden_states), attentions=bool(output_attentions))

    @staticmethod
    def _output(output: ModelOutput, run: EncoderRun, return_dict: bool | None) -> Any:
        """The output with the encoder's recorded states; a tuple when return_dict=False."""
        output.hidden_states, output.attentions = run.hidden_states, run.attentions  # type: ignore[attr-defined]
        return output.to_tuple() if return_dict is False else output

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def quantize(self, kind: str = "int8") -> "PreTrainedModel":
        """Opt-in int8 inference for the encoder's products and the masked-LM vocabulary
        projection, on the CPU (in place).

        Weights are int8 with one scale per output channel, activations int8 with one scale per
        token, and the inputs of products that read a LayerNorm are smoothed first (SmoothQuant
        with a data-free estimate; kernels.py, docs/performance.md). The vocabulary matrix is the
        model's largest, and fill-mask on a few masks reads all of it per call, so it runs in int8
        too (one scale per vocabulary entry); the other head products stay float (small, and
        they decide a classifier's answer). The float weights stay the model's parameters, so
        `save_pretrained` writes them in full and records the mode; `from_pretrained` re-applies it.
        Elsewhere than gradient-free CPU float32 calls (training, CUDA), the float weights compute.
        """
        if kind != "int8":
            raise ConfigError(f"quantize={kind!r} is not supported; the only choice is 'int8'")
        if self.dtype != torch.float32:
            raise ConfigError(f"int8 quantization starts from float32 weights, this model is {self.dtype}")
        for head in self.modules():
            if isinstance(head, MaskedLMHead):
                # Unsmoothed: on 512 masks of each bench model, smoothing the vocabulary product's input
                # (exponent 0.5) lost 3-4 points of top-1 agreement that plain per-token scales keep.
                quantize_int8(head, {}, recurse=False)
        quantize_int8(self.encoder, self.encoder.int8_estimates())
        self.eval()
        return self

    @property
    def quantized(self) -> str | None:
        """"int8" after `quantize("int8")`, else None."""
        return "int8" if is_int8(self.encoder) else None

    def dequantize(self) -> "PreTrainedModel":
        """Back to float products (exact: the float weights were never changed)."""
        dequantize_int8(self)
        return self


def _one_dtype(dtype: torch.dtype | str | None, torch_dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """`dtype`, or transformers' older name for it."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise TypeError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
    return dtype if dtype is not None else torch_dtype


def check_size(config: BaseConfig) -> None:
    """A ConfigError, before anything is allocated, for a config whose model could not fit in this
    machine's memory even in bfloat16 (a hostile or mistyped config: vocab_size 10**12, 10**6 layers)."""
    spec = config.encoder_spec()
    need = spec.parameter_count() * 2  # bytes in bfloat16, the smallest float compactbert builds in
    have = _physical_memory()
    if have is not None and need > have:
        raise ConfigError(f"this config describes about {spec.parameter_count():.3g} parameters (vocab_size "
                          f"{spec.vocab_size}, {spec.num_layers} layers of width {spec.hidden_size}), "
                          f"{need / 2**30:.1f} GiB even in bfloat16, more than this machine's "
                          f"{have / 2**30:.1f} GiB of memory; check config.json")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return None


def check_dtype(config: BaseConfig, dtype: torch.dtype) -> None:
    """A ConfigError if the family cannot compute in `dtype` (MobileBERT overflows float16)."""
    why = family_of(config).unsafe_dtypes.get(str(dtype).replace("torch.", ""))
    if why is not None:
        raise ConfigError(why)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


class EncoderModel(PreTrainedModel):
    """The bare encoder (and pooler where the family has one): `AutoModel`."""

    task = "base"
    keeps_prefix = False

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        kind = config.pooler
        self.pooler = Pooler(config.encoder_spec().hidden_size, kind) if kind else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> EncoderOutput:
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           inputs_embeds=inputs_embeds)
        hidden = run.last_hidden_state
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return self._output(EncoderOutput(last_hidden_state=hidden, pooler_output=pooled), run, return_dict)


class ForMaskedLM(PreTrainedModel):
    """Encoder + masked-LM head: `AutoModelForMaskedLM`."""

    task = "masked_lm"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__(config)
        spec = config.encoder_spec()
        eps = getattr(config, "layer_norm_eps", 1e-12)
        self.mlm = MaskedLMHead(spec.hidden_size, spec.embedding_size, spec.vocab_size, config.mlm_activation, eps,
                                to_embedding_width=spec.embedding_projection)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.mlm.decoder = self.encoder.embeddings.word.weight

    def untie_decoder(self) -> None:
        """Give the decoder its own copy of the matrix (for checkpoints that store it separately)."""
        self.mlm.decoder = nn.Parameter(self.mlm.decoder.detach().clone())
        self.config.tie_word_embeddings = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: None = None) -> MaskedLMOutput:
        """Logits for every token, or only at `positions` (a (B, T) bool mask) -> (N, V).

        With `labels` (B, T), the loss is the mean cross-entropy over labels != -100.
        """
        run = self._encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                           select=positions, inputs_embeds=inputs_embeds)
        hidden = run.last_hidden_state
        logits = self.mlm(hidden)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(labels.shape)}")
            targets = labels[positions] if positions is not None else labels.reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, ignore_index=-100)
        return self._output(MaskedLMOutput(loss=loss, logits=logits, last_hidden_state=hidden), run, return_dict)
