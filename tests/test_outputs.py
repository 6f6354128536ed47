"""transformers-style outputs: keys, indices, to_tuple(), return_dict=False, and output_hidden_states /
output_attentions equal to the oracle's (within 1e-5, at real tokens) for every family and
MobileBERT variant."""

from __future__ import annotations

import itertools

import pytest
import torch

import compactbert as cb
from conftest import HEAD_CLASSES, TINY, max_rel_err, oracle_model, padded_batch, save_oracle, transformers

TOL = 1e-5
LENGTHS = [11, 7, 3]

MOBILE_VARIANTS = [dict(use_bottleneck=b, use_bottleneck_attention=a, key_query_shared_bottleneck=s)
                   for b, a, s in itertools.product([True, False], repeat=3)
                   if not (b and not a and not s)]  # that one needs intra_bottleneck_size == hidden_size
MOBILE_VARIANTS += [dict(use_bottleneck=True, use_bottleneck_attention=False, key_query_shared_bottleneck=False,
                         intra_bottleneck_size=32),
                    dict(normalization_type="layer_norm"), dict(trigram_input=False),
                    dict(trigram_input=False, embedding_size=32), dict(num_feedforward_networks=1)]
CONFIGS = ([("bert", {}), ("bert", dict(type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)),
            ("distilbert", {}), ("distilbert", dict(sinusoidal_pos_embds=True))]
           + [("mobilebert", v) for v in MOBILE_VARIANTS])


@pytest.mark.parametrize("family,changes", CONFIGS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CONFIGS)])
def test_hidden_states_and_attentions_equal_transformers(tmp_path, family, changes):
    config = TINY[family](**changes)
    folder = save_oracle(oracle_model(config, "base"), tmp_path / "base")
    oracle = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    ours = cb.AutoModel.from_pretrained(folder)
    ids, mask = padded_batch(config.vocab_size, LENGTHS, config.pad_token_id)
    with torch.no_grad():
        want = oracle(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        got = ours(ids, mask, output_hidden_states=True, output_attentions=True)
    assert len(got.hidden_states) == len(want.hidden_states) == config.encoder_spec().num_layers + 1
    for layer, (w, g) in enumerate(zip(want.hidden_states, got.hidden_states)):
        assert w.shape == g.shape
        assert max_rel_err(w, g, mask) <= TOL, f"hidden state {layer}"
    assert torch.equal(got.hidden_states[-1], got.last_hidden_state)
    assert len(got.attentions) == len(want.attentions) == config.encoder_spec().num_layers
    for layer, (w, g) in enumerate(zip(want.attentions, got.attentions)):
        assert w.shape == g.shape  # (B, heads, T, T)
        real = mask.bool()[:, None, :, None].expand_as(w)  # rows of real query tokens
        assert max_rel_err(w[real], g[real]) <= TOL, f"attention {layer}"
        assert torch.allclose(g.sum(-1), torch.ones_like(g.sum(-1)), atol=1e-5)
    # Without padding the whole tensors agree, padding positions included.
    full = torch.ones_like(mask)
    with torch.no_grad():
        want = oracle(input_ids=ids, attention_mask=full, output_hidden_states=True, output_attentions=True)
        got = ours(ids, full, output_hidden_states=True, output_attentions=True)
    assert max(max_rel_err(w, g) for w, g in zip(want.attentions, got.attentions)) <= TOL
    assert max(max_rel_err(w, g) for w, g in zip(want.hidden_states, got.hidden_states)) <= TOL


@pytest.mark.parametrize("task", ["base", "masked_lm", "sequence_classification", "token_classification",
                                  "question_answering", "next_sentence", "pretraining", "multiple_choice"])
def test_keys_indices_and_tuples_follow_transformers(tmp_path, task):
    config = TINY["bert"]()
    folder = save_oracle(oracle_model(config, task), tmp_path / task)
    oracle = transformers.AutoModel.from_pretrained(folder) if task == "base" else getattr(
        transformers, type(oracle_model(config, task)).__name__).from_pretrained(folder)
    ours = HEAD_CLASSES[task].from_pretrained(folder)
    ids, mask = padded_batch(config.vocab_size, LENGTHS, config.pad_token_id)
    if task == "multiple_choice":
        ids, mask = ids[None].repeat(2, 1, 1), mask[None].repeat(2, 1, 1)
    labels = {"masked_lm": {"labels": ids}, "sequence_classification": {"labels": torch.tensor([0, 1, 0])},
              "token_classification": {"labels": torch.zeros_like(ids)},
              "question_answering": {"start_positions": torch.tensor([1, 2, 0]),
                                     "end_positions": torch.tensor([2, 3, 1])},
              "next_sentence": {"labels": torch.tensor([0, 1, 1])},
              "pretraining": {"labels": ids, "next_sentence_label": torch.tensor([0, 1, 1])},
              "multiple_choice": {"labels": torch.tensor([0, 2])}}.get(task, {})
    for extra in ({}, labels, {**labels, "output_hidden_states": True, "output_attentions": True}):
        with torch.no_grad():
            want = oracle(input_ids=ids, attention_mask=mask, **extra)
            got = ours(ids, mask, **extra)
            as_tuple = ours(ids, mask, return_dict=False, **extra)
        # BertModel also reports decoder cross-attentions (an empty entry for an encoder), last
        expected = [k for k in want.keys() if k != "cross_attentions"]
        assert list(got.keys()) == expected, (task, extra)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == len(expected)
        for n, key in enumerate(expected):
            assert got[key] is getattr(got, key) and got[n] is got[key]
            if isinstance(got[key], torch.Tensor):
                assert torch.equal(as_tuple[n], got[key])
                assert torch.equal(want.to_tuple()[n], want[key])  # the same position in transformers' tuple
        assert list(dict(got)) == expected
    with pytest.raises(KeyError, match="is not in this output"):
        ours(ids, mask)["loss"]


def test_hidden_states_cannot_combine_with_positions(tmp_path):
    folder = save_oracle(oracle_model(TINY["bert"](), "masked_lm"), tmp_path / "m")
    model = cb.AutoModelForMaskedLM.from_pretrained(folder)
    ids, mask = padded_batch(model.config.vocab_size, LENGTHS, model.config.pad_token_id)
    with pytest.raises(cb.InputError, match="cannot be combined with positions"):
        model(ids, mask, positions=mask.bool(), output_hidden_states=True)
    out = model(ids, mask, positions=mask.bool())
    assert "last_hidden_state" not in out.keys() and out.last_hidden_state.shape[0] == int(mask.sum())
