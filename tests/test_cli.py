"""The command line, through subprocess calls: output formats, input sources, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import compactbert as cb
from conftest import tokenized_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tokenized_checkpoint(tmp_path_factory.mktemp("cli") / "distil", "distilbert")


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "compactbert", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=300)


def test_fill_mask_table(model_dir):
    out = cli("fill-mask", "Plants create [MASK] through photosynthesis.", "--model", str(model_dir), "--top-k", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Plants create [MASK] through photosynthesis."
    assert lines[1].split() == ["rank", "score", "token"] and len(lines) == 5
    expected = cb.pipeline("fill-mask", model=model_dir)("Plants create [MASK] through photosynthesis.", top_k=3)
    assert [line.split()[2] for line in lines[2:]] == [p["token_str"] for p in expected]


@pytest.mark.parametrize("mode", [["--dtype", "bfloat16"], ["--quantize", "int8"]])
def test_fill_mask_fast_modes(model_dir, mode):
    """--dtype bfloat16 and --quantize int8 give the pipeline's answer in that mode."""
    text = "Plants create [MASK] through photosynthesis."
    out = cli("fill-mask", text, "--model", str(model_dir), "--json", *mode)
    assert out.returncode == 0, out.stderr
    options = {"dtype": "bfloat16"} if mode[0] == "--dtype" else {"quantize": "int8"}
    expected = cb.pipeline("fill-mask", model=model_dir, **options)(text)
    assert [p["token"] for p in json.loads(out.stdout)[0]["masks"][0]] == [p["token"] for p in expected]


def test_fill_mask_json_from_file_and_stdin(model_dir, tmp_path):
    texts = ["One [MASK] here.", "Two [MASK] and <mask>."]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n\n")
    from_file = cli("fill-mask", "--model", str(model_dir), "--file", str(path), "--json")
    from_stdin = cli("fill-mask", "--model", str(model_dir), "--json", stdin="\n".join(texts))
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_file.stderr + from_stdin.stderr
    data = json.loads(from_file.stdout)
    assert data == json.loads(from_stdin.stdout)
    assert [d["text"] for d in data] == texts
    assert len(data[0]["masks"]) == 1 and len(data[1]["masks"]) == 2
    assert set(data[0]["masks"][0][0]) == {"score", "token", "token_str", "sequence"}


def test_targets_option(model_dir):
    out = cli("fill-mask", "The [MASK] sat.", "--model", str(model_dir), "--targets", "cat,dog", "--json")
    assert out.returncode == 0, out.stderr
    tokens = {p["token_str"] for p in json.loads(out.stdout)[0]["masks"][0]}
    assert tokens == {"cat", "dog"}


