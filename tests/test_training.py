"""The fine-tuning loop: its mechanics, and that it really learns on real weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compactbert as cb
from compactbert.training import (
    TextExample, TrainingConfig, classification_collate, classification_metrics, fine_tune, linear_schedule,
    parameter_groups, read_csv_examples,
)
from conftest import TINY, agree_in_one_and_two_processes, minilm_folder

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def test_no_weight_decay_on_biases_and_norms():
    model = cb.AutoModelForSequenceClassification.from_config(TINY["mobilebert"]())  # NoNorm inside
    decay, no_decay = parameter_groups(model, 0.01)
    named = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(named[id(p)].endswith("weight") and "norm" not in named[id(p)] for p in decay["params"])
    assert all(named[id(p)].endswith("bias") or "norm" in named[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_linear_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=4, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert rates[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def _tiny_setup():
    config = TINY["bert"](vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    examples = read_csv_examples(DATA / "sentiment_train.csv")[:24]
    return config, tokenizer, examples


def test_gradient_accumulation_equals_one_big_batch():
    config, tokenizer, examples = _tiny_setup()
    results = []
    for per_device, accumulation in ((8, 1), (2, 4)):  # one step sees per device x accumulation examples
        torch.manual_seed(0)
        model = cb.AutoModelForSequenceClassification.from_config(config)
        fine_tune(model, examples, classification_collate(tokenizer),
                  TrainingConfig(num_train_epochs=1, per_device_train_batch_size=per_device,
                                 gradient_accumulation_steps=accumulation, warmup_ratio=0.0))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_seeded_runs_are_identical():
    config, tokenizer, examples = _tiny_setup()
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        model = cb.AutoModelForSequenceClassification.from_config(config)
        result = fine_tune(model, examples, classification_collate(tokenizer),
                           TrainingConfig(num_train_epochs=2, per_device_train_batch_size=8))
        histories.append([h["train_loss"] for h in result.history])
    assert histories[0] == histories[1]


def test_config_checks():
    with pytest.raises(ValueError, match="per_device_train_batch_size and gradient_accumulation_steps must be"):
        TrainingConfig(per_device_train_batch_size=0)
    with pytest.raises(ValueError, match="bf16 and fp16 exclude each other"):
        TrainingConfig(bf16=True, fp16=True)
    TrainingConfig(per_device_train_batch_size=10, gradient_accumulation_steps=4)  # no divisibility needed


@pytest.mark.parametrize("config_class", ["TrainingConfig", "DistillationConfig"])
@pytest.mark.parametrize("old, new", [("epochs", "num_train_epochs"), ("batch_size", "per_device_train_batch_size"),
                                      ("gradient_accumulation", "gradient_accumulation_steps")])
def test_old_setting_names_say_the_new_ones(config_class, old, new):
    import compactbert.training as training

    with pytest.raises(TypeError, match=f"{config_class}\\({old}=...\\) is now {new}, as transformers names it"):
        getattr(training, config_class)(**{old: 2})
    with pytest.raises(TypeError, match="is now metric_for_best_model"):
        TrainingConfig(metric="f1")


@pytest.mark.slow
def test_fine_tuning_real_weights_learns(tmp_path):
    """all-MiniLM-L6-v2 (real weights) fine-tuned on the shipped sentiment data: accuracy >= 0.85 on
    sentences used neither for training nor for choosing the best epoch."""
    folder = minilm_folder()
    tokenizer = cb.AutoTokenizer.from_pretrained(folder)
    train = read_csv_examples(DATA / "sentiment_train.csv")
    dev = read_csv_examples(DATA / "sentiment_dev.csv")
    torch.manual_seed(0)
    model = cb.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    select, held_out = dev[:20], dev[20:]
    before = classification_metrics(model, held_out, tokenizer)["accuracy"]
    result = fine_tune(model, train, classification_collate(tokenizer),
                       TrainingConfig(num_train_epochs=4, per_device_train_batch_size=16, learning_rate=1e-4,
                                      output_dir=tmp_path / "best"),
                       evaluate=lambda m: classification_metrics(m, select, tokenizer))
    after = classification_metrics(model, held_out, tokenizer)
    assert after["accuracy"] >= 0.85, (before, result.history)
    assert classification_metrics(model, select, tokenizer)["accuracy"] == result.best_metric  # best epoch restored
    saved = cb.AutoModelForSequenceClassification.from_pretrained(tmp_path / "best")
    assert classification_metrics(saved, held_out, tokenizer)["accuracy"] == after["accuracy"]
    assert isinstance(train[0], TextExample) and len(train) == 80 and len(dev) == 40


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    """The same global batch on 2 processes (DDP, gloo) gives the single-process result."""
    a, b = agree_in_one_and_two_processes(Path(__file__).resolve().parent / "ddp_train.py", tmp_path)
    # equal because both trained the same way, not because nothing moved
    assert all(torch.equal(a["initial"][k], b["initial"][k]) for k in a["initial"])
    assert not torch.allclose(a["params"]["classifier.weight"], a["initial"]["classifier.weight"], atol=1e-4)
    # Rank 0 alone evaluated; rank 1 received its metrics, kept the same epoch and holds the same weights.
    other = torch.load(tmp_path / "double.pt.rank1")
    assert b["evaluations"] == [1, 2, 3] and other["evaluations"] == []
    assert other["history"] == b["history"] and other["best_epoch"] == b["best_epoch"] == 2
    assert b["history"][1]["weight_sum"] == pytest.approx(a["history"][1]["weight_sum"], rel=1e-5)
    for name, value in b["params"].items():
        assert torch.equal(value, other["params"][name]), name


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    config, tokenizer, examples = _tiny_setup()
    config = config.replace(hidden_dropout_prob=0.1)  # dropout on: the random generators must be restored too
    settings = dict(num_train_epochs=3, per_device_train_batch_size=8, seed=1)

    def run(evaluate, resume=False, model=None):
        torch.manual_seed(0)
        model = model or cb.AutoModelForSequenceClassification.from_config(config)
        result = fine_tune(model, examples, classification_collate(tokenizer),
                           TrainingConfig(checkpoint_dir=tmp_path / "state", **settings), evaluate, resume=resume)
        return model, result

    straight, straight_result = run(lambda m: {"accuracy": 0.5})
    (tmp_path / "state" / "trainer_state.pt").unlink()

    calls = []

    def interrupt_at_epoch_3(model):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies during epoch 3's evaluation
        return {"accuracy": 0.5}

    with pytest.raises(KeyboardInterrupt):
        run(interrupt_at_epoch_3)
    state = torch.load(tmp_path / "state" / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 2
    resumed, resumed_result = run(lambda m: {"accuracy": 0.5}, resume=True)
    assert [h["train_loss"] for h in resumed_result.history] == [h["train_loss"] for h in straight_result.history]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_progress_bar(capsys):
    config, tokenizer, examples = _tiny_setup()
    model = cb.AutoModelForSequenceClassification.from_config(config)
    fine_tune(model, examples[:16], classification_collate(tokenizer),
              TrainingConfig(num_train_epochs=2, per_device_train_batch_size=8, progress=True))
    err = capsys.readouterr().err
    assert "fine-tuning" in err and "4/4" in err


@pytest.mark.parametrize("metric, greater, scores, best", [
    ("accuracy", None, [0.5, 0.9, 0.7], 2),  # higher is better by default
    ("mse", None, [3.0, 1.0, 2.0], 2),  # an error: lower is better
    ("eval_loss", None, [3.0, 2.5, 2.9], 2),  # transformers' rule: a name ending in "loss"
    ("mse", True, [3.0, 1.0, 2.0], 1),  # said explicitly
    ("accuracy", False, [0.5, 0.9, 0.4], 3),
])
def test_keep_best_follows_the_metric_direction(metric, greater, scores, best):
    """The epoch kept is the best by `metric` in its direction; its weights are the model's at the end."""
    config, tokenizer, examples = _tiny_setup()
    torch.manual_seed(0)
    model = cb.AutoModelForSequenceClassification.from_config(config)
    weights = []

    def evaluate(m):
        weights.append(m.classifier.weight.detach().clone())
        return {metric: scores[len(weights) - 1]}

    result = fine_tune(model, examples[:8], classification_collate(tokenizer),
                       TrainingConfig(num_train_epochs=3, per_device_train_batch_size=8, metric_for_best_model=metric,
                                      greater_is_better=greater, learning_rate=1e-3, warmup_ratio=0.0), evaluate)
    assert result.best_epoch == best and result.best_metric == scores[best - 1]
    assert torch.equal(model.classifier.weight, weights[best - 1])


