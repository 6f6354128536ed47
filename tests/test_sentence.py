"""compactbert.SentenceTransformer against sentence-transformers on the same folders: the real
all-MiniLM-L6-v2 (max_seq_length 256, Normalize) and tiny folders with every pooling mode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import compactbert as cb
from conftest import DEVICES, minilm_folder, tokenized_checkpoint

st = pytest.importorskip("sentence_transformers")

SENTENCES = ["A man is eating food.", "  A man is eating a piece of bread.  ", "The girl is carrying a baby.",
             "A monkey is playing drums.", "Ein Mann isst.", "?!", "unbelievably uncharacteristic words"]
# Longer than max_seq_length (256 tokens): truncated as sentence-transformers truncates.
LONG = " ".join(["Photosynthesis converts light energy into chemical energy stored in sugars."] * 40)


@pytest.fixture(scope="module")
def minilm():
    return minilm_folder()


@pytest.mark.parametrize("device", DEVICES)
def test_minilm_equals_sentence_transformers(minilm, device):
    texts = SENTENCES + [LONG, LONG[:700]]
    theirs = st.SentenceTransformer(str(minilm), device=device)
    ours = cb.SentenceTransformer(minilm, device=device)
    assert ours.max_seq_length == theirs.max_seq_length == 256 and ours.normalize
    expected = theirs.encode(texts, batch_size=3)
    got = ours.encode(texts, batch_size=3)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == expected.shape == (9, 384)
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the Normalize module
    assert ours.get_embedding_dimension() == ours.get_sentence_embedding_dimension() == theirs.get_embedding_dimension()


def test_return_types_and_options_match(minilm):
    theirs = st.SentenceTransformer(str(minilm), device="cpu")
    ours = cb.SentenceTransformer(minilm)
    calls = [dict(), dict(convert_to_tensor=True), dict(convert_to_numpy=False), dict(normalize_embeddings=True),
             dict(truncate_dim=64), dict(truncate_dim=64, normalize_embeddings=True), dict(prompt="query: "),
             dict(batch_size=1, show_progress_bar=False)]
    for inputs in (SENTENCES[:4], SENTENCES[0]):
        for kwargs in calls:
            expected, got = theirs.encode(inputs, **kwargs), ours.encode(inputs, **kwargs)
            assert type(got) is type(expected), kwargs
            if isinstance(expected, list):
                assert len(got) == len(expected) and all(isinstance(g, torch.Tensor) for g in got)
                expected, got = torch.stack(expected), torch.stack(got)
            assert tuple(got.shape) == tuple(expected.shape), kwargs
            assert float(np.abs(np.asarray(got) - np.asarray(expected)).max()) < 1e-5, kwargs
    tokens, expected = ours.encode(SENTENCES[:2], output_value="token_embeddings"), theirs.encode(
        SENTENCES[:2], output_value="token_embeddings")
    assert [tuple(t.shape) for t in tokens] == [tuple(t.shape) for t in expected]
    assert max(float((a - b).abs().max()) for a, b in zip(tokens, expected)) < 1e-5
    assert ours.encode([]).shape == theirs.encode([]).shape


POOLINGS = [["cls"], ["max"], ["mean"], ["mean_sqrt_len_tokens"], ["weightedmean"], ["lasttoken"], ["cls", "mean"]]


@pytest.mark.parametrize("modes", POOLINGS, ids="+".join)
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-keys", "pooling_mode"])
def test_pooling_modes_equal_sentence_transformers(tmp_path, modes, legacy):
    folder = tokenized_checkpoint(tmp_path / "model", "bert", task="base")
    (folder / "1_Pooling").mkdir()
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    pooling = ({key: mode in modes for mode, key in cb.sentence.POOLING_MODES.items()} if legacy
               else {"pooling_mode": modes if len(modes) > 1 else modes[0]})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, **pooling}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": True}))
    texts = ["The Quick brown fox", "jumps over the lazy dog and keeps running far away", "hello"]
    expected = st.SentenceTransformer(str(folder), device="cpu").encode(texts)
    ours = cb.SentenceTransformer(folder)
    assert not ours.normalize and ours.pooling_modes == tuple(modes)
    got = ours.encode(texts)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5


def test_folder_errors(tmp_path, minilm):
    folder = tmp_path / "m"
    shutil.copytree(minilm, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(cb.ConfigError, match="not sentence_transformers.models.Dense"):
        cb.SentenceTransformer(folder)
    ours = cb.SentenceTransformer(minilm)
    with pytest.raises(cb.InputError, match="prompt_name 'query'"):
        ours.encode("x", prompt_name="query")
    with pytest.raises(cb.InputError, match="precision"):
        ours.encode("x", precision="int8")
    with pytest.raises(TypeError, match="unexpected"):
        cb.SentenceTransformer(minilm, trust_remote_code=True)