@pytest.mark.parametrize("args,stdin,message", [
    (["fill-mask", "no mask at all"], None, "no mask token in input 0"),
    (["fill-mask"], "", "no input"),
    (["fill-mask", "a [MASK]", "--top-k", "0"], None, "--top-k must be at least 1"),
    (["fill-mask", "a [MASK]", "--targets", " , "], None, "--targets is empty"),
    (["fill-mask", "a [MASK]", "--file", "/nonexistent/texts.txt"], None, "cannot read --file"),
])
def test_bad_input_is_one_line(model_dir, args, stdin, message):
    out = cli(*args, "--model", str(model_dir), stdin=stdin)
    assert out.returncode == 1
    assert out.stderr.startswith("compactbert: error: ") and message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--targets", ""], "--targets is empty"),
    (["--device", "warp-drive"], "is not a device name"),
    (["--device", "cuda:7"], "--device cuda:7"),
])
def test_arguments_checked_before_loading(args, message):
    """Bad options are reported before any model is looked for (this model does not exist anywhere)."""
    out = cli("fill-mask", "a [MASK]", "--model", "org/not-anywhere", *args)
    assert out.returncode == 1 and message in out.stderr and "org/not-anywhere" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_device_option(model_dir):
    text = "Plants create [MASK] through photosynthesis."
    out = cli("fill-mask", text, "--model", str(model_dir), "--device", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    expected = cb.pipeline("fill-mask", model=model_dir)(text)
    assert [p["token"] for p in json.loads(out.stdout)[0]["masks"][0]] == [p["token"] for p in expected]


@pytest.mark.parametrize("name", ["/nonexistent/folder", "./no-such-dir", "../no-such-dir", "~/no-such-dir-cb",
                                  "models/typo", "a/b/c"])
def test_missing_folder_is_no_such_folder(tmp_path, name):
    (tmp_path / "models").mkdir()  # an existing parent makes `models/typo` a path, not a Hub id
    out = subprocess.run([sys.executable, "-m", "compactbert", "fill-mask", "a [MASK]", "--model", name],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
                              "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert out.stderr.startswith("compactbert: error: no such folder: "), out.stderr
    assert "Hub" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_no_such_folder_from_python():
    with pytest.raises(cb.UnknownModelError, match="no such folder: ./nodir"):
        cb.AutoModel.from_pretrained("./nodir")
    with pytest.raises(cb.UnknownModelError, match="no such folder"):
        cb.AutoTokenizer.from_pretrained("/nonexistent/folder")


def test_fill_mask_refuses_a_checkpoint_without_masked_lm_head(tmp_path):
    folder = tokenized_checkpoint(tmp_path / "encoder-only", "distilbert", task="base")
    refused = cli("fill-mask", "a [MASK] here.", "--model", str(folder))
    assert refused.returncode == 1
    assert refused.stderr.startswith("compactbert: error: ") and "has no masked-LM head" in refused.stderr
    assert "--allow-untrained-head" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    with pytest.raises(cb.InputError, match="has no masked-LM head"):
        cb.pipeline("fill-mask", model=folder)

    forced = cli("fill-mask", "a [MASK] here.", "--model", str(folder), "--allow-untrained-head", "--json")
    assert forced.returncode == 0, forced.stderr
    assert len(json.loads(forced.stdout)[0]["masks"][0]) == 5
    assert "newly initialised" in forced.stderr  # the load report still says what was made up


def test_unknown_targets_warn_and_are_left_out(model_dir):
    out = cli("fill-mask", "The [MASK] sat.", "--model", str(model_dir), "--targets", "cat,\U0001F600,dog",
              "--json")
    assert out.returncode == 0, out.stderr
    assert {p["token_str"] for p in json.loads(out.stdout)[0]["masks"][0]} == {"cat", "dog"}
    warnings = [line for line in out.stderr.splitlines() if "not in this model's vocabulary" in line]
    assert len(warnings) == 1 and "[UNK]" in warnings[0] and warnings[0].startswith("compactbert: warning: ")

    only_unknown = cli("fill-mask", "The [MASK] sat.", "--model", str(model_dir), "--targets", "\U0001F600")
    assert only_unknown.returncode == 1 and "none of the targets" in only_unknown.stderr
    fill = cb.pipeline("fill-mask", model=model_dir)
    with pytest.raises(cb.InputError, match="targets is empty"):
        fill("The [MASK] sat.", targets=[])


def test_scores_show_small_values():
    from compactbert.cli import format_score

    assert format_score(0.51234) == "0.5123" and format_score(0.001) == "0.0010"
    assert format_score(3.2e-5) == "3.20e-05" and format_score(0.0) == "0.0000"


def test_table_scores_are_never_rounded_to_zero(model_dir):
    out = cli("fill-mask", "The [MASK] sat.", "--model", str(model_dir), "--targets", "cat,dog,the,sat,over")
    assert out.returncode == 0, out.stderr
    scores = [float(line.split()[1]) for line in out.stdout.splitlines()[2:]]
    assert len(scores) == 5 and all(score > 0 for score in scores)


def test_bad_model(tmp_path):
    out = cli("fill-mask", "a [MASK]", "--model", "distilbert-base-uncsed")
    assert out.returncode == 1 and "Did you mean 'distilbert-base-uncased'" in out.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "distilbert"}')
    (broken / "model.safetensors").write_bytes(b"garbage")
    out = cli("fill-mask", "a [MASK]", "--model", str(broken))
    assert out.returncode == 1 and "not a readable safetensors file" in out.stderr and "Traceback" not in out.stderr


def test_list_and_env():
    listing = cli("list")
    assert listing.returncode == 0
    assert "amazon/bort" in listing.stdout and "distilbert-base-uncased" in listing.stdout
    env = cli("env")
    assert env.returncode == 0
    assert "torch" in env.stdout and "HF_HUB_OFFLINE   1" in env.stdout


def test_usage_error_exit_code():
    out = cli("fill-mask", "text")  # --model is required
    assert out.returncode == 2 and "--model" in out.stderr


@pytest.mark.slow
def test_finetune_text_classification(tmp_path):
    """Fine-tune real MiniLM weights on the shipped CSVs with string labels; transformers loads the result."""
    import csv

    from conftest import minilm_folder, transformers

    data = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "data"
    names = {"0": "negative", "1": "positive"}
    for split in ("train", "dev"):  # string labels, renamed columns
        with open(data / f"sentiment_{split}.csv") as src, open(tmp_path / f"{split}.csv", "w", newline="") as dst:
            out = csv.writer(dst)
            out.writerow(["review", "sentiment"])
            out.writerows((row["text"], names[row["label"]]) for row in csv.DictReader(src))
    out_dir = tmp_path / "model"
    run = cli("finetune", "text-classification", "--model", str(minilm_folder()), "--train", str(tmp_path / "train.csv"),
              "--validation", str(tmp_path / "dev.csv"), "--text-column", "review", "--label-column", "sentiment",
              "--num-train-epochs", "4", "--learning-rate", "1e-4", "--output-dir", str(out_dir))
    assert run.returncode == 0, run.stderr
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.85 and metrics["best_epoch"] in (1, 2, 3, 4)
    theirs = transformers.pipeline("text-classification", model=str(out_dir), device="cpu")
    assert theirs("A wonderful, heartwarming film.")[0]["label"] in ("negative", "positive")
    ours = cb.pipeline("text-classification", model=out_dir)
    assert ours("A wonderful, heartwarming film.")[0]["label"] == theirs("A wonderful, heartwarming film.")[0]["label"]


def test_finetune_accumulation_bf16_checkpoint_and_resume(tmp_path, model_dir):
    """--gradient-accumulation-steps, --bf16, --device, --progress and --checkpoint-dir train and print
    each epoch as it ends (and a progress bar);
    --resume after a finished run continues from the saved state (nothing left to train: the same
    history); --resume without a checkpoint folder is an error."""
    data = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "data"
    args = ["finetune", "text-classification", "--model", str(model_dir), "--train", str(data / "sentiment_dev.csv"),
            "--num-train-epochs", "2", "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2",
            "--bf16", "--device", "cpu", "--progress", "--checkpoint-dir", str(tmp_path / "state"),
            "--output-dir", str(tmp_path / "out")]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "finetune: epoch 1:" in first.stderr and "finetune: epoch 2:" in first.stderr
    assert "fine-tuning: 100%" in first.stderr and "10/10" in first.stderr  # 40 examples, 8 per step, 2 epochs
    assert (tmp_path / "state" / "trainer_state.pt").is_file()
    again = cli(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 2" in again.stderr
    history = [line for line in first.stdout.splitlines() if line.startswith("{")]
    assert [line for line in again.stdout.splitlines() if line.startswith("{")] == history
    bad = cli("finetune", "text-classification", "--model", str(model_dir), "--train", str(data / "sentiment_dev.csv"),
              "--resume", "--output-dir", str(tmp_path / "x"))
    assert bad.returncode == 1 and "--resume continues from --checkpoint-dir" in bad.stderr


def test_finetune_bad_label_column(tmp_path, model_dir):
    (tmp_path / "train.csv").write_text("text,label\nfine,1\n")
    out = cli("finetune", "text-classification", "--model", str(model_dir), "--train", str(tmp_path / "train.csv"),
              "--label-column", "stars", "--output-dir", str(tmp_path / "o"))
    assert out.returncode == 1 and "has no column(s) stars" in out.stderr


def test_finetune_token_classification_and_qa(tmp_path):
    """JSON lines in, Hub-layout folders out that the pipelines load; metrics.json carries the task's metrics."""
    from conftest import minilm_folder

    data = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "data"
    ner = cli("finetune", "token-classification", "--model", str(minilm_folder()), "--train",
              str(data / "ner_train.jsonl"), "--validation", str(data / "ner_dev.jsonl"),
              "--num-train-epochs", "1", "--learning-rate", "1e-4", "--per-device-train-batch-size", "8",
              "--output-dir", str(tmp_path / "ner"))
    assert ner.returncode == 0, ner.stderr
    metrics = json.loads((tmp_path / "ner" / "metrics.json").read_text())
    assert {"eval_f1", "eval_precision", "eval_recall", "eval_accuracy"} <= set(metrics) and metrics["best_epoch"] == 1
    entities = cb.pipeline("ner", model=tmp_path / "ner")("Ada Lovelace lived in London.", aggregation_strategy="none")
    assert all(e["entity"] in ("B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG") for e in entities)

    qa = cli("finetune", "question-answering", "--model", str(minilm_folder()), "--train", str(data / "qa_dev.jsonl"),
             "--validation", str(data / "qa_dev.jsonl"), "--num-train-epochs", "1", "--max-seq-len", "96",
             "--doc-stride", "32", "--output-dir", str(tmp_path / "qa"))
    assert qa.returncode == 0, qa.stderr
    metrics = json.loads((tmp_path / "qa" / "metrics.json").read_text())
    assert 0 <= metrics["eval_exact_match"] <= metrics["eval_f1"] <= 100
    answer = cb.pipeline("question-answering", model=tmp_path / "qa")(question="Where?", context="Ada lived in London.")
    assert answer["answer"] in "Ada lived in London."

    mc = cli("finetune", "multiple-choice", "--model", str(minilm_folder()), "--train", str(data / "mc_dev.jsonl"),
             "--validation", str(data / "mc_dev.jsonl"), "--num-train-epochs", "1", "--output-dir", str(tmp_path / "mc"))
    assert mc.returncode == 0, mc.stderr
    assert 0 <= json.loads((tmp_path / "mc" / "metrics.json").read_text())["eval_accuracy"] <= 1
    assert cb.AutoModelForMultipleChoice.from_pretrained(tmp_path / "mc").classifier.weight.shape[0] == 1

    bad = cli("finetune", "question-answering", "--model", str(minilm_folder()), "--train", str(data / "ner_dev.jsonl"),
              "--output-dir", str(tmp_path / "x"))
    assert bad.returncode == 1 and "has no column(s) question, context, answers; found tokens, tags" in bad.stderr


def _commands():
    from compactbert.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    return sub.choices


def test_every_option_has_help_and_shows_its_default():
    for name, command in _commands().items():
        if name == "bench":  # its own parser, checked below
            continue
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
        text = command.format_help()
        for action in command._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)


def test_training_defaults_come_from_the_configs():
    from compactbert.training import DataOptions, DistillationConfig, TrainingConfig

    commands = _commands()
    tune = commands["finetune"].parse_args(["text-classification", "--model", "m", "--train", "t", "--output-dir", "o"])
    assert (tune.num_train_epochs, tune.learning_rate, tune.per_device_train_batch_size, tune.device) == (
        TrainingConfig.num_train_epochs, TrainingConfig.learning_rate, TrainingConfig.per_device_train_batch_size, None)
    assert (tune.max_seq_len, tune.doc_stride) == (DataOptions.max_seq_len, DataOptions.doc_stride)
    still = commands["distill"].parse_args(["--teacher", "m", "--corpus", "c", "--output-dir", "o"])
    assert (still.learning_rate, still.temperature, still.mask_smoothing) == (
        DistillationConfig.learning_rate, DistillationConfig.temperature, DistillationConfig.mask_smoothing)
    assert still.learning_rate != tune.learning_rate  # each command reads its own config


def test_fill_mask_help_lists_device_and_defaults():
    out = cli("fill-mask", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--device" in text and "predictions per mask (default: 5)" in text
