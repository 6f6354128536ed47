"""What ALBERT adds to the BERT layout (compactbert/families/albert.py): factorised embeddings, layers
shared across depth, the masked-LM head at embedding width, the sentence-order head, and SentencePiece's
"▁" word starts in the pipelines. Parity of every head, saving, fill-mask and tokenizers comes from the
registry-parametrised tests."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from conftest import TINY, max_rel_err, oracle_model, padded_batch, save_oracle, tokenized_checkpoint, transformers


@pytest.mark.parametrize("layers, groups", [(4, 2), (3, 2), (6, 3), (2, 1)])
def test_shared_layers_follow_transformers_schedule(tmp_path, layers, groups):
    """`groups` distinct layers serve `layers` depths (layer i runs group int(i / (layers / groups)));
    every hidden state equals transformers', and the model holds only the distinct weights."""
    config = TINY["albert"](num_hidden_layers=layers, num_hidden_groups=groups)
    oracle = oracle_model(config, "base")
    ours = cb.AutoModel.from_pretrained(save_oracle(oracle, tmp_path / "base"))
    assert len(ours.encoder.layers) == groups
    assert ours.num_parameters() == sum(p.numel() for p in oracle.parameters())
    ids, mask = padded_batch(99, [9, 4, 1], 0)
    with torch.no_grad():
        want = oracle(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = ours(ids, mask, output_hidden_states=True)
    assert len(got.hidden_states) == len(want.hidden_states) == layers + 1
    for a, b in zip(want.hidden_states, got.hidden_states):
        assert max_rel_err(a, b, mask) < 1e-5
    assert max_rel_err(want.pooler_output, got.pooler_output) < 1e-5


def test_factorised_embeddings_and_narrow_masked_lm_head():
    model = cb.AutoModelForMaskedLM.from_config(TINY["albert"](embedding_size=16))
    embeddings = model.encoder.embeddings
    assert embeddings.position.weight.shape[1] == embeddings.norm.weight.shape[0] == 16
    assert tuple(embeddings.projection.weight.shape) == (32, 16)
    assert tuple(model.mlm.transform.weight.shape) == (16, 32) and model.mlm.extra is None
    assert model.mlm.decoder is embeddings.word.weight  # tied at embedding width


def test_sentence_order_head_names_and_labels(tmp_path):
    """AlbertForPreTraining's sop_logits and sentence_order_label; next_sentence_label is accepted too."""
    config = TINY["albert"]()
    oracle = oracle_model(config, "pretraining")
    ours = cb.AutoModelForPreTraining.from_pretrained(save_oracle(oracle, tmp_path / "pt"))
    ids, mask = padded_batch(99, [7, 5], 0)
    labels, order = torch.full_like(ids, -100), torch.tensor([0, 1])
    labels[0, 2] = 7
    with torch.no_grad():
        want = oracle(input_ids=ids, attention_mask=mask, labels=labels, sentence_order_label=order)
        got = ours(ids, mask, labels=labels, sentence_order_label=order)
        again = ours(ids, mask, labels=labels, next_sentence_label=order)
    assert got.keys() == ["loss", "prediction_logits", "sop_logits"]
    assert max_rel_err(want.sop_logits, got.sop_logits) < 1e-5
    assert abs(want.loss.item() - got.loss.item()) < 1e-5 and torch.equal(again.loss, got.loss)
    with pytest.raises(cb.InputError, match="not both"):
        ours(ids, mask, labels=labels, next_sentence_label=order, sentence_order_label=order)
    with pytest.raises(cb.ConfigError, match="albert checkpoints have no next-sentence head"):
        cb.AutoModelForNextSentencePrediction.from_config(config)


def test_config_checks():
    with pytest.raises(cb.ConfigError, match="inner_group_num=2 is not supported"):
        TINY["albert"](inner_group_num=2)
    with pytest.raises(cb.ConfigError, match="num_hidden_groups \\(3\\) must be between 1 and num_hidden_layers"):
        TINY["albert"](num_hidden_layers=2, num_hidden_groups=3)


def test_token_classification_groups_words_by_their_start_mark(tmp_path):
    """SentencePiece marks each word's first piece with "▁": words split into pieces come back whole,
    with no 'fallback heuristic' warning (transformers applies its heuristic to every non-WordPiece)."""
    folder = tokenized_checkpoint(tmp_path / "tagger", "albert", "token_classification",
                                  id2label={0: "O", 1: "B-X", 2: "I-X"})
    tagger = cb.pipeline("token-classification", model=folder)
    text = "the quickest brownish foxes"
    pieces = tagger.tokenizer.tokenize(text)
    assert len(pieces) > len(text.split())  # some word is split, so grouping matters
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = tagger(text, aggregation_strategy="first", ignore_labels=[])
    # groups are whole words (never a piece of one), their text as written, covering the sentence
    assert all(text[g["start"]:g["end"]] == g["word"] for g in groups)
    assert " ".join(g["word"] for g in groups) == text
    # every word is one unit, whatever the labels: the words the grouping step makes are the text's words
    encoding = tagger.tokenizer.encode_batch([text])[0]
    scores = torch.rand(len(encoding.ids), 3, generator=torch.Generator().manual_seed(0))
    words = tagger._words(tagger._pre_entities(text, encoding, scores, "first"), "first")
    assert [w["word"] for w in words] == text.split()
    assert [text[w["start"]:w["end"]] for w in words] == text.split()


def test_registry_entries():
    family = cb.registry.get_family("albert")
    assert family.config_class is cb.AlbertConfig and "pretraining" in family.tasks
    assert "next_sentence" not in family.tasks
    assert {c.alias: c.repo_id for c in cb.list_checkpoints()}["albert-base-v2"] == "albert/albert-base-v2"
    assert transformers.AutoConfig.for_model("albert").model_type == "albert"


def test_tokenizer_from_spiece_model_equals_transformers(tmp_path):
    """A folder with only ALBERT's spiece.model (no tokenizer.json): converted with sentencepiece's
    protobuf schema and the tokenizers library, identical to transformers' AlbertTokenizer."""
    sentencepiece = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["The quick brown fox jumps over the lazy dog.", "Café crème, naïve ``quotes''.",
                                 "Plants create energy through photosynthesis.", "ALBERT shares its layers."] * 30))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=60, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=1.0, minloglevel=2)
    folder = tmp_path / "albert"
    folder.mkdir()
    (tmp_path / "spiece.model").rename(folder / "spiece.model")
    (folder / "config.json").write_text('{"model_type": "albert", "vocab_size": 60}')
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "AlbertTokenizer", "do_lower_case": true}')
    ours, theirs = cb.AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert ours.word_start == "▁"
    for text, pair in [("The Quick brown fox.", None), ("Café crème, naïve ``quotes''!", "second  text"),
                       ("", None), ("  spaced   out  ", None), ("a [MASK] here", None), ("ünïcödé ½ ﬁ", "x")]:
        got, want = ours(text, pair), theirs(text, pair)
        assert got["input_ids"] == want["input_ids"], (text, pair)
        assert ours.convert_ids_to_tokens(got["input_ids"]) == theirs.convert_ids_to_tokens(want["input_ids"])
    ids = theirs("The quick brown fox.")["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    (folder / "spiece.model").write_bytes(b"not a protobuf")
    with pytest.raises(cb.CheckpointError, match="spiece.model is not a readable SentencePiece model"):
        cb.AutoTokenizer.from_pretrained(folder)
