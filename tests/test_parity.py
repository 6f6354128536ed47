"""Numerical parity with the transformers oracle: worst relative error <= 1e-5 in fp32 at real tokens."""

from __future__ import annotations

import itertools

import pytest
import torch

import compactbert as cb
from conftest import TINY, FAMILIES, max_rel_err, oracle_model, padded_batch, save_oracle, transformers

TOL = 1e-5
LENGTHS = [13, 9, 4, 1]


def compare(config: cb.BaseConfig, tmp_path, token_types: bool = False, lengths=LENGTHS):
    """Load oracle checkpoints of both tasks into compactbert and compare every output."""
    ids, mask = padded_batch(config.vocab_size, lengths, config.pad_token_id)
    kwargs = {}
    if token_types:
        tt = torch.zeros_like(ids)
        tt[:, ids.shape[1] // 2:] = 1
        kwargs["token_type_ids"] = tt
    errors = {}
    for task, auto in (("base", cb.AutoModel), ("masked_lm", cb.AutoModelForMaskedLM)):
        oracle = oracle_model(config, task)
        folder = save_oracle(oracle, tmp_path / task)
        ours = auto.from_pretrained(folder)
        assert not ours.load_report.new_head and not ours.load_report.unexpected, ours.load_report.message()
        with torch.no_grad():
            want = oracle(input_ids=ids, attention_mask=mask, **kwargs)
            got = ours(ids, attention_mask=mask, **kwargs)
        if task == "base":
            errors["hidden"] = max_rel_err(want.last_hidden_state, got.last_hidden_state, mask)
            if getattr(want, "pooler_output", None) is not None:
                errors["pooled"] = max_rel_err(want.pooler_output, got.pooler_output)
            else:
                assert got.pooler_output is None
        else:
            errors["logits"] = max_rel_err(want.logits, got.logits, mask)
    worst = max(errors.values())
    assert worst <= TOL, errors
    return errors


# ------------------------------------------------------------------ Hub configurations

@pytest.mark.slow
def test_bort_hub_configuration(tmp_path):
    compare(cb.BertConfig.bort(), tmp_path)


@pytest.mark.slow
def test_mobilebert_hub_configuration(tmp_path):
    compare(cb.MobileBertConfig(classifier_activation=False), tmp_path)


@pytest.mark.slow
def test_distilbert_hub_configuration(tmp_path):
    compare(cb.DistilBertConfig(), tmp_path)


# ------------------------------------------------------------------ variants

@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_new", "silu"])
def test_bert_activations(tmp_path, activation):
    compare(TINY["bert"](hidden_act=activation), tmp_path)


def test_bert_two_segments(tmp_path):
    compare(TINY["bert"](type_vocab_size=2), tmp_path, token_types=True)


def test_bort_like_single_segment_eps(tmp_path):
    compare(TINY["bert"](type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1), tmp_path)


MOBILE_FLAGS = list(itertools.product([True, False], repeat=3))


@pytest.mark.parametrize("use_bottleneck,bottleneck_attention,shared_qk", MOBILE_FLAGS)
def test_mobilebert_bottleneck_combinations(tmp_path, use_bottleneck, bottleneck_attention, shared_qk):
    changes = dict(use_bottleneck=use_bottleneck, use_bottleneck_attention=bottleneck_attention,
                   key_query_shared_bottleneck=shared_qk)
    if use_bottleneck and not bottleneck_attention and not shared_qk:
        changes["intra_bottleneck_size"] = 32  # attention reads the full width: must equal hidden_size
    config = TINY["mobilebert"](**changes)
    if use_bottleneck and bottleneck_attention and shared_qk:
        # transformers builds a shared q/k bottleneck it never uses; compactbert does not build it
        # and reports its weights as unused.
        oracle = oracle_model(config, "base")
        folder = save_oracle(oracle, tmp_path / "unused")
        ours = cb.AutoModel.from_pretrained(folder)
        assert any("bottleneck.attention" in k for k in ours.load_report.unused)
        ids, mask = padded_batch(config.vocab_size, LENGTHS, 0)
        with torch.no_grad():
            assert max_rel_err(oracle(input_ids=ids, attention_mask=mask).last_hidden_state,
                               ours(ids, mask).last_hidden_state, mask) <= TOL
    else:
        compare(config, tmp_path)


@pytest.mark.parametrize("changes", [
    dict(normalization_type="layer_norm"),
    dict(trigram_input=False),  # embedding_size != hidden_size: transformation still applies
    dict(trigram_input=False, embedding_size=32),  # no transformation at all
    dict(num_feedforward_networks=1),
    dict(classifier_activation=True),  # tanh pooler with weights
    dict(hidden_act="gelu", type_vocab_size=3),
])
def test_mobilebert_variants(tmp_path, changes):
    compare(TINY["mobilebert"](**changes), tmp_path, token_types="type_vocab_size" in changes)


def test_mobilebert_token_types(tmp_path):
    compare(TINY["mobilebert"](), tmp_path, token_types=True)


@pytest.mark.parametrize("changes", [dict(sinusoidal_pos_embds=True), dict(activation="relu"),
                                     dict(n_layers=3, n_heads=2)])
def test_distilbert_variants(tmp_path, changes):
    compare(TINY["distilbert"](**changes), tmp_path)


def test_sinusoidal_table_is_loaded_not_regenerated(tmp_path):
    config = TINY["distilbert"](sinusoidal_pos_embds=True)
    oracle = oracle_model(config, "base")  # perturbed: no longer a sinusoid
    ours = cb.AutoModel.from_pretrained(save_oracle(oracle, tmp_path / "m"))
    assert torch.equal(ours.encoder.embeddings.position.weight,
                       oracle.embeddings.position_embeddings.weight)


def test_sinusoidal_init_matches_transformers():
    config = TINY["distilbert"](sinusoidal_pos_embds=True)
    fresh = cb.AutoModel.from_config(config)
    oracle = transformers.DistilBertModel(transformers.AutoConfig.for_model(
        "distilbert", **{k: v for k, v in config.to_dict().items() if k != "model_type"}))
    assert torch.allclose(fresh.encoder.embeddings.position.weight,
                          oracle.embeddings.position_embeddings.weight, atol=1e-6)


# ------------------------------------------------------------------ padding invariance

@pytest.mark.parametrize("family", FAMILIES)
def test_padding_invariance(tmp_path, family, tiny_checkpoint):
    """A sentence's outputs do not depend on what else is in its batch."""
    model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint(family))
    config = model.config
    ids, mask = padded_batch(config.vocab_size, [5, 17, 11], config.pad_token_id, seed=3)
    with torch.no_grad():
        batch = model(ids, mask).logits
        for row, n in enumerate([5, 17, 11]):
            alone = model(ids[row:row + 1, :n]).logits[0]
            assert max_rel_err(alone, batch[row, :n]) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_fully_masked_row_is_finite(family, tiny_checkpoint):
    model = cb.AutoModel.from_pretrained(tiny_checkpoint(family, "base"))
    ids, mask = padded_batch(model.config.vocab_size, [6, 6], model.config.pad_token_id)
    mask[1] = 0
    with torch.no_grad():
        out = model(ids, mask).last_hidden_state
    assert torch.isfinite(out).all()


