"""Hostile checkpoints and configs get a specific error before any large allocation: absurd sizes,
wrong types, integer tensors where weights belong, links out of the folder, oversized tokenizer
files. (Truncated or garbage weight files, pickles that run code, shard names that escape the
folder and configs that are not objects are in test_checkpoints.py.)"""

from __future__ import annotations

import json
import os

import pytest
import torch

import compactbert as cb
from compactbert import registry
from conftest import FAMILIES, TINY, oracle_model, save_oracle


@pytest.mark.parametrize("changes, message", [
    ({"vocab_size": 10**12}, "7.69e\\+14 parameters \\(vocab_size 1000000000000.* more than this machine.s"),
    ({"num_hidden_layers": 10**6}, "vocab_size 30522, 1000000 layers"),
    ({"hidden_size": 770}, "not divisible by the number of heads"),
    ({"hidden_size": -8}, "sizes must be positive"),
])
def test_absurd_sizes_are_refused_before_allocation(tmp_path, changes, message):
    config = {**cb.BertConfig().to_dict(), **changes}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(cb.ConfigError, match=message):
        cb.AutoModelForMaskedLM.from_pretrained(tmp_path)  # fails on config.json, before any weight is read
    if "num_hidden_layers" in changes or "vocab_size" in changes:
        with pytest.raises(cb.ConfigError, match="more than this machine's"):
            cb.AutoModel.from_config(cb.AutoConfig.from_dict(config))


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", "768", "hidden_size must be an integer, got '768' \\(str\\)"),
    ("hidden_dropout_prob", True, "hidden_dropout_prob must be a number, got True"),
    ("pad_token_id", None, "pad_token_id must be an integer, got None"),
    ("id2label", ["a", "b"], "id2label must be an object or null"),
    ("hidden_act", 3, "hidden_act must be a string"),
])
def test_wrong_types_name_the_file_and_field(tmp_path, field, value, message):
    (tmp_path / "config.json").write_text(json.dumps({**cb.BertConfig().to_dict(), field: value}))
    with pytest.raises(cb.ConfigError, match=f"config.json: BertConfig.{message}"):
        cb.AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_size_estimate_is_close_for_every_family(family):
    """The estimate the refusal uses is within 2% of the parameters of each family's Hub geometry."""
    config = registry.get_family(family).bench[0].config()
    model = cb.AutoModelForMaskedLM.from_config(config)
    assert config.encoder_spec().parameter_count() == pytest.approx(model.num_parameters(), rel=0.02)


def test_integer_tensors_where_weights_belong(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_oracle(oracle_model(TINY["bert"](), "masked_lm"), tmp_path / "model")
    state = load_file(folder / "model.safetensors")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    state[key] = torch.ones_like(state[key], dtype=torch.int64)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(cb.CheckpointError, match=f"{key} holds int64 values .* needs floating-point weights"):
        cb.AutoModelForMaskedLM.from_pretrained(folder)


def test_links_out_of_the_folder_are_refused(tmp_path):
    folder = save_oracle(oracle_model(TINY["bert"](), "masked_lm"), tmp_path / "model")
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(outside)
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(cb.CheckpointError, match="model.safetensors links outside the checkpoint folder"):
        cb.AutoModelForMaskedLM.from_pretrained(folder)
    # a Hub cache snapshot links into its repository's blobs/: allowed
    repo = tmp_path / "models--me--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    outside.rename(repo / "blobs" / "123")
    os.symlink(repo / "blobs" / "123", snapshot / "model.safetensors")
    (folder / "config.json").rename(snapshot / "config.json")
    assert cb.AutoModelForMaskedLM.from_pretrained(snapshot).num_parameters() > 0


def test_oversized_tokenizer_file_is_refused(tmp_path, monkeypatch):
    import compactbert.tokenizer_files as tokenizer_files

    (tmp_path / "tokenizer.json").write_text("{" + " " * 4096 + "}")
    monkeypatch.setattr(tokenizer_files, "_MAX_TOKENIZER_BYTES", 1024)
    with pytest.raises(cb.CheckpointError, match="tokenizer.json is 0 MiB; .* refuses those over 0 MiB"):
        cb.AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("lie", ["shape", "offsets", "header_length"])
def test_safetensors_header_that_lies(tmp_path, lie):
    """A header whose shapes, offsets or length disagree with the data is named, never read past."""
    import struct

    folder = save_oracle(oracle_model(TINY["bert"](), "masked_lm"), tmp_path / "model")
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    key = next(k for k in header if k != "__metadata__")
    if lie == "shape":
        header[key]["shape"] = [10**9]
    elif lie == "offsets":
        header[key]["data_offsets"] = [0, 10**12]
    if lie == "header_length":
        path.write_bytes(struct.pack("<Q", 10**15) + raw[8:])
    else:
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])
    with pytest.raises(cb.CheckpointError, match="model.safetensors"):
        cb.AutoModelForMaskedLM.from_pretrained(folder)
