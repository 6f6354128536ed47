"""Model inputs: wrong shapes, ids and lengths get specific errors, never an IndexError."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from conftest import TINY


@pytest.fixture(scope="module")
def bert():
    return cb.AutoModelForMaskedLM.from_config(TINY["bert"]())


@pytest.fixture(scope="module")
def distil():
    return cb.AutoModel.from_config(TINY["distilbert"]())


def test_ids_out_of_vocabulary(bert):
    with pytest.raises(cb.InputError, match=r"input_ids contains 99, outside \[0, 99\)"):
        bert(torch.tensor([[1, 2, 99]]))
    with pytest.raises(cb.InputError, match="input_ids contains -1"):
        bert(torch.tensor([[1, -1]]))


def test_too_long(bert):
    with pytest.raises(cb.InputError, match="input length 65 exceeds this model's limit of 64 positions"):
        bert(torch.ones(1, 65, dtype=torch.long))


def test_wrong_rank_and_dtype(bert):
    with pytest.raises(cb.InputError, match=r"2-D tensor \(batch, length\), got \(3,\)"):
        bert(torch.tensor([1, 2, 3]))
    with pytest.raises(cb.InputError, match="integer token ids"):
        bert(torch.ones(1, 3))
    with pytest.raises(cb.InputError, match="empty"):
        bert(torch.ones(1, 0, dtype=torch.long))


def test_mask_and_type_shapes(bert):
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(cb.InputError, match=r"attention_mask has shape \(2, 3\)"):
        bert(ids, torch.ones(2, 3))
    with pytest.raises(cb.InputError, match=r"token_type_ids contains 2"):
        bert(ids, token_type_ids=torch.full((2, 4), 2))


def test_labels_shape(bert):
    with pytest.raises(ValueError, match="labels must have the shape of input_ids"):
        bert(torch.ones(2, 4, dtype=torch.long), labels=torch.ones(2, 3, dtype=torch.long))


def test_distilbert_accepts_zero_token_types(distil):
    ids = torch.randint(1, 99, (2, 5))
    with torch.no_grad():
        plain = distil(ids).last_hidden_state
        zeros = distil(ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    assert torch.equal(plain, zeros)
    with pytest.raises(cb.InputError, match="no token types.*all zero"):
        distil(ids, token_type_ids=torch.ones_like(ids))


def test_positions_mask_shape(bert):
    with pytest.raises(ValueError, match="positions must be a bool mask"):
        bert(torch.ones(1, 4, dtype=torch.long), positions=torch.tensor([1]))


def test_auto_classes_are_factories():
    with pytest.raises(TypeError, match="factory"):
        cb.AutoModel()
