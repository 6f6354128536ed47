"""LoRA through peft: adapt a model by training small low-rank updates of chosen products.

compactbert's modules have stable short names, so peft's own `LoraConfig(target_modules=[...])`
works unchanged on every family (`add_lora` is a shortcut that also trains the task head):

| name | product |
|---|---|
| `q`, `k`, `v`, `out` | attention: query, key, value, output projection |
| `fc_in`, `fc_out` | feed-forward: up and down projection |
| `bottleneck_in.dense`, `bottleneck_qk.dense`, `bottleneck_out.dense` | MobileBERT's bottlenecks |
| `embeddings.transform`, `embeddings.projection` | MobileBERT's trigram transform, ALBERT's factorised embedding |
| `classifier`, `pre_classifier`, `qa_outputs`, `pooler.dense` | task heads |

A wrapped product never runs on the fused or packed inference kernels (nn/kernels.py `plain`), so
the adapter's part is always added; `merge_and_unload()` folds it into the weights and the fast
kernels return.

Saved adapters are peft's files (adapter_config.json, adapter_model.safetensors), so
`peft.PeftModel.from_pretrained(base_model, folder)` reads them; the fine-tuning recipes add the
task model's config.json (its labels) and the tokenizer, and `load_lora(folder)` rebuilds the whole
model from such a folder.

peft is an optional extra: `pip install "compactbert[lora]"`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError
from ..io.files import write_json
from ..options import option

ATTENTION = ("q", "k", "v", "out")
FEED_FORWARD = ("fc_in", "fc_out")
DEFAULT_TARGETS = ("q", "v")  # as the LoRA paper adapts attention
# Task-head modules a fine-tuning trains in full whenever the checkpoint did not provide them.
HEADS = ("classifier", "pre_classifier", "qa_outputs", "pooler")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class LoraSettings:
    """LoRA settings of the fine-tuning recipes and `compactbert finetune --lora-r`."""

    lora_r: int = option(0, "LoRA rank; 0 trains every weight (full fine-tuning)")
    lora_alpha: float = option(16.0, "LoRA scaling numerator: updates are scaled by alpha / r")
    lora_dropout: float = option(0.0, "dropout on the LoRA input")
    lora_targets: str = option(",".join(DEFAULT_TARGETS), "comma-separated module names to adapt "
                               "(q,k,v,out,fc_in,fc_out; see docs/fine-tuning.md)")

    def __post_init__(self) -> None:
        if self.lora_r < 0:
            raise ConfigError(f"lora_r must be 0 (off) or a positive rank, got {self.lora_r}")
        if self.lora_r and not self.targets:
            raise ConfigError("lora_targets is empty: name the products to adapt, e.g. q,v")

    @property
    def targets(self) -> list[str]:
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise ConfigError(f'LoRA needs the optional package peft: pip install "compactbert[lora]" ({exc})') from exc
    return peft


def trained_heads(model: nn.Module) -> list[str]:
    """The head modules of `model` that its checkpoint did not provide (all of them for a model
    built from a config): they are new, so LoRA training updates them in full."""
    present = [name for name in HEADS if getattr(model, name, None) is not None]
    report = getattr(model, "load_report", None)
    if report is None:
        return present
    fresh = {name.split(".")[0] for name in report.new_head}
    return [name for name in present if name in fresh]


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets: list[str] | tuple[str, ...] = DEFAULT_TARGETS, base: str | os.PathLike | None = None) -> Any:
    """`model` wrapped by peft with LoRA on `targets` (module names, see the module doc); the new task
    head trains in full. `base`: the checkpoint name recorded in the adapter's config."""
    peft = _peft()
    names = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t.rpartition(".")[2] not in names]
    if unknown:
        raise ConfigError(f"no module named {', '.join(unknown)} in this model; LoRA targets: "
                          f"{', '.join(ATTENTION + FEED_FORWARD)} (see docs/fine-tuning.md)")
    if base is not None:  # peft records the base checkpoint from this attribute, as transformers models have it
        model.name_or_path = str(base)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                             modules_to_save=trained_heads(model) or None,
                             base_model_name_or_path=None if base is None else str(base))
    return peft.get_peft_model(model, config)


class AdapterFiles:
    """A LoRA-wrapped task model as the files of a save (for io.atomic.save_together): peft's adapter
    files and the task model's config.json (its labels), without the base weights."""

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model

    def folder_files(self, directory: str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
        contents = {}
        with tempfile.TemporaryDirectory() as scratch:  # peft writes its files itself; they are small
            self.peft_model.save_pretrained(scratch)
            for name in ADAPTER_FILES:
                contents[name] = (Path(scratch) / name).read_bytes()
        config = self.peft_model.get_base_model().saved_config()
        writers = {name: (lambda path, data=data: path.write_bytes(data)) for name, data in contents.items()}
        writers["config.json"] = lambda path: write_json(config, path)
        # Weights of an earlier full save in the folder would load as the model instead of the adapter.
        stale = [name for name in os.listdir(directory) if name.startswith("model") and
                 (name.endswith(".safetensors") or name.endswith(".safetensors.index.json"))] \
            if os.path.isdir(directory) else []
        return writers, stale


def load_lora(folder: str | os.PathLike, merge: bool = False, **hub: Any) -> Any:
    """The task model saved by a LoRA fine-tuning in `folder`: its base checkpoint (named in
    adapter_config.json, or `base=`), the head and labels of the folder's config.json, and the adapter.
    Returns peft's model, or with merge=True a plain compactbert model with the adapter folded in."""
    from ..config import AutoConfig
    from ..models.auto import task_model_class

    peft = _peft()
    folder = Path(folder)
    base = hub.pop("base", None)
    try:
        adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder} is not a LoRA fine-tuning folder (adapter_config.json and config.json): "
                              f"{exc}") from exc
    base = base or adapter.get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{folder}/adapter_config.json names no base model; pass load_lora(..., base=NAME)")
    cls = task_model_class(config)
    head = {k: getattr(config, k) for k in ("id2label", "label2id", "problem_type") if hasattr(config, k)}
    model = cls.from_pretrained(base, **head, **hub)
    wrapped = peft.PeftModel.from_pretrained(model, str(folder))
    wrapped.eval()
    return wrapped.merge_and_unload() if merge else wrapped