def test_training_calls_leave_the_global_random_state_alone(tmp_path):
    """fine_tune and distill seed what they draw, in their own copy of the random state: the
    caller's stream continues as if they had not run (transformers' Trainer reseeds globally)."""
    from compactbert.training import DistillationConfig, TextCorpus, distill, student_from_teacher

    config, tokenizer, examples = _tiny_setup()
    model = cb.AutoModelForSequenceClassification.from_config(config)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(e.text for e in examples[:8]))
    teacher = cb.ForMaskedLM.from_config(config)
    student = student_from_teacher(teacher, [0])  # a random initialisation of its own, drawn here
    calls = [lambda: fine_tune(model, examples[:8], classification_collate(tokenizer),
                               TrainingConfig(num_train_epochs=1)),
             lambda: distill(teacher, student, tokenizer, TextCorpus([corpus]),
                             DistillationConfig(num_train_epochs=1, per_device_train_batch_size=4))]
    for call in calls:
        torch.manual_seed(123)
        expected = torch.rand(4)
        torch.manual_seed(123)
        call()
        assert torch.equal(torch.rand(4), expected)


def test_trained_mobilebert_keeps_transformers_parity_on_padded_batches(tmp_path):
    """MobileBERT's tied decoder moves the padding row of the word embeddings, which transformers
    reads as the trigram neighbour of a padded sequence's last token (compactbert reads zeros).
    fine_tune and distill keep that row at zero, so the saved model means the same in both."""
    from compactbert.training import DistillationConfig, TextCorpus, distill, mlm_collate
    from conftest import transformers

    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    config = TINY["mobilebert"](vocab_size=len(tokenizer))
    lines = (DATA / "corpus_dev.txt").read_text().splitlines()[:48]
    torch.manual_seed(0)
    model = cb.ForMaskedLM.from_config(config)
    fine_tune(model, lines, mlm_collate(tokenizer), TrainingConfig(num_train_epochs=2, per_device_train_batch_size=8,
                                                                   learning_rate=1e-2, warmup_ratio=0.0))
    student = cb.ForMaskedLM.from_config(config)
    distill(model, student, tokenizer, TextCorpus([DATA / "corpus_dev.txt"]),
            DistillationConfig(num_train_epochs=1, max_steps=4, per_device_train_batch_size=8, learning_rate=1e-2))
    batch = tokenizer(["Plants release [MASK] into the air.", "A short [MASK]."], padding=True, return_tensors="pt")
    keep = batch["attention_mask"].bool()
    for trained, name in ((model, "fine-tuned"), (student, "distilled")):
        assert not trained.encoder.embeddings.word.weight[0].any(), name
        trained.save_pretrained(tmp_path / name)
        theirs = transformers.MobileBertForMaskedLM.from_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(trained.eval()(**batch).logits[keep], theirs(**batch).logits[keep],
                                       rtol=1e-4, atol=1e-4)
