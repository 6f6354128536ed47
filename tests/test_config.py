"""Configs: Hub field names, round trips that keep unknown fields, validation with clear messages."""

from __future__ import annotations

import json

import pytest

import compactbert as cb
from conftest import TINY, oracle_config


@pytest.mark.parametrize("config", [cb.BertConfig.bort(), cb.MobileBertConfig(), cb.DistilBertConfig(),
                                    TINY["bert"](), TINY["mobilebert"](), TINY["distilbert"]()])
def test_transformers_reads_our_config_fields(config):
    theirs = oracle_config(config).to_dict()
    for key, value in config.to_dict().items():
        if key in theirs and key not in ("architectures", "id2label", "label2id"):
            assert theirs[key] == value, key


def test_round_trip_keeps_unknown_fields(tmp_path):
    data = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 50,
            "num_hidden_layers": 2, "tokenizer_class": "RobertaTokenizer", "gradient_checkpointing": False,
            "transformers_version": "4.8.2", "id2label": {"0": "NEG", "1": "POS"}}
    config = cb.AutoConfig.from_dict(data)
    assert isinstance(config, cb.BertConfig)
    assert config.id2label == {0: "NEG", 1: "POS"} and config.label2id == {"NEG": 0, "POS": 1}
    out = config.to_dict()
    assert out["tokenizer_class"] == "RobertaTokenizer" and out["gradient_checkpointing"] is False
    assert "transformers_version" not in out  # describes the saving run, not the model
    assert cb.AutoConfig.from_dict(json.loads(config.to_json_string())) == config


def test_hub_mobilebert_config_is_not_overridden_by_class_defaults():
    hub = {"model_type": "mobilebert", "classifier_activation": False, "true_hidden_size": 999}
    config = cb.AutoConfig.from_dict(hub)
    assert config.classifier_activation is False and config.pooler == "first_token"
    assert config.true_hidden_size == 128  # derived, the file's value is ignored
    assert config.to_dict()["true_hidden_size"] == 128


def test_num_labels_field():
    config = cb.AutoConfig.from_dict({"model_type": "distilbert", "num_labels": 3})
    assert config.num_labels == 3 and config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


@pytest.mark.parametrize("make,message", [
    (lambda: cb.BertConfig(hidden_size=30, num_attention_heads=4), "not divisible by the number of heads"),
    (lambda: cb.BertConfig(hidden_act="gelu_fast"), "hidden_act 'gelu_fast' is not supported; choose one of"),
    (lambda: cb.BertConfig(position_embedding_type="relative_key"), "only 'absolute'"),
    (lambda: cb.BertConfig(pad_token_id=40000), "pad_token_id 40000 is outside the vocabulary"),
    (lambda: cb.MobileBertConfig(normalization_type="batch_norm"), "'no_norm' or 'layer_norm'"),
    (lambda: cb.MobileBertConfig(embedding_size=1024), "embedding_size"),
    (lambda: cb.DistilBertConfig(n_layers=0), "sizes must be positive"),
    (lambda: cb.BertConfig(problem_type="ranking"), "unknown problem_type"),
])
def test_validation_messages(make, message):
    with pytest.raises(cb.ConfigError, match=message):
        make()


def test_wrong_family_class(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    with pytest.raises(cb.ConfigError, match="holds a 'distilbert' model, not 'bert'"):
        cb.BertConfig.from_pretrained(tmp_path)


def test_auto_config_for_model_type():
    assert isinstance(cb.AutoConfig.for_model_type("mobilebert"), cb.MobileBertConfig)
    with pytest.raises(cb.ConfigError, match="'xlnet' is not supported; supported: albert, bert, distilbert"):
        cb.AutoConfig.for_model_type("xlnet")
