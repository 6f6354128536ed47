"""save_pretrained with transformers' arguments: sharded safetensors (max_shard_size), is_main_process,
and the folder changes between layouts. Pushing to the Hub is tested in test_hub.py."""

from __future__ import annotations

import json

import pytest
import torch

import compactbert as cb
from conftest import FAMILIES, TINY, oracle_model, padded_batch, save_oracle, transformers



def _model(family: str, tmp_path):
    folder = save_oracle(oracle_model(TINY[family](), "masked_lm"), tmp_path / "source")
    return cb.AutoModelForMaskedLM.from_pretrained(folder)


def _shards(folder):
    return sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_save_loads_in_transformers_and_back(tmp_path, family):
    model = _model(family, tmp_path)
    out = tmp_path / "sharded"
    limit = sum(t.numel() * t.element_size() for t in model.hub_state_dict().values()) // 3  # ~60 KB for BERT
    model.save_pretrained(out, max_shard_size=limit)
    shards = _shards(out)
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    assert all(name.endswith(f"-of-{len(shards):05d}.safetensors") for name in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.hub_state_dict())
    assert sorted(set(index["weight_map"].values())) == shards
    sizes = {k: t.numel() * t.element_size() for k, t in model.hub_state_dict().items()}
    assert index["metadata"]["total_size"] == sum(sizes.values())
    for shard in shards:  # each shard within the limit, unless one tensor alone exceeds it
        names = [k for k, f in index["weight_map"].items() if f == shard]
        assert sum(sizes[k] for k in names) <= limit or len(names) == 1

    ids, mask = padded_batch(model.config.vocab_size, [7, 4], model.config.pad_token_id)
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    again = cb.AutoModelForMaskedLM.from_pretrained(out)
    with torch.no_grad():
        expected = model(ids, mask).logits
        torch.testing.assert_close(again(ids, mask).logits, expected, rtol=0, atol=0)
        keep = mask.bool()
        torch.testing.assert_close(theirs(input_ids=ids, attention_mask=mask).logits[keep], expected[keep],
                                   rtol=1e-5, atol=1e-5)


def test_changing_layout_leaves_no_stale_weights(tmp_path):
    model = _model("distilbert", tmp_path)
    other = cb.AutoModelForMaskedLM.from_config(model.config)
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")
    model.save_pretrained(out)
    other.save_pretrained(out, max_shard_size="20KB")  # shards replace the single file
    assert not (out / "model.safetensors").exists() and len(_shards(out)) > 1
    loaded = cb.AutoModelForMaskedLM.from_pretrained(out)
    assert torch.equal(loaded.encoder.embeddings.word.weight, other.encoder.embeddings.word.weight)
    many = _shards(out)
    other.save_pretrained(out, max_shard_size="50KB")  # fewer shards: the old ones go
    assert 1 < len(_shards(out)) < len(many)
    assert set(_shards(out)) == set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())
    model.save_pretrained(out)  # one file again: index and shards go
    assert not (out / "model.safetensors.index.json").exists() and _shards(out) == []
    loaded = cb.AutoModelForMaskedLM.from_pretrained(out)
    assert torch.equal(loaded.encoder.embeddings.word.weight, model.encoder.embeddings.word.weight)
    assert (out / "tokenizer.json").read_text() == "{}"  # other files are kept


def test_is_main_process_false_writes_nothing(tmp_path):
    model = _model("bert", tmp_path)
    assert model.save_pretrained(tmp_path / "rank1", is_main_process=False) == tmp_path / "rank1"
    assert not (tmp_path / "rank1").exists()


def test_save_argument_errors(tmp_path):
    model = _model("bert", tmp_path)
    for bad in ("lots", 0, -5, "-5MB", None):
        with pytest.raises(cb.ConfigError, match="max_shard_size"):
            model.save_pretrained(tmp_path / "x", max_shard_size=bad)
    with pytest.raises(cb.ConfigError, match="safetensors only"):
        model.save_pretrained(tmp_path / "x", safe_serialization=False)
    with pytest.raises(TypeError, match="variant"):
        model.save_pretrained(tmp_path / "x", variant="fp16")
    with pytest.raises(TypeError, match="push_to_hub=True"):
        model.save_pretrained(tmp_path / "x", repo_id="org/name")
    assert not (tmp_path / "x").exists()
