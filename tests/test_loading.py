"""from_pretrained with transformers' arguments: dtype/torch_dtype, device/device_map,
attn_implementation, output_loading_info, subfolder, use_safetensors, and loading on the meta device
(peak memory about one copy of the weights)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import compactbert as cb
from conftest import (
    DEVICES, FAMILIES, HEAD_CLASSES, TINY, max_rel_err, oracle_model, padded_batch, save_oracle, tokenized_checkpoint,
    transformers,
)



@pytest.fixture
def mlm_folder(tmp_path):
    def make(family: str, task: str = "masked_lm"):
        return save_oracle(oracle_model(TINY[family](), task), tmp_path / f"{family}-{task}")
    return make


def _logits(model):
    ids, mask = padded_batch(model.config.vocab_size, [9, 5], model.config.pad_token_id)
    with torch.no_grad():
        return model(ids.to(model.device), mask.to(model.device)).logits.float().cpu(), mask


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_on_meta_equals_the_file(mlm_folder, family):
    """Every parameter comes from the file, none stays on the meta device, ties hold."""
    folder = mlm_folder(family)
    model = cb.AutoModelForMaskedLM.from_pretrained(folder)
    oracle = oracle_model(TINY[family](), "masked_lm")
    assert not any(p.is_meta for p in model.parameters())
    assert model.mlm.decoder is model.encoder.embeddings.word.weight
    hub = {k: v for k, v in oracle.state_dict().items() if not k.endswith("position_ids")}
    for name, value in model.hub_state_dict().items():
        assert torch.equal(value, hub[name]), name
    logits, mask = _logits(model)
    ids, _ = padded_batch(model.config.vocab_size, [9, 5], model.config.pad_token_id)
    with torch.no_grad():
        expected = oracle(input_ids=ids, attention_mask=mask).logits
    assert max_rel_err(expected, logits, mask) < 1e-5


def test_loaded_model_does_not_depend_on_its_file(mlm_folder):
    """Overwriting the weight file in place (as a non-atomic writer does) after loading changes
    nothing in the loaded model: its weights live in memory of their own, not in a file mapping."""
    folder = mlm_folder("bert")
    model = cb.AutoModelForMaskedLM.from_pretrained(folder)
    before, mask = _logits(model)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:  # same inode, new bytes, then cut short
        fh.seek(size // 2)
        fh.write(b"\xff" * (size - size // 2))
        fh.truncate(size // 3)
    after, _ = _logits(model)
    assert torch.equal(before, after)


@pytest.mark.parametrize("family", FAMILIES)
def test_new_head_is_initialised_like_transformers(mlm_folder, family):
    model = cb.AutoModelForSequenceClassification.from_pretrained(mlm_folder(family), num_labels=3)
    std = model.config.initializer_range
    output_layer = getattr(model.classifier, "out_proj", model.classifier)  # RoBERTa's head ends in out_proj
    weight, bias = output_layer.weight, output_layer.bias
    assert not weight.is_meta and weight.shape[0] == 3
    assert abs(weight.std().item() - std) < 0.25 * std  # normal(0, initializer_range)
    assert torch.count_nonzero(bias) == 0
    assert not any(p.is_meta for p in model.parameters())


def test_strict_false_initialises_missing_encoder_weights(tmp_path, mlm_folder):
    from safetensors.torch import load_file, save_file

    folder = mlm_folder("bert")
    state = load_file(folder / "model.safetensors")
    dropped = [k for k in state if k.startswith(("bert.embeddings.word_embeddings", "bert.encoder.layer.1."))]
    save_file({k: v for k, v in state.items() if k not in dropped}, folder / "model.safetensors")
    with pytest.raises(cb.CheckpointError, match="lacks encoder weights"):
        cb.AutoModelForMaskedLM.from_pretrained(folder)
    model, info = cb.AutoModelForMaskedLM.from_pretrained(folder, strict=False, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(dropped)
    word = model.encoder.embeddings.word.weight
    assert model.mlm.decoder is word  # tied to the freshly drawn matrix
    assert torch.count_nonzero(word[model.config.pad_token_id]) == 0  # padding row zero, as in init
    norm = model.encoder.layers[1].attention_norm.weight
    assert torch.equal(norm, torch.ones_like(norm))
    assert torch.isfinite(_logits(model)[0]).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["base", "masked_lm", "sequence_classification"])
def test_loading_info_equals_transformers(mlm_folder, family, task):
    folder = mlm_folder(family)
    auto = {"base": transformers.AutoModel, "masked_lm": transformers.AutoModelForMaskedLM,
            "sequence_classification": transformers.AutoModelForSequenceClassification}[task]
    _, expected = auto.from_pretrained(folder, output_loading_info=True)
    model, info = HEAD_CLASSES[task].from_pretrained(folder, output_loading_info=True)
    assert isinstance(model, cb.PreTrainedModel)
    assert set(info) == {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    for key in ("missing_keys", "unexpected_keys"):
        assert sorted(info[key]) == sorted(expected[key]), key


@pytest.mark.parametrize("argument", ["dtype", "torch_dtype"])
def test_dtype_and_torch_dtype(mlm_folder, argument):
    model = cb.AutoModelForMaskedLM.from_pretrained(mlm_folder("distilbert"), **{argument: torch.bfloat16})
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with pytest.raises(TypeError, match="disagree"):
        cb.AutoModelForMaskedLM.from_pretrained(mlm_folder("distilbert"), dtype="float32", torch_dtype="bfloat16")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("argument", ["device", "device_map"])
@pytest.mark.parametrize("family", FAMILIES)
def test_load_onto_device(mlm_folder, device, argument, family):
    """The weights land on the device asked for; outputs equal the CPU load."""
    folder = mlm_folder(family)
    cpu = cb.AutoModelForMaskedLM.from_pretrained(folder)
    model = cb.AutoModelForMaskedLM.from_pretrained(folder, **{argument: device})
    assert all(p.device.type == device for p in model.parameters())
    expected, mask = _logits(cpu)
    assert max_rel_err(expected, _logits(model)[0], mask) < 1e-5


def test_device_map_forms(mlm_folder):
    folder = mlm_folder("distilbert")
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert cb.AutoModel.from_pretrained(folder, device_map="auto").device.type == auto
    assert cb.AutoModel.from_pretrained(folder, device_map={"": "cpu"}).device.type == "cpu"
    assert cb.AutoModel.from_pretrained(folder, device_map={"encoder": "cpu", "pooler": -1}).device.type == "cpu"
    with pytest.raises(TypeError, match="device or device_map"):
        cb.AutoModel.from_pretrained(folder, device="cpu", device_map="cpu")
    with pytest.raises(cb.ConfigError, match="not a device name"):
        cb.AutoModel.from_pretrained(folder, device="gpu0")
    with pytest.raises(cb.ConfigError, match="meta device"):
        cb.AutoModel.from_pretrained(folder, device_map="meta")
    if torch.cuda.is_available():
        with pytest.raises(cb.ConfigError, match="spreads the model"):
            cb.AutoModel.from_pretrained(folder, device_map={"encoder": "cpu", "pooler": "cuda:0"})
    else:
        with pytest.raises(cb.ConfigError, match="no CUDA device"):
            cb.AutoModel.from_pretrained(folder, device_map="cuda:0")


PIPELINE_DEVICES = [-1, "cpu", torch.device("cpu"), "auto"] + ([0, "cuda:0"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", PIPELINE_DEVICES, ids=str)
def test_pipeline_device_forms(tmp_path, device):
    """pipeline(device=...) takes what transformers' pipeline takes; results equal the CPU ones."""
    folder = tokenized_checkpoint(tmp_path / "mlm", "distilbert")
    text = "The quick brown [MASK] jumps over the lazy dog."
    expected = cb.pipeline("fill-mask", model=folder)(text)
    fill = cb.pipeline("fill-mask", model=folder, device=device)
    want = "cuda" if device in (0, "cuda:0") or (device == "auto" and torch.cuda.is_available()) else "cpu"
    assert fill.model.device.type == want
    got = fill(text)
    assert [p["token"] for p in got] == [p["token"] for p in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(got, expected))
    with pytest.raises(cb.ConfigError, match="not a device name"):
        cb.pipeline("fill-mask", model=folder, device="gpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_attention_equals_sdpa_and_transformers_eager(mlm_folder, family):
    folder = mlm_folder(family)
    sdpa = cb.AutoModelForMaskedLM.from_pretrained(folder)
    eager = cb.AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager")
    assert (sdpa.attn_implementation, eager.attn_implementation) == ("sdpa", "eager")
    oracle = transformers.AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids, mask = padded_batch(sdpa.config.vocab_size, [9, 5], sdpa.config.pad_token_id)
    with torch.no_grad():
        expected = oracle(input_ids=ids, attention_mask=mask).logits
        got = eager(ids, mask).logits
        assert max_rel_err(expected, got, mask) < 1e-5
        assert max_rel_err(sdpa(ids, mask).logits, got, mask) < 1e-5
    with pytest.raises(cb.ConfigError, match="'sdpa' or 'eager'"):
        cb.AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="flash_attention_2")
    assert eager.set_attn_implementation("sdpa").attn_implementation == "sdpa"


