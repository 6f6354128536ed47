"""text-classification and feature-extraction pipelines: equal to transformers' on the same folders."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from conftest import minilm_folder, tokenized_checkpoint, transformers

TEXTS = ["a wonderful, moving film", "dull and far too long", "", "It's fine. Nothing more."]


def _same(got, want):
    if isinstance(want, dict):
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) <= 1e-5
    else:
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)


@pytest.fixture(scope="module", params=[
    ("distilbert", {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}}),
    ("mobilebert", {"id2label": {0: "a", 1: "b", 2: "c"}, "classifier_activation": True}),
    ("bert", {"id2label": {0: "x", 1: "y", 2: "z"}, "problem_type": "multi_label_classification"}),
], ids=["distilbert-2", "mobilebert-3", "bort-multilabel"])
def classifiers(request, tmp_path_factory):
    family, changes = request.param
    folder = tokenized_checkpoint(tmp_path_factory.mktemp("clf") / family, family, "sequence_classification",
                                  **changes)
    return (cb.pipeline("text-classification", model=folder),
            transformers.pipeline("text-classification", model=str(folder), device="cpu"))


def test_text_classification_equals_transformers(classifiers):
    ours, theirs = classifiers
    _same(ours(TEXTS[0]), theirs(TEXTS[0]))  # one text: a list of one dict
    _same(ours(TEXTS), theirs(TEXTS))  # a list: one dict per text
    _same(ours(TEXTS[1], top_k=None), theirs(TEXTS[1], top_k=None))  # every label, sorted
    _same(ours(TEXTS, top_k=2), theirs(TEXTS, top_k=2))
    _same(ours(TEXTS, top_k=None, function_to_apply="none"), theirs(TEXTS, top_k=None, function_to_apply="none"))
    pair = {"text": "the plot", "text_pair": "was predictable"}
    _same(ours(pair), theirs(pair))
    _same(ours([pair, pair]), theirs([pair, pair]))


def test_text_classification_errors(classifiers):
    ours, _ = classifiers
    with pytest.raises(cb.InputError, match="function_to_apply must be"):
        ours("x", function_to_apply="relu")
    with pytest.raises(cb.InputError, match="every input has a text_pair or none"):
        ours([{"text": "a", "text_pair": "b"}, {"text": "c"}])
    with pytest.raises(cb.InputError, match="must be a string or a dict"):
        ours([3])


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "Ünïcödé and emoji 🤖"]


@pytest.fixture(scope="module")
def embedder():
    return cb.pipeline("sentence-embedding", model=minilm_folder())


@pytest.mark.parametrize("family", ["bert", "mobilebert", "distilbert"])
def test_feature_extraction_equals_transformers(tmp_path, family):
    """Token vectors with transformers' shapes and types: (1, T, H) per text, nested lists or tensors."""
    folder = tokenized_checkpoint(tmp_path / family, family, "base")
    theirs = transformers.pipeline("feature-extraction", model=str(folder), device="cpu")
    ours = cb.pipeline("feature-extraction", model=folder)
    texts = SENTENCES[:3]
    for inputs in (texts, texts[0]):
        expected, got = theirs(inputs), ours(inputs, batch_size=2)
        assert type(got) is type(expected) and len(got) == len(expected)
        assert torch.allclose(torch.as_tensor(got[0] if isinstance(inputs, list) else got),
                              torch.as_tensor(expected[0] if isinstance(inputs, list) else expected), atol=1e-5)
    expected, got = theirs(texts, return_tensors=True), ours(texts, return_tensors=True)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max(float((g - e).abs().max()) for g, e in zip(got, expected)) < 1e-5
    long = "word " * 600
    with pytest.raises(cb.InputError, match="truncat"):
        ours(long)
    assert ours(long, truncation=True, return_tensors=True).shape[1] == 64  # the tiny model's limit


def test_sentence_embeddings_equal_reference_recipe(embedder):
    """Real all-MiniLM-L6-v2 weights: mean pooling over the attention mask, then normalisation."""
    folder = minilm_folder()
    model = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    got = embedder(SENTENCES, normalize=True, batch_size=2)
    assert got.shape == (5, 384)
    assert (got - want).abs().max() <= 1e-5
    similarity = got @ got.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[0, 3]


def test_token_vectors_and_cls(embedder):
    tokens = embedder(SENTENCES[:2], pooling=None)
    lengths = [len(ids) for ids in embedder.tokenizer(SENTENCES[:2])["input_ids"]]
    assert [t.shape for t in tokens] == [(n, 384) for n in lengths]
    cls = embedder(SENTENCES[:2], pooling="cls")
    assert torch.allclose(cls, torch.stack([t[0] for t in tokens]), atol=1e-6)
    assert embedder(SENTENCES[0]).shape == (384,)
    with pytest.raises(cb.InputError, match="pooling must be"):
        embedder("x", pooling="max")


def test_pipeline_model_instance_checks(embedder):
    with pytest.raises(cb.InputError, match="text-classification needs a ForSequenceClassification"):
        cb.pipeline("text-classification", model=embedder.model, tokenizer=embedder.tokenizer)


NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "MISC"}
NER_TEXTS = ["Angela Merkel visited Washington and Ouagadougou yesterday.",
             "supercalifragilistic Zürich naïve café", "", "x"]


@pytest.fixture(scope="module", params=["distilbert", "mobilebert", "bert"])
def taggers(request, tmp_path_factory):
    family = request.param
    folder = tokenized_checkpoint(tmp_path_factory.mktemp("ner") / family, family, "token_classification",
                                  id2label=NER_LABELS)
    return (cb.pipeline("token-classification", model=folder),
            transformers.pipeline("token-classification", model=str(folder), device="cpu"))


def _same_entities(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, list):
            _same_entities(g, w)
            continue
        assert set(g) == set(w)
        for key in w:
            if key == "score":
                assert abs(g[key] - float(w[key])) <= 1e-5
            else:
                assert g[key] == w[key], key


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "max", "average"])
def test_token_classification_equals_transformers(taggers, strategy):
    import warnings

    ours, theirs = taggers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BPE's word heuristic warns in both
        for ignore in (["O"], []):
            _same_entities(ours(NER_TEXTS[0], aggregation_strategy=strategy, ignore_labels=ignore),
                           theirs(NER_TEXTS[0], aggregation_strategy=strategy, ignore_labels=ignore))
        _same_entities(ours(NER_TEXTS, aggregation_strategy=strategy, ignore_labels=[]),
                       theirs(NER_TEXTS, aggregation_strategy=strategy, ignore_labels=[]))


def test_token_classification_errors(taggers):
    ours, _ = taggers
    with pytest.raises(cb.InputError, match="aggregation_strategy must be one of"):
        ours("x", aggregation_strategy="longest")
