"""Training on a device: fine_tune, distill, the evaluation helpers and Agora's helpers move the model
and batches there, autocast on its type, and resume its random state. Every test runs on each device
present (conftest.DEVICES): the CPU here, CUDA as well on a machine with a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compactbert as cb
from compactbert.errors import ConfigError
from compactbert.training import (
    ClassifierLabeller, DistillationConfig, InfillingGenerator, TextCorpus, TrainingConfig, classification_collate,
    classification_metrics, distill, fine_tune, mlm_comparison, predict_tags, read_csv_examples,
    student_from_teacher,
)
from compactbert.training.runtime import Runtime, choose_device
from conftest import TINY, DEVICES, minilm_folder

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


@pytest.fixture(scope="module")
def tokenizer():
    return cb.AutoTokenizer.from_pretrained(minilm_folder())


@pytest.fixture(scope="module")
def examples():
    return read_csv_examples(DATA / "sentiment_train.csv")[:16]


def _classifier(dropout: float = 0.0) -> cb.PreTrainedModel:
    torch.manual_seed(0)
    config = TINY["bert"](vocab_size=30522, hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0)
    return cb.AutoModelForSequenceClassification.from_config(config)


def _train(device, tokenizer, examples, **settings):
    model = _classifier(settings.pop("dropout", 0.0))
    evaluate = settings.pop("evaluate", None)
    resume = settings.pop("resume", False)
    config = TrainingConfig(**{"num_train_epochs": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                               "seed": 1, "device": device, **settings})
    result = fine_tune(model, examples, classification_collate(tokenizer), config, evaluate, resume=resume)
    return model, result


@pytest.mark.parametrize("device", DEVICES)
def test_fine_tune_trains_on_the_device_as_on_the_cpu(device, tokenizer, examples):
    """The model starts on the CPU, trains on `device`, stays there; the losses, the evaluation
    (which runs on the model's device) and the weights match a CPU run."""
    reference, expected = _train("cpu", tokenizer, examples,
                                 evaluate=lambda m: classification_metrics(m, examples, tokenizer))
    model, result = _train(device, tokenizer, examples,
                           evaluate=lambda m: classification_metrics(m, examples, tokenizer))
    assert {p.device.type for p in model.parameters()} == {device}
    tolerance = 0 if device == "cpu" else 1e-4
    assert [h["train_loss"] for h in result.history] == pytest.approx(
        [h["train_loss"] for h in expected.history], abs=tolerance)
    assert [h["accuracy"] for h in result.history] == [h["accuracy"] for h in expected.history]
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(b.cpu(), a, atol=tolerance * 10, rtol=0, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(device, precision, tokenizer, examples):
    """Autocast on the device's type: bf16 anywhere, fp16 with loss scaling (the scale is saved for
    resume). Losses stay finite and the weights move."""
    model, result = _train(device, tokenizer, examples, **{precision: True}, checkpoint_dir=None)
    initial = _classifier().classifier.weight
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert not torch.allclose(model.classifier.weight.float().cpu(), initial, atol=1e-4)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a cast of the weights


def test_fp16_state_and_refusals(tmp_path, tokenizer, examples):
    _, result = _train("cpu", tokenizer, examples, fp16=True, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and "cpu" in state["rng"]
    mobile = cb.AutoModelForSequenceClassification.from_config(TINY["mobilebert"]())
    with pytest.raises(ConfigError, match="MobileBERT activations reach 1e7-1e8 and overflow float16"):
        fine_tune(mobile, examples, classification_collate(tokenizer), TrainingConfig(fp16=True))


@pytest.mark.parametrize("device", DEVICES)
def test_resume_on_the_device_equals_one_run(device, tmp_path, tokenizer, examples):
    """With dropout on, resuming needs the device's random state back (saved with the CPU's)."""
    def score(model):
        return {"accuracy": 0.5}

    def dies_in_epoch_3(model, calls=[]):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return score(model)

    settings = dict(dropout=0.1, num_train_epochs=3)
    straight, expected = _train(device, tokenizer, examples, checkpoint_dir=tmp_path / "a", evaluate=score, **settings)
    with pytest.raises(KeyboardInterrupt):
        _train(device, tokenizer, examples, checkpoint_dir=tmp_path / "b", evaluate=dies_in_epoch_3, **settings)
    state = torch.load(tmp_path / "b" / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 2 and ("cuda" in state["rng"]) == (device == "cuda")
    resumed, result = _train(device, tokenizer, examples, checkpoint_dir=tmp_path / "b", evaluate=score, resume=True,
                             **settings)
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in expected.history]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("device", DEVICES)
def test_distill_on_the_device(device, tmp_path, tokenizer):
    """Teacher and student move to the device; the loss history matches the CPU's; the masked-LM
    comparison runs where the models are."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join((DATA / "corpus_train.txt").read_text().splitlines()[:16]) + "\n")
    histories = []
    for where in ("cpu", device):
        torch.manual_seed(0)
        config = TINY["bert"](vocab_size=30522, num_hidden_layers=2, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
        teacher = cb.ForMaskedLM.from_config(config)
        student = student_from_teacher(teacher, [1])
        result = distill(teacher, student, tokenizer, TextCorpus([corpus]),
                         DistillationConfig(num_train_epochs=1, per_device_train_batch_size=8, device=where))
        histories.append([h["loss"] for h in result.history])
    assert {p.device.type for p in student.parameters()} == {p.device.type for p in teacher.parameters()} == {device}
    assert histories[1] == pytest.approx(histories[0], abs=0 if device == "cpu" else 1e-4)
    agreement, divergence = mlm_comparison(student, teacher, tokenizer, ["A sentence to mask a few words of."] * 4)
    assert 0 <= agreement <= 1 and divergence >= 0


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_helpers_follow_the_model(device, tokenizer, examples):
    """Prediction helpers of every task and Agora's generator and labeller run a model that lives
    on `device` and return plain Python values."""
    classifier = _classifier().to(device)
    labels = ClassifierLabeller(classifier, tokenizer)(examples[:4])
    assert len(labels) == 4 and all(isinstance(x, int) for x in labels)
    tagger = cb.AutoModelForTokenClassification.from_config(
        TINY["bert"](vocab_size=30522, id2label={0: "O", 1: "B-PER", 2: "I-PER"})).to(device)
    from compactbert.training import TaggedExample

    tags = predict_tags(tagger, tokenizer, [TaggedExample(["Ada", "lived", "here"], ["O", "O", "O"])],
                        {0: "O", 1: "B-PER", 2: "I-PER"})
    assert len(tags[0]) == 3
    filler = cb.ForMaskedLM.from_config(TINY["bert"](vocab_size=30522)).to(device)
    assert len(InfillingGenerator(filler, tokenizer, seed=0)("the film was good and long", 2)) >= 1


def test_device_rules(monkeypatch, examples, tokenizer):
    """Default: the model's accelerator, else CUDA when present, else the CPU; a device this
    machine lacks is a ConfigError naming it before anything trains."""
    model = _classifier()
    assert choose_device(model) == torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert choose_device(model, "cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert choose_device(model, "cuda", local_rank=0) == torch.device("cuda", 0)
    else:
        with pytest.raises(ConfigError, match="has no CUDA device"):
            fine_tune(model, examples, classification_collate(tokenizer), TrainingConfig(device="cuda"))
    with pytest.raises(ConfigError, match="not a device name"):
        fine_tune(model, examples, classification_collate(tokenizer), TrainingConfig(device="gpu0"))
    run = Runtime.start(model, "cpu", "bf16")
    assert run.world == 1 and run.wrap(model) is model
    with run.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16  # autocast on the CPU
    with pytest.raises(ValueError, match="choose one of fp32, bf16, fp16"):
        Runtime.start(model, "cpu", "int8")
