"""Batch inference (compactbert/batch.py, `compactbert predict` / `embed`): every input format and
task equals the pipeline run directly; refused rows are flagged and lose nothing; a run killed with
SIGKILL at random moments resumes to the uninterrupted output (no row lost, none twice); two
processes under torchrun give the one-process output; a changed rerun is refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import compactbert as cb
from compactbert.batch import BatchJob, read_output, run_batch
from compactbert.cli import main
from conftest import tokenized_checkpoint

pa = pytest.importorskip("pyarrow")
pytest.importorskip("datasets")
import pyarrow.parquet as pq  # noqa: E402

WORDS = "the a dog cat sat on mat big small red fast slow happy sad runs jumps".split()


def texts(n: int, seed: int = 0, mask_every: int = 3) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 24))]
        if i % mask_every == 0:
            words.insert(rng.randrange(len(words) + 1), "[MASK]")
        out.append(" ".join(words))
    return out


def write_input(path: Path, rows: list[str]) -> Path:
    """The same rows as .txt, .csv, .jsonl or .parquet (column `sentence` outside .txt)."""
    if path.suffix == ".txt":
        path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "sentence"])
            writer.writerows([i, r] for i, r in enumerate(rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"sentence": r, "id": i}) + "\n" for i, r in enumerate(rows)),
                        encoding="utf-8")
    else:
        pq.write_table(pa.table({"sentence": rows, "id": list(range(len(rows)))}), str(path), row_group_size=40)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-models")
    return {"text-classification": tokenized_checkpoint(root / "cls", "distilbert", "sequence_classification"),
            "fill-mask": tokenized_checkpoint(root / "mlm", "distilbert", "masked_lm"),
            "token-classification": tokenized_checkpoint(root / "tok", "distilbert", "token_classification"),
            "embed": tokenized_checkpoint(root / "base", "distilbert", "base")}


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl", ".parquet"])
def test_every_format_equals_the_pipeline(tmp_path, models, suffix):
    rows = texts(130, seed=1)
    source = write_input(tmp_path / f"in{suffix}", rows)
    job = BatchJob("text-classification", models["text-classification"], source, tmp_path / "out",
                   text_column="sentence", rows_per_shard=50, batch_size=16)  # paths as Path objects too
    summary = run_batch(job)
    assert summary == {"rows": 130, "shards": 3, "written": 3, "skipped": 0, "complete": True}
    table = read_output(tmp_path / "out").to_pylist()
    want = cb.pipeline("text-classification", model=str(models["text-classification"]))(rows)
    assert [r["row"] for r in table] == list(range(130))
    assert [r["label"] for r in table] == [w["label"] for w in want]
    assert np.allclose([r["score"] for r in table], [w["score"] for w in want], atol=1e-6)


def test_fill_mask_rows_without_a_mask_are_flagged_and_others_answered(tmp_path, models):
    rows = texts(60, seed=2)  # every third row has a mask
    source = write_input(tmp_path / "in.txt", rows)
    assert main(["predict", "--task", "fill-mask", "--model", str(models["fill-mask"]), "--input", str(source),
                 "--output", str(tmp_path / "out"), "--top-k", "3", "--rows-per-shard", "25"]) == 0
    table = read_output(tmp_path / "out").to_pylist()
    fill = cb.pipeline("fill-mask", model=str(models["fill-mask"]))
    for row, text in zip(table, rows):
        if "[MASK]" in text:
            want = fill(text, top_k=3)
            assert row["error"] is None
            assert [p["token"] for p in row["predictions"][0]] == [p["token"] for p in want]
        else:
            assert row["predictions"] is None and "no mask token" in row["error"]


def test_token_classification_and_embeddings(tmp_path, models):
    rows = texts(45, seed=3, mask_every=1000)
    source = write_input(tmp_path / "in.jsonl", rows)
    assert main(["predict", "--task", "token-classification", "--model", str(models["token-classification"]),
                 "--input", str(source), "--text-column", "sentence", "--output", str(tmp_path / "tok"),
                 "--rows-per-shard", "20"]) == 0
    got = read_output(tmp_path / "tok").to_pylist()
    want = cb.pipeline("token-classification", model=str(models["token-classification"]))(rows)
    assert [[(e["word"], e["start"], e["end"]) for e in (r["entities"] or [])] for r in got] == \
        [[(e["word"], e["start"], e["end"]) for e in w] for w in want]
    assert main(["embed", "--model", str(models["embed"]), "--input", str(source), "--text-column", "sentence",
                 "--output", str(tmp_path / "emb"), "--rows-per-shard", "20", "--normalize"]) == 0
    vectors = read_output(tmp_path / "emb")
    expected = cb.SentenceTransformer(str(models["embed"])).encode(rows, normalize_embeddings=True)
    assert vectors.shape == expected.shape and np.allclose(vectors, expected, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "emb").iterdir() if p.suffix == ".npy") == \
        ["part-00000.npy", "part-00001.npy", "part-00002.npy"]


def test_a_changed_rerun_is_refused_and_a_same_rerun_skips(tmp_path, models):
    source = write_input(tmp_path / "in.txt", texts(30))
    model = str(models["text-classification"])
    job = BatchJob("text-classification", model, str(source), str(tmp_path / "out"), rows_per_shard=10)
    run_batch(job)
    assert run_batch(job) == {"rows": 30, "shards": 3, "written": 0, "skipped": 3, "complete": True}
    with pytest.raises(cb.ConfigError, match="rows_per_shard differ"):
        run_batch(BatchJob("text-classification", model, str(source), str(tmp_path / "out"), rows_per_shard=20))
    source.write_text("other\n", encoding="utf-8")
    with pytest.raises(cb.ConfigError, match="input_bytes"):
        run_batch(job)
    with pytest.raises(cb.ConfigError, match="must end in"):
        BatchJob("embed", model, str(tmp_path / "in.xml"), str(tmp_path / "x"))
    assert main(["predict", "--task", "text-classification", "--model", model, "--input", str(tmp_path / "nope.txt"),
                 "--output", str(tmp_path / "y")]) == 1


def _command(model: Path, source: Path, out: Path) -> list[str]:
    return ["predict", "--task", "text-classification", "--model", str(model), "--input", str(source),
            "--output", str(out), "--rows-per-shard", "40", "--batch-size", "8", "--no-progress"]


def test_sigkill_at_random_moments_then_resume_loses_no_row_and_repeats_none(tmp_path, models):
    source = write_input(tmp_path / "in.csv", texts(1200, seed=4))
    model = models["text-classification"]
    assert main(_command(model, source, tmp_path / "ref") + ["--text-column", "sentence"]) == 0
    reference = read_output(tmp_path / "ref")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "compactbert"] + _command(model, source, out) + ["--text-column", "sentence"]
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))  # start-up takes about 1-2 s: some kills land before any shard
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = read_output(out)
    assert resumed.column("row").to_pylist() == list(range(1200))  # none lost, none twice
    assert resumed.equals(reference)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_two_processes_under_torchrun_equal_one(tmp_path, models):
    source = write_input(tmp_path / "in.parquet", texts(300, seed=5))
    model = models["text-classification"]
    assert main(_command(model, source, tmp_path / "one") + ["--text-column", "sentence"]) == 0
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "compactbert"] + _command(model, source, tmp_path / "two") + ["--text-column", "sentence"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert read_output(tmp_path / "two").equals(read_output(tmp_path / "one"))
    assert json.loads((tmp_path / "two" / "done.json").read_text()) == {"rows": 300, "shards": 8}


def test_progress_bar_counts_the_rows_left_with_rate(tmp_path, models, capsys):
    source = write_input(tmp_path / "in.txt", texts(45))
    out = tmp_path / "out"
    job = ["predict", "--task", "text-classification", "--model", str(models["text-classification"]), "--input",
           str(source), "--output", str(out), "--rows-per-shard", "20", "--progress"]
    assert main(job) == 0
    err = capsys.readouterr().err
    assert "45/45" in err and "row/s" in err
    (out / "part-00001.parquet").unlink()  # a resumed run counts only what is left
    (out / "done.json").unlink()
    assert main(job) == 0
    err = capsys.readouterr().err
    assert "20/20" in err and "45/45" not in err
    assert read_output(out).column("row").to_pylist() == list(range(45))


def test_cuda_under_a_launcher_means_each_process_its_own_gpu(monkeypatch):
    from compactbert.batch import process_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert process_device("cuda") == "cuda" and process_device(None) is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_device("cuda") == "cuda:1" and process_device("cuda:0") == "cuda:0" and process_device("cpu") == "cpu"