def test_subfolder(tmp_path, mlm_folder):
    folder = mlm_folder("mobilebert")
    repo = tmp_path / "repo"
    shutil.copytree(folder, repo / "models" / "mlm")
    model = cb.AutoModelForMaskedLM.from_pretrained(repo, subfolder="models/mlm")
    reference = cb.AutoModelForMaskedLM.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    with pytest.raises(cb.CheckpointError, match="config.json is not in"):
        cb.AutoModelForMaskedLM.from_pretrained(repo, subfolder="models/other")


def test_use_safetensors(tmp_path, mlm_folder):
    folder = mlm_folder("distilbert")
    other = oracle_model(TINY["distilbert"](), "masked_lm", seed=5)
    torch.save(other.state_dict(), folder / "pytorch_model.bin")  # different weights in the .bin
    word = "embeddings.word_embeddings.weight"
    from_bin = cb.AutoModelForMaskedLM.from_pretrained(folder, use_safetensors=False)
    assert torch.equal(from_bin.encoder.embeddings.word.weight, other.state_dict()[f"distilbert.{word}"])
    from_st = cb.AutoModelForMaskedLM.from_pretrained(folder, use_safetensors=True)
    assert not torch.equal(from_st.encoder.embeddings.word.weight, from_bin.encoder.embeddings.word.weight)
    (folder / "model.safetensors").unlink()
    with pytest.raises(cb.CheckpointError, match=r"use_safetensors=True"):
        cb.AutoModelForMaskedLM.from_pretrained(folder, use_safetensors=True)
    assert cb.AutoModelForMaskedLM.from_pretrained(folder, low_cpu_mem_usage=True) is not None


PEAK = textwrap.dedent("""
    import sys
    import torch
    import compactbert as cb

    def peak_mib():  # the process's peak resident memory so far
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    cb.AutoModelForMaskedLM.from_pretrained(sys.argv[1])  # imports and first-call allocations
    before = peak_mib()
    model = cb.AutoModelForMaskedLM.from_pretrained(sys.argv[2], dtype=sys.argv[3])
    with torch.no_grad():
        sum(float(p.float().sum()) for p in model.parameters())  # every weight resident
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print((peak_mib() - before) / size)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_load_peak_memory_is_about_one_model(tmp_path):
    """A 6-layer BERT-base-width masked LM (~256 MiB): the load's peak memory over the model size.
    Building the model randomly first and copying the file in took 2.0x; on the meta device 1.0x."""
    small, large = tmp_path / "small", tmp_path / "large"
    cb.AutoModelForMaskedLM.from_config(TINY["bert"]()).save_pretrained(small)
    config = cb.BertConfig(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072)
    cb.AutoModelForMaskedLM.from_config(config).save_pretrained(large)
    script = tmp_path / "peak.py"
    script.write_text(PEAK)
    run = subprocess.run([sys.executable, str(script), str(small), str(large), "float32"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 1.25
