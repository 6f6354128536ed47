"""Agora: its mechanics with stand-in parts (deterministic), the default parts on real weights,
and an end-to-end run through `compactbert agora`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import compactbert as cb
from compactbert.training import (
    AgoraResult, ClassifierLabeller, Hyperparameters, InfillingGenerator, TextExample, agora, fresh_head_copies,
    hyperparameter_grid, labeller_mapping, prune, read_csv_examples, split_dev,
)
from conftest import TINY, minilm_folder

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
GRID = hyperparameter_grid([1e-4, 1e-5], [0.0, 0.1], [0.1], [8, 16], [0])  # 8 sets


class Stub(nn.Module):
    """A 'model' whose one parameter records which training run made it."""

    def __init__(self, run: int) -> None:
        super().__init__()
        self.run = nn.Parameter(torch.tensor(float(run)))


class StubTrainer:
    """Scores a theta by a fixed table, minus `decline` per round; records every call."""

    def __init__(self, scores: dict[Hyperparameters, float], decline: float = 0.0) -> None:
        self.scores, self.decline, self.calls = scores, decline, []

    def __call__(self, theta, train, dev):
        self.calls.append((theta, list(train)))
        rounds_seen = len({len(t) for _, t in self.calls})  # the pool grows every round
        model = Stub(len(self.calls))
        base = self.scores[dataclasses_replace_seed(theta)]
        return model, base - self.decline * (rounds_seen - 1)


def dataclasses_replace_seed(theta):
    import dataclasses

    return dataclasses.replace(theta, seed=theta.seed % 1000)


TRAIN = [TextExample(f"train {i}", i % 2) for i in range(10)]
DEV = [TextExample(f"dev {i}", i % 2) for i in range(20)]


def _run(trainer, generator=None, **kwargs) -> AgoraResult:
    generator = generator or (lambda text, k: [f"{text} variant {n}" for n in range(k)])
    return agora(TRAIN, DEV, GRID, trainer, generator, lambda items: [1] * len(items),
                 lambda model, items: [0] * len(items), **kwargs)  # predicts 0: every label-1 example is a mistake


def test_prune_removes_the_root_and_its_closest_sets():
    a, b, c, d = (Hyperparameters(1e-4, 0.0, 0.1, 8, 0), Hyperparameters(1e-4, 0.0, 0.1, 16, 0),
                  Hyperparameters(1e-5, 0.0, 0.1, 8, 0), Hyperparameters(1e-5, 0.1, 0.2, 16, 1))
    # root a (worst); b and c each share 4 of 5 positions with it, d shares none
    assert prune([(b, 0.9), (a, 0.5), (c, 0.8), (d, 0.7)]) == [a, c, b]  # in ascending score order
    assert prune([(d, 0.1), (a, 0.5)]) == [d]  # nothing shares a position: the root alone
    assert prune([(a, 0.3)]) == [a]
    assert prune([(b, 0.5), (a, 0.5)]) == [b, a]  # equal scores: the earlier is the root


def test_rounds_prune_at_least_one_set_and_never_exceed_the_grid():
    trainer = StubTrainer({theta: 0.5 + 0.01 * i for i, theta in enumerate(GRID)})
    result = _run(trainer, max_replays=0)
    assert 1 <= len(result.report) <= len(GRID)
    trained = [len(entry["scores"]) for entry in result.report]
    for entry, count, following in zip(result.report, trained, trained[1:] + [0]):
        assert len(entry["pruned"]) >= 1 and following == count - len(entry["pruned"])
    assert sum(len(e["pruned"]) for e in result.report) == len(GRID)  # every set pruned once, in the end
    assert trained[0] == len(GRID) and len(trainer.calls) == sum(trained)


def test_the_best_model_is_preserved_and_dev_never_enters_training():
    trainer = StubTrainer({theta: 0.5 + 0.01 * i for i, theta in enumerate(GRID)}, decline=0.2)
    dev_texts = {e.text for e in DEV}
    leaky = lambda text, k: [DEV[0].text, f"{text} variant"][:k + 1]  # noqa: E731 - tries to copy a dev text
    result = _run(trainer, generator=leaky, max_replays=0)
    assert result.round == 1 and result.score == pytest.approx(0.57)  # later rounds score lower
    assert result.theta == GRID[7] and result.baseline_score == result.score
    best_run = 1 + GRID.index(GRID[7])  # the 8th training of round 1 made the best model
    assert result.model.run.item() == best_run  # its weights are back, though later models were trained
    for _, pool in trainer.calls:
        assert not {e.text for e in pool} & dev_texts
    assert all(e["round_best"] <= result.score for e in result.report)


def test_one_labelled_neighbour_per_mistake_by_default():
    trainer = StubTrainer({theta: 0.5 for theta in GRID})
    result = _run(trainer, max_replays=0)
    first = result.report[0]
    assert first["mistakes"] == sum(e.label == 1 for e in split_dev(DEV, 0.0)[0]) == 10
    assert first["added"] == first["mistakes"] and first["train_size"] == len(TRAIN) + 10
    second_pool = trainer.calls[len(GRID)][1]
    generated = second_pool[len(TRAIN):]
    assert len(generated) == 10 and all(e.label == 1 and e.text.endswith("variant 0") for e in generated)
    twice = _run(StubTrainer({theta: 0.5 for theta in GRID}), max_replays=0, neighbours=2)
    assert twice.report[0]["added"] == 20


def test_replay_reruns_a_round_with_new_seeds_a_bounded_number_of_times():
    trainer = StubTrainer({theta: 0.5 for theta in GRID}, decline=0.1)
    result = _run(trainer, max_replays=2)
    assert result.report[0]["replays"] == 0 and all(e["replays"] == 2 for e in result.report[1:])
    seeds = {theta.seed for theta, _ in trainer.calls}
    assert seeds == {0, 1000, 2000}


def test_held_out_dev_is_kept_out_of_the_search(tmp_path):
    search, held = split_dev(DEV, 0.3, seed=0)
    assert len(held) == 6 and len(search) == 14 and not {e.text for e in search} & {e.text for e in held}
    trainer = StubTrainer({theta: 0.5 for theta in GRID})
    result = _run(trainer, holdout=0.3, max_replays=0, report_path=tmp_path / "report.json")
    for _, pool in trainer.calls:
        assert not {e.text for e in pool} & {e.text for e in held}
    assert result.held_out_score == pytest.approx(sum(e.label == 0 for e in held) / 6)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["final"]["held_out_score"] == result.held_out_score and len(report["rounds"]) == len(result.report)
    with pytest.raises(ValueError, match="holdout must be in"):
        split_dev(DEV, 1.0)
    with pytest.raises(ValueError, match="must be distinct"):
        agora(TRAIN, DEV, [GRID[0], GRID[0]], trainer, None, None, None)


def test_default_parts_on_real_weights():
    """In-filling neighbours differ from their source in a few tokens; the labeller gives hard labels;
    fresh_head_copies share the encoder and redraw the head from the seed."""
    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    torch.manual_seed(0)
    filler = cb.AutoModelForMaskedLM.from_pretrained(minilm_folder())
    generate = InfillingGenerator(filler, tokenizer, seed=0)
    text = "The battery dies within hours and the screen flickers."
    neighbours = generate(text, 3)
    original = tokenizer(text, return_tensors="pt")["input_ids"][0]
    assert len(neighbours) == 3 and len(set(neighbours)) == 3
    same_length = 0
    for neighbour in neighbours:
        assert neighbour != tokenizer.decode(original, skip_special_tokens=True)
        ids = tokenizer(neighbour, return_tensors="pt")["input_ids"][0]
        if len(ids) == len(original):  # usually a few in-place substitutions (~15% of 11 tokens)
            assert 1 <= int((ids != original).sum()) <= 4
            same_length += 1
    assert same_length >= 1  # the check above ran
    base = cb.AutoModelForSequenceClassification.from_pretrained(minilm_folder(), num_labels=2)
    make = fresh_head_copies(base)
    torch.manual_seed(1)
    a = make()
    torch.manual_seed(1)
    b = make()
    torch.manual_seed(2)
    c = make()
    assert torch.equal(a.classifier.weight, b.classifier.weight) and not torch.equal(a.classifier.weight,
                                                                                      c.classifier.weight)
    assert torch.equal(a.encoder.embeddings.word.weight, base.encoder.embeddings.word.weight)
    assert a.encoder.embeddings.word.weight.data_ptr() != base.encoder.embeddings.word.weight.data_ptr()
    labels = ClassifierLabeller(a, tokenizer)([TextExample("great", -1), TextExample("awful", -1)])
    assert all(label in (0, 1) for label in labels)


@pytest.mark.slow
def test_end_to_end_agora_on_scarce_sentiment_data(tmp_path, minilm_mlm_folder):
    """`compactbert agora` on 16 shipped training sentences: candidate all-MiniLM-L6-v2 (BERT code
    path, BORT's architecture), labeller S fine-tuned on the same 16, neighbours in-filled by the
    masked-LM-tuned MiniLM. The report, the saved best model and both held-out scores are checked;
    which method wins is measured, not asserted (docs/agora.md)."""
    from compactbert.training import TrainingConfig, classification_collate, classification_metrics, fine_tune

    lines = (DATA / "sentiment_train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:17]) + "\n")  # header + 16 sentences
    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    torch.manual_seed(0)
    labeller = cb.AutoModelForSequenceClassification.from_pretrained(minilm_folder(), id2label={0: "0", 1: "1"})
    fine_tune(labeller, read_csv_examples(tmp_path / "train.csv"), classification_collate(tokenizer),
              TrainingConfig(num_train_epochs=8, per_device_train_batch_size=8, learning_rate=1e-4))
    labeller.save_pretrained(tmp_path / "labeller")
    tokenizer.save_pretrained(tmp_path / "labeller")

    out = tmp_path / "agora"
    run = subprocess.run([sys.executable, "-m", "compactbert", "agora", "--model", str(minilm_folder()),
                          "--labeller", str(tmp_path / "labeller"), "--filler", str(minilm_mlm_folder),
                          "--train", str(tmp_path / "train.csv"), "--validation", str(DATA / "sentiment_dev.csv"),
                          "--learning-rates", "1e-4,2e-5", "--weight-decays", "0", "--batch-sizes", "4,8",
                          "--epochs", "3", "--holdout", "0.4", "--output-dir", str(out)],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "agora_report.json").read_text())
    assert 1 <= len(report["rounds"]) <= 4 and all(len(r["pruned"]) >= 1 for r in report["rounds"])
    final = report["final"]
    assert final["best_score"] == max(r["round_best"] for r in report["rounds"]) >= final["baseline_score"]
    assert 0 <= final["held_out_score"] <= 1 and 0 <= final["baseline_held_out_score"] <= 1
    assert "held-out dev: Agora" in run.stdout and "agora: agora round 1: best" in run.stderr  # progress as it runs
    # The saved model is the best one: it scores its reported accuracy on the search part of dev.
    search, _ = split_dev(read_csv_examples(DATA / "sentiment_dev.csv"), 0.4, seed=0)
    saved = cb.AutoModelForSequenceClassification.from_pretrained(out)
    assert classification_metrics(saved, search, tokenizer)["accuracy"] == pytest.approx(final["best_score"])


def test_labeller_labels_are_mapped_by_name(caplog):
    """The labeller's ids are translated to the data's by label name, whatever their order."""
    data = {"negative": 0, "positive": 1}
    assert labeller_mapping({0: "POSITIVE", 1: "NEGATIVE"}, data) == [1, 0]
    assert labeller_mapping({0: "negative", 1: "positive"}, data) == [0, 1]
    assert "by id" not in caplog.text
    assert labeller_mapping({0: "LABEL_0", 1: "LABEL_1"}, data) == [0, 1]  # unnamed: by id, said
    assert labeller_mapping({0: "NEGATIVE", 1: "POSITIVE"}, {"0": 0, "1": 1}) == [0, 1]  # integer data
    assert "matched to the data's (negative, positive) by id" in caplog.text
    with pytest.raises(ValueError, match=r"labels \(good, bad\) do not match the data's \(negative, positive\)"):
        labeller_mapping({0: "good", 1: "bad"}, data)
    with pytest.raises(ValueError, match="has 3 labels"):
        labeller_mapping({0: "a", 1: "b", 2: "c"}, data)

    model = cb.AutoModelForSequenceClassification.from_config(TINY["bert"](vocab_size=30522))
    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    texts = [TextExample("a fine day", 0), TextExample("rain again", 0), TextExample("so so", 0)]
    plain = ClassifierLabeller(model, tokenizer)(texts)
    assert ClassifierLabeller(model, tokenizer, [1, 0])(texts) == [1 - p for p in plain]