def test_masked_lm_loss_matches_oracle(tmp_path):
    config = TINY["bert"]()
    oracle = oracle_model(config)
    ours = cb.AutoModelForMaskedLM.from_pretrained(save_oracle(oracle, tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, LENGTHS, 0)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 0] = 7, 11, 42
    with torch.no_grad():
        want = oracle(input_ids=ids, attention_mask=mask, labels=labels).loss
        got = ours(ids, mask, labels=labels).loss
        positions = labels != -100
        only = ours(ids, mask, labels=labels, positions=positions)
    assert abs(want.item() - got.item()) <= TOL * abs(want.item())
    assert abs(only.loss.item() - got.item()) <= TOL * abs(got.item())
    assert only.logits.shape == (3, config.vocab_size)


# ------------------------------------------------------------------ optimised paths equal the plain path

@pytest.mark.parametrize("config", [
    TINY["bert"](), TINY["distilbert"](), TINY["mobilebert"](),
    TINY["mobilebert"](use_bottleneck_attention=True),
    TINY["mobilebert"](key_query_shared_bottleneck=False, intra_bottleneck_size=32),
    TINY["mobilebert"](use_bottleneck=False), TINY["bert"](num_hidden_layers=1),
], ids=lambda c: c.model_type)
def test_positions_path_equals_full_logits(tmp_path, config):
    """Logits only at selected tokens (last layer computing only those queries) = full logits there."""
    model = cb.AutoModelForMaskedLM.from_pretrained(save_oracle(oracle_model(config), tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, [13, 9, 4, 1], config.pad_token_id)
    positions = torch.zeros_like(mask, dtype=torch.bool)
    positions[0, [0, 5, 12]] = True  # several in one row
    positions[2, 3] = True  # row 1 and row 3 select nothing
    with torch.no_grad():
        for m in (mask, None):  # packed (padding present) and unpacked (no mask: every token is real)
            full = model(ids, m).logits
            part = model(ids, m, positions=positions).logits
            assert part.shape == (4, config.vocab_size)
            assert max_rel_err(full[positions], part) <= TOL
        full = model(ids, mask).logits
        unpadded = model(ids[:1, :13], positions=positions[:1, :13]).logits
        assert max_rel_err(full[0][positions[0]], unpadded) <= TOL


def test_positions_on_padding_are_rejected(tiny_checkpoint):
    model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint("bert"))
    ids, mask = padded_batch(99, [5, 2], 0)
    positions = torch.zeros_like(mask, dtype=torch.bool)
    positions[1, 4] = True
    with pytest.raises(ValueError, match="positions select padding tokens"):
        model(ids, mask, positions=positions)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_positions_of_hidden_state_are_zero(family, tiny_checkpoint):
    model = cb.AutoModel.from_pretrained(tiny_checkpoint(family, "base"))
    ids, mask = padded_batch(model.config.vocab_size, [6, 3], model.config.pad_token_id)
    with torch.no_grad():
        hidden = model(ids, mask).last_hidden_state
    assert torch.count_nonzero(hidden[1, 3:]) == 0 and torch.count_nonzero(hidden[1, :3]) > 0
