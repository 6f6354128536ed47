"""What RoBERTa / DistilRoBERTa add to the BERT layout (compactbert/families/roberta.py): position ids
that count real tokens from pad_token_id + 1, the 512-token limit of a 514-row table, the GELU masked-LM
head, the classification head on the first token, and the registry entries. Parity of every head,
saving, fill-mask and tokenizers comes from the registry-parametrised tests."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from conftest import TINY, max_rel_err, oracle_model, padded_batch, save_oracle, transformers


def _pair(tmp_path, task="masked_lm", **changes):
    config = TINY["roberta"](**changes)
    oracle = oracle_model(config, task)
    folder = save_oracle(oracle, tmp_path / task)
    return oracle, cb.AutoModelForMaskedLM.from_pretrained(folder) if task == "masked_lm" else folder


def test_left_padding_counts_positions_from_the_first_real_token(tmp_path):
    """transformers numbers RoBERTa positions by counting non-padding tokens, so a left-padded row
    equals the same row unpadded; compactbert does the same."""
    oracle, ours = _pair(tmp_path)
    ids, mask = padded_batch(99, [9, 5, 2], pad_id=1)
    left_ids, left_mask = ids.clone(), mask.clone()
    for row, n in enumerate([9, 5, 2]):  # move the padding to the left
        left_ids[row] = torch.cat([ids[row, n:], ids[row, :n]])
        left_mask[row] = torch.cat([mask[row, n:], mask[row, :n]])
    with torch.no_grad():
        expected = oracle(input_ids=left_ids, attention_mask=left_mask).logits
        got = ours(left_ids, left_mask).logits
        alone = ours(ids[1:2, :5]).logits
    assert max_rel_err(expected, got, left_mask) < 1e-5
    torch.testing.assert_close(got[1, -5:], alone[0], rtol=1e-5, atol=1e-5)


def test_limit_is_max_positions_less_the_padding_offset(tmp_path):
    _, ours = _pair(tmp_path)  # 66 position rows: 64 tokens
    assert ours.config.max_input_length == 64
    ours(torch.full((1, 64), 5))
    with pytest.raises(cb.InputError, match="input length 65 exceeds this model's limit of 64 positions"):
        ours(torch.full((1, 65), 5))


def test_masked_lm_head_is_gelu_whatever_hidden_act(tmp_path):
    oracle, ours = _pair(tmp_path, hidden_act="relu")
    ids, mask = padded_batch(99, [7, 3], pad_id=1)
    with torch.no_grad():
        assert max_rel_err(oracle(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits, mask) < 1e-5


def test_sequence_classifier_is_robertas_head(tmp_path):
    """classifier.dense / classifier.out_proj on the first token (no pooler), loaded and saved under
    transformers' names; a base checkpoint's pooler is reported unused, the head new."""
    _, folder = _pair(tmp_path, "sequence_classification", id2label={0: "a", 1: "b", 2: "c"})
    model = cb.AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.pooler is None and model.classifier.out_features == 3
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= set(model.hub_state_dict())
    base = save_oracle(oracle_model(TINY["roberta"](), "base"), tmp_path / "base")
    _, info = cb.AutoModelForSequenceClassification.from_pretrained(base, output_loading_info=True)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(base, output_loading_info=True)[1]
    assert sorted(info["missing_keys"]) == sorted(theirs["missing_keys"])
    assert sorted(info["unexpected_keys"]) == sorted(theirs["unexpected_keys"])


def test_registry_entries():
    family = cb.registry.get_family("roberta")
    assert family.config_class is cb.RobertaConfig and not family.token_types
    assert "next_sentence" not in family.tasks and "multiple_choice" in family.tasks
    names = {c.alias: c.repo_id for c in cb.list_checkpoints()}
    assert names["distilroberta-base"] == "distilbert/distilroberta-base"
    with pytest.raises(cb.ConfigError, match="roberta checkpoints have no next-sentence head"):
        cb.AutoModelForNextSentencePrediction.from_config(TINY["roberta"]())
