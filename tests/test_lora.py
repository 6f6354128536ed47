"""LoRA through peft (compactbert/training/lora.py): peft's own LoraConfig works unchanged on every
family; the adapter's part is applied on the fast inference path too; adapters save and load back
with the same logits; merge_and_unload equals the unmerged model within 1e-5; frozen layers pass
gradients; the recipe and the command line train and save adapters that load_lora rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import compactbert as cb
from compactbert.cli import main
from compactbert.nn.kernels import linear
from compactbert.training import LoraSettings, TrainingConfig, add_lora, finetune_task, load_lora
from compactbert.training.text_classification import classification_metrics, read_csv_examples
from conftest import FAMILIES, TINY, minilm_folder, tokenized_checkpoint

peft = pytest.importorskip("peft")

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
EVERY_PRODUCT = ["q", "k", "v", "out", "fc_in", "fc_out"]


def randomize_adapters(model) -> None:
    """peft starts B at zero (no change); random B makes the adapters' part visible."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)


def logits(model, ids, mask, grad: bool = False) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        return model(input_ids=ids, attention_mask=mask).logits.detach()


def batch(vocab: int = 99):
    ids = torch.randint(3, vocab, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_lora_config_works_unchanged_and_round_trips(tmp_path, family):
    config = TINY[family](id2label={0: "a", 1: "b", 2: "c"})
    torch.manual_seed(0)
    base = cb.AutoModelForSequenceClassification.from_config(config).eval()
    ids, mask = batch()
    plain = logits(base, ids, mask)
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=EVERY_PRODUCT,
                                                        modules_to_save=["classifier"]))
    adapted = [n for n, m in wrapped.named_modules() if n.endswith((".q", ".k", ".v", ".out", ".fc_in", ".fc_out"))
               and hasattr(m, "lora_A")]
    spec = config.encoder_spec()
    assert len(adapted) == len(set(spec.layer_schedule)) * (4 + 2 * spec.num_ffn)  # every product of every layer
    randomize_adapters(wrapped)
    wrapped.eval()
    fast = logits(wrapped, ids, mask)  # gradient-free: the packed inference path
    reference = logits(wrapped, ids, mask, grad=True)  # with autograd: plain products
    assert torch.allclose(fast, reference, atol=1e-5)
    assert (fast - plain).abs().max() > 5e-3 * plain.abs().max()  # the adapters are applied
    wrapped.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(0)
    fresh = cb.AutoModelForSequenceClassification.from_config(config).eval()
    loaded = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    assert torch.allclose(logits(loaded, ids, mask), fast, atol=1e-6)
    merged = loaded.merge_and_unload()
    assert all(type(m) is torch.nn.Linear for n, m in merged.named_modules() if n.endswith((".q", ".fc_in")))
    assert torch.allclose(logits(merged, ids, mask), fast, atol=1e-5)


def test_frozen_packed_layers_pass_gradients_to_their_inputs():
    layer = torch.nn.Linear(16, 8).eval()
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(4, 16, requires_grad=True)
    linear(layer, x).square().sum().backward()
    expected = torch.autograd.grad(torch.nn.functional.linear(x, layer.weight, layer.bias).square().sum(), x)[0]
    assert torch.allclose(x.grad, expected, atol=1e-6)


def test_add_lora_trains_new_heads_in_full_and_names_bad_targets(tmp_path):
    model = cb.AutoModelForSequenceClassification.from_config(TINY["distilbert"]())
    wrapped = add_lora(model, r=2, targets=["q", "v"])
    trainable = {n.split(".")[2] for n, p in wrapped.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trainable == {"classifier", "pre_classifier"}  # DistilBERT's head is two new layers
    with pytest.raises(cb.ConfigError, match="no module named query"):
        add_lora(cb.AutoModelForSequenceClassification.from_config(TINY["bert"]()), targets=["query"])
    with pytest.raises(cb.ConfigError, match="lora_r must be 0"):
        LoraSettings(lora_r=-1)


def test_recipe_and_cli_save_adapters_that_load_back(tmp_path, capsys):
    folder = tokenized_checkpoint(tmp_path / "base", "bert", "base")
    out = tmp_path / "lora"
    assert main(["finetune", "text-classification", "--model", str(folder), "--train",
                 str(DATA / "sentiment_train.csv"), "--validation", str(DATA / "sentiment_dev.csv"),
                 "--num-train-epochs", "2", "--learning-rate", "5e-3", "--lora-r", "4",
                 "--lora-targets", "q,k,v,out", "--output-dir", str(out)]) == 0
    assert "LoRA:" in capsys.readouterr().out
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(folder) and adapter["r"] == 4
    model = load_lora(out)
    merged = load_lora(out, merge=True)
    saved = json.loads((out / "config.json").read_text())["id2label"]
    assert {str(k): v for k, v in merged.config.id2label.items()} == saved and len(saved) == 2
    tok = cb.AutoTokenizer.from_pretrained(out)
    dev = read_csv_examples(DATA / "sentiment_dev.csv")
    assert classification_metrics(model, dev, tok)["accuracy"] == pytest.approx(metrics["eval_accuracy"])
    enc = tok(["a fine day", "a dreadful film, truly"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, merged(**enc).logits, atol=1e-5)
    with pytest.raises(cb.CheckpointError, match="holds a LoRA adapter.*load_lora"):
        cb.AutoModelForSequenceClassification.from_pretrained(out)


def test_missing_peft_is_a_named_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(cb.ConfigError, match=r'pip install "compactbert\[lora\]"'):
        add_lora(cb.AutoModelForSequenceClassification.from_config(TINY["bert"]()))


@pytest.mark.slow
def test_lora_on_real_minilm_reaches_full_fine_tuning_accuracy(tmp_path):
    """docs/fine-tuning.md: r=8 on q and v (0.33% of the weights trained) against full fine-tuning."""
    base = minilm_folder()
    train, dev = DATA / "sentiment_train.csv", DATA / "sentiment_dev.csv"
    full = TrainingConfig(num_train_epochs=5, per_device_train_batch_size=8, seed=0, output_dir=str(tmp_path / "f"))
    lora = TrainingConfig(num_train_epochs=8, per_device_train_batch_size=8, learning_rate=2e-3, seed=0,
                          output_dir=str(tmp_path / "l"))
    _, full_metrics = finetune_task("text-classification", base, train, dev, full)
    _, lora_metrics = finetune_task("text-classification", base, train, dev, lora, lora=LoraSettings(lora_r=8))
    assert lora_metrics["trainable_share"] <= 0.02
    assert lora_metrics["eval_accuracy"] >= full_metrics["eval_accuracy"] - 0.05
