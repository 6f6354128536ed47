"""Checkpoint I/O: legacy files, round trips through transformers, sharding, prefixes, bad files, atomic saves."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import compactbert as cb
from compactbert.io import files as files_module
from conftest import TINY, max_rel_err, oracle_config, oracle_model, padded_batch, transformers

TOL = 1e-5


def _legacy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old BERT naming: LayerNorm.gamma/beta, a position_ids buffer, fp16 storage."""
    out = {}
    for key, value in state.items():
        if "LayerNorm" in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        out[key] = value.half()
    out["bert.embeddings.position_ids"] = torch.arange(64)[None]
    return out


def test_legacy_fp16_bin_with_untied_decoder(tmp_path):
    """The amazon/bort layout: fp16 .bin, gamma/beta, position_ids, decoder differing from embeddings."""
    config = TINY["bert"](type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
    oracle = oracle_model(config)
    state = {k: v.clone() for k, v in oracle.state_dict().items()}
    state["cls.predictions.decoder.weight"] = torch.randn_like(state["cls.predictions.decoder.weight"]) * 0.05
    state.pop("cls.predictions.decoder.bias", None)
    folder = tmp_path / "bort-like"
    folder.mkdir()
    torch.save(_legacy_state(state), folder / "pytorch_model.bin")
    data = oracle_config(config).to_dict()
    data.pop("tie_word_embeddings", None)  # like the real file: the default (true) applies
    (folder / "config.json").write_text(json.dumps(data))

    ours = cb.AutoModelForMaskedLM.from_pretrained(folder)
    assert ours.dtype == torch.float32
    assert not ours.config.tie_word_embeddings
    assert ours.mlm.decoder is not ours.encoder.embeddings.word.weight
    assert any("kept untied" in note for note in ours.load_report.notes)
    assert not ours.load_report.unexpected and not ours.load_report.new_head

    # Oracle: the same fp16-rounded weights in fp32, decoder untied, as transformers 5 keeps it.
    untied = transformers.BertForMaskedLM(oracle_config(config.replace(tie_word_embeddings=False))).eval()
    rounded = {k: v.half().float() for k, v in state.items()}
    rounded["cls.predictions.decoder.bias"] = rounded["cls.predictions.bias"]
    untied.load_state_dict(rounded, strict=False)
    ids, mask = padded_batch(config.vocab_size, [12, 5, 8], config.pad_token_id)
    with torch.no_grad():
        err = max_rel_err(untied(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits, mask)
    assert err <= TOL

    half = cb.AutoModelForMaskedLM.from_pretrained(folder, dtype="auto")
    assert half.dtype == torch.float16
    assert cb.AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["bert", "mobilebert", "distilbert"])
@pytest.mark.parametrize("task", ["base", "masked_lm"])
def test_round_trip_through_transformers(tmp_path, family, task, tiny_checkpoint):
    auto = cb.AutoModel if task == "base" else cb.AutoModelForMaskedLM
    ours = auto.from_pretrained(tiny_checkpoint(family, task))
    out_dir = ours.save_pretrained(tmp_path / "saved")
    saved = json.loads((out_dir / "config.json").read_text())
    assert saved["model_type"] == family and saved["architectures"] == [ours.key_table.hub_classes[task]]
    loader = transformers.AutoModel if task == "base" else transformers.AutoModelForMaskedLM
    theirs, info = loader.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask = padded_batch(ours.config.vocab_size, [10, 4], ours.config.pad_token_id)
    with torch.no_grad():
        want, got = theirs.eval()(input_ids=ids, attention_mask=mask), ours(ids, mask)
    if task == "base":
        assert max_rel_err(want.last_hidden_state, got.last_hidden_state, mask) <= TOL
    else:
        assert max_rel_err(want.logits, got.logits, mask) <= TOL


def test_untied_round_trip_keeps_decoder(tmp_path):
    config = TINY["bert"]()
    model = cb.AutoModelForMaskedLM.from_config(config)
    model.untie_decoder()
    with torch.no_grad():
        model.mlm.decoder.normal_()
    folder = model.save_pretrained(tmp_path / "untied")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["tie_word_embeddings"] is False
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert torch.equal(theirs.cls.predictions.decoder.weight, model.mlm.decoder)
    again = cb.AutoModelForMaskedLM.from_pretrained(folder)
    assert torch.equal(again.mlm.decoder, model.mlm.decoder)
    ids, mask = padded_batch(config.vocab_size, [7, 3], 0)
    with torch.no_grad():
        assert max_rel_err(theirs(input_ids=ids, attention_mask=mask).logits, model(ids, mask).logits, mask) <= TOL


def test_tied_save_writes_each_tensor_once(tmp_path, tiny_checkpoint):
    model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint("bert"))
    keys = set(model.hub_state_dict())
    assert "cls.predictions.decoder.weight" not in keys and "cls.predictions.decoder.bias" not in keys
    assert "bert.embeddings.word_embeddings.weight" in keys and "cls.predictions.bias" in keys


