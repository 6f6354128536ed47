"""Task heads: logits and losses equal transformers' for every head of every family (<= 1e-5)."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from conftest import FAMILIES, TINY, has_head, max_rel_err, oracle_model, padded_batch, save_oracle, transformers

TOL = 1e-5
AUTO = {
    "sequence_classification": cb.AutoModelForSequenceClassification,
    "token_classification": cb.AutoModelForTokenClassification,
    "question_answering": cb.AutoModelForQuestionAnswering,
    "multiple_choice": cb.AutoModelForMultipleChoice,
    "next_sentence": cb.AutoModelForNextSentencePrediction,
    "pretraining": cb.AutoModelForPreTraining,
}


def _config(family, **changes):
    extra = {"classifier_activation": True} if family == "mobilebert" else {}
    return TINY[family](**{**extra, **changes})


def _inputs(config, task):
    # QA: no padding here, where transformers' loss would depend on padding (see the padding test)
    lengths = [11, 11, 11] if task == "question_answering" else [11, 7, 3]
    ids, mask = padded_batch(config.vocab_size, lengths, config.pad_token_id)
    gen = torch.Generator().manual_seed(4)
    args = {"input_ids": ids, "attention_mask": mask}
    if task == "multiple_choice":
        args = {k: v[None].repeat(2, 1, 1) for k, v in args.items()}  # (2 questions, 3 choices, T)
        args["labels"] = torch.tensor([2, 0])
    elif task == "sequence_classification":
        args["labels"] = torch.randint(0, config.num_labels, (3,), generator=gen)
    elif task == "token_classification":
        labels = torch.randint(0, config.num_labels, ids.shape, generator=gen)
        args["labels"] = labels.masked_fill(mask == 0, -100)
    elif task == "question_answering":
        args["start_positions"], args["end_positions"] = torch.tensor([1, 2, 40]), torch.tensor([3, 5, 1])
    elif task == "next_sentence":
        args["labels"] = torch.tensor([0, 1, 1])
    elif task == "pretraining":
        labels = torch.full_like(ids, -100)
        labels[0, 3], labels[1, 1] = 5, 9
        pair_label = "sentence_order_label" if config.pair_task == "sentence_order" else "next_sentence_label"
        args["labels"], args[pair_label] = labels, torch.tensor([1, 0, 1])
    return args


def _outputs(out):
    names = ("logits", "start_logits", "end_logits", "prediction_logits", "seq_relationship_logits", "sop_logits")
    return {n: getattr(out, n) for n in names if getattr(out, n, None) is not None}


def _compare(oracle, ours, config, task):
    args = _inputs(config, task)
    with torch.no_grad():
        want, got = oracle(**args), ours(**args)
    for name, tensor in _outputs(want).items():
        per_token = tensor.shape[:2] == args["input_ids"].shape[:2] and task != "multiple_choice"
        keep = args["attention_mask"] if per_token else None  # padding positions hold no prediction
        assert max_rel_err(tensor, _outputs(got)[name], keep) <= TOL, name
    assert abs(want.loss.item() - got.loss.item()) <= TOL * max(1.0, abs(want.loss.item())), task


CASES = [(f, t) for f in FAMILIES for t in AUTO if has_head(f, t)]


@pytest.mark.parametrize("family,task", CASES)
def test_head_parity_and_round_trip(tmp_path, family, task):
    # Two labels where the head is binary: QA (start, end) and pretraining (ALBERT's sentence-order head
    # is num_labels wide, but transformers' loss assumes two)
    labels = {0: "A", 1: "B"} if task in ("question_answering", "pretraining") else {0: "A", 1: "B", 2: "C"}
    config = _config(family, id2label=labels)
    oracle = oracle_model(config, task)
    ours = AUTO[task].from_pretrained(save_oracle(oracle, tmp_path / "oracle"))
    report = ours.load_report
    assert not report.new_head and not report.unexpected and not report.unused, report.message()
    _compare(oracle, ours, config, task)
    # compactbert saves, transformers loads: same outputs
    ours.save_pretrained(tmp_path / "ours")
    loader = getattr(transformers, "AutoModel" + type(ours).__name__)  # ForSequenceClassification -> AutoModelFor...
    theirs = loader.from_pretrained(tmp_path / "ours").eval()
    _compare(theirs, ours, config, task)
    assert theirs.config.id2label == labels


@pytest.mark.parametrize("problem_type,labels", [
    ("regression", None), ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
])
def test_sequence_classification_losses(tmp_path, problem_type, labels):
    n = 1 if problem_type == "regression" else 3
    config = _config("bert", id2label={i: f"L{i}" for i in range(n)}, problem_type=problem_type)
    oracle = oracle_model(config, "sequence_classification")
    ours = cb.AutoModelForSequenceClassification.from_pretrained(save_oracle(oracle, tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, [6, 4], 0)
    labels = torch.tensor([0.5, -1.0]) if labels is None else labels
    with torch.no_grad():
        want = oracle(input_ids=ids, attention_mask=mask, labels=labels).loss
        got = ours(ids, mask, labels=labels).loss
    assert abs(want.item() - got.item()) <= TOL * max(1.0, abs(want.item()))


@pytest.mark.parametrize("family", FAMILIES)
def test_base_checkpoint_into_classifier_reports_new_head(family, tiny_checkpoint, caplog):
    with caplog.at_level("WARNING", logger="compactbert"):
        model = cb.AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint(family, "base"), num_labels=4)
    assert model.config.num_labels == 4 and model.classifier.out_features == 4
    assert any(name.startswith("classifier") for name in model.load_report.new_head)
    assert not any(name.startswith("encoder") for name in model.load_report.new_head)
    assert "newly initialised" in caplog.text


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_have_no_unused_parameters(family):
    """Every parameter gets a gradient (DistributedDataParallel requires it)."""
    config = _config(family)
    for task, auto in AUTO.items():
        if not has_head(family, task):
            continue
        model = auto.from_config(config).train()
        args = _inputs(config, task)
        model(**args).loss.backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        # token types the batch never uses still get a gradient through row 0
        assert not unused, (task, unused)


@pytest.mark.parametrize("family", FAMILIES)
def test_question_answering_ignores_padding(family):
    model = cb.AutoModelForQuestionAnswering.from_config(_config(family))
    ids, mask = padded_batch(model.config.vocab_size, [9, 4], model.config.pad_token_id)
    start, end = torch.tensor([2]), torch.tensor([3])
    with torch.no_grad():
        batch = model(ids, mask)
        alone = model(ids[1:, :4], start_positions=start, end_positions=end)
        padded = model(ids[1:], mask[1:], start_positions=start, end_positions=end)
    assert (batch.start_logits[1, 4:] == torch.finfo(torch.float32).min).all()
    assert abs(alone.loss.item() - padded.loss.item()) <= 1e-5 * abs(alone.loss.item())


def test_distilbert_has_no_next_sentence_head():
    with pytest.raises(cb.ConfigError, match="distilbert checkpoints have no next-sentence head"):
        cb.AutoModelForNextSentencePrediction.from_config(TINY["distilbert"]())


def test_multiple_choice_needs_3d_input():
    model = cb.AutoModelForMultipleChoice.from_config(TINY["bert"]())
    with pytest.raises(cb.InputError, match=r"\(batch, choices, length\)"):
        model(torch.ones(2, 5, dtype=torch.long))