def test_base_checkpoint_into_masked_lm_reports_new_head(tiny_checkpoint, caplog):
    with caplog.at_level("WARNING", logger="compactbert"):
        model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint("bert", "base"))
    assert sorted(model.load_report.new_head) == ["mlm.bias", "mlm.norm.bias", "mlm.norm.weight",
                                                 "mlm.transform.bias", "mlm.transform.weight"]
    assert "newly initialised" in caplog.text and "mlm.transform.weight" in caplog.text
    assert sorted(model.load_report.unused) == ["pooler.dense.bias", "pooler.dense.weight"]


def test_masked_lm_checkpoint_into_base_model(tiny_checkpoint):
    model = cb.AutoModel.from_pretrained(tiny_checkpoint("distilbert"))
    assert not model.load_report.new_head
    assert sorted(model.load_report.unused) == sorted([
        "vocab_transform.weight", "vocab_transform.bias", "vocab_layer_norm.weight",
        "vocab_layer_norm.bias", "vocab_projector.bias"])


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoints(tmp_path, fmt, tiny_checkpoint):
    source = tiny_checkpoint("mobilebert")
    reference = cb.AutoModelForMaskedLM.from_pretrained(source)
    state = reference.hub_state_dict()
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    keys = sorted(state)
    shards = {f"model-0000{i + 1}-of-00002.{fmt}": keys[i::2] for i in range(2)}
    weight_map = {}
    for name, names in shards.items():
        part = {k: state[k].contiguous() for k in names}
        save_file(part, str(folder / name)) if fmt == "safetensors" else torch.save(part, folder / name)
        weight_map.update({k: name for k in names})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = cb.AutoModelForMaskedLM.from_pretrained(folder)
    for (name, a), b in zip(reference.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ bad input

def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    supported = "albert, bert, distilbert, mobilebert, roberta"
    with pytest.raises(cb.ConfigError, match=f"model_type 'gpt2'.*supported: {supported}"):
        cb.AutoModel.from_pretrained(tmp_path)


def test_config_without_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(cb.ConfigError, match="no 'model_type'"):
        cb.AutoConfig.from_pretrained(tmp_path)


def test_invalid_json_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(cb.ConfigError, match="not valid JSON"):
        cb.AutoConfig.from_pretrained(tmp_path)


def test_folder_without_weights(tmp_path, tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    (folder / "model.safetensors").unlink()
    with pytest.raises(cb.CheckpointError, match="no weights found.*model.safetensors"):
        cb.AutoModel.from_pretrained(folder)


def test_folder_without_config(tmp_path):
    with pytest.raises(cb.CheckpointError, match="config.json is not in the folder"):
        cb.AutoModel.from_pretrained(tmp_path)


def test_truncated_safetensors(tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(cb.CheckpointError, match="model.safetensors is not a readable safetensors file"):
        cb.AutoModel.from_pretrained(folder)


def test_garbage_safetensors(tiny_checkpoint):
    folder = tiny_checkpoint("distilbert")
    (folder / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(cb.CheckpointError, match="truncated or corrupt"):
        cb.AutoModel.from_pretrained(folder)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path, tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"bert.embeddings.word_embeddings.weight": _RunsCode(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(cb.UnsafeCheckpointError, match="pytorch_model.bin holds objects other than tensors"):
        cb.AutoModel.from_pretrained(folder)
    assert not marker.exists()


def test_plain_pickle_bin_is_refused(tmp_path, tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump(_RunsCode(str(tmp_path / "code-ran")), fh)
    with pytest.raises(cb.CheckpointError):
        cb.AutoModel.from_pretrained(folder)
    assert not (tmp_path / "code-ran").exists()


def test_truncated_bin(tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    model = cb.AutoModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    path = folder / "pytorch_model.bin"
    torch.save(model.hub_state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(cb.CheckpointError, match="pytorch_model.bin is not a readable PyTorch weight file"):
        cb.AutoModel.from_pretrained(folder)


def test_shape_mismatch_names_key_and_shapes(tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 40
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(cb.CheckpointError,
                       match=r"bert.encoder.layer.0.intermediate.dense.(weight|bias) has shape "
                             r"\(37(, 32)?,?\).*expects \(40(, 32)?,?\)"):
        cb.AutoModelForMaskedLM.from_pretrained(folder)


def test_missing_encoder_weights_are_an_error(tiny_checkpoint):
    folder = tiny_checkpoint("bert", "base")
    model = cb.AutoModel.from_pretrained(folder)
    state = model.hub_state_dict()
    del state["encoder.layer.1.output.dense.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(cb.CheckpointError, match="lacks encoder weights.*encoder.layer.1.output.dense.weight"):
        cb.AutoModel.from_pretrained(folder)
    relaxed = cb.AutoModel.from_pretrained(folder, strict=False)
    assert "encoder.layers.1.ffn.fc_out.weight" in relaxed.load_report.new_head


def test_unknown_keys_are_reported(tiny_checkpoint, caplog):
    folder = tiny_checkpoint("bert", "base")
    state = cb.AutoModel.from_pretrained(folder).hub_state_dict()
    state["adapter.weight"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with caplog.at_level("WARNING", logger="compactbert"):
        model = cb.AutoModel.from_pretrained(folder)
    assert model.load_report.unexpected == ["adapter.weight"]
    assert "adapter.weight" in caplog.text


def test_mobilebert_float16_is_refused(tiny_checkpoint):
    with pytest.raises(cb.ConfigError, match="overflow float16.*bfloat16"):
        cb.AutoModel.from_pretrained(tiny_checkpoint("mobilebert", "base"), dtype=torch.float16)


def test_unsupported_dtype(tiny_checkpoint):
    with pytest.raises(cb.ConfigError, match="dtype 'int8' is not supported"):
        cb.AutoModel.from_pretrained(tiny_checkpoint("bert", "base"), dtype="int8")


# ------------------------------------------------------------------ atomic saves

@pytest.mark.parametrize("shard_size", ["50GB", "60KB"])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch, tiny_checkpoint, shard_size):
    """A save interrupted while writing weights (the second shard, when sharded) changes nothing."""
    model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint("bert"))
    target = model.save_pretrained(tmp_path / "out")
    (target / "tokenizer.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    write = files_module.write_safetensors
    calls = []

    def crash(tensors, path):
        calls.append(path.name)
        if len(calls) == (2 if shard_size == "60KB" else 1):
            path.write_bytes(b"partial")
            raise KeyboardInterrupt
        write(tensors, path)

    monkeypatch.setattr(files_module, "write_safetensors", crash)
    other = cb.AutoModelForMaskedLM.from_config(model.config)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(target, max_shard_size=shard_size)
    assert calls[-1].startswith("model-" if shard_size == "60KB" else "model.safetensors")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.saving")]  # no staging left
    reloaded = cb.AutoModelForMaskedLM.from_pretrained(target)
    assert torch.equal(reloaded.mlm.bias, model.mlm.bias)


def test_save_into_existing_folder_keeps_other_files(tmp_path, tiny_checkpoint):
    model = cb.AutoModel.from_pretrained(tiny_checkpoint("distilbert", "base"))
    target = tmp_path / "out"
    target.mkdir()
    (target / "vocab.txt").write_text("[PAD]\n")
    model.save_pretrained(target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
