"""Nothing is lost under kill -9 (compactbert/io/atomic.py): a save killed at any instant leaves
the previous complete folder or the new complete one, never a mix; a fine_tune killed mid-epoch
and resumed ends equal to an uninterrupted run; saved files follow the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import compactbert as cb
from compactbert.io.atomic import save_folder, write_atomic
from conftest import TINY

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork a saving process")


def _summary(script: str, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_save_killed_at_25_random_instants_leaves_one_complete_version(tmp_path):
    """Two models are saved into one folder in turn and the saving process is SIGKILLed 25 times:
    every time the folder loads as entirely one of them (config and every weight), with an
    unrelated file kept. Most kills land mid-save (a staging folder is left beside it). The same
    run with files replaced one at a time found mixed folders in 5 of 25 kills."""
    summary = _summary("kill_saves.py", str(tmp_path / "model"), "25")
    assert summary["problems"] == []
    assert summary["seen"]["A"] > 0 and summary["seen"]["B"] > 0  # saves landed between kills
    assert summary["killed_mid_save"] >= 10


def test_fine_tune_killed_mid_epoch_and_resumed_equals_one_run(tmp_path):
    summary = _summary("kill_train.py", str(tmp_path))
    assert summary["equal"] and summary["kills"] >= 3


def test_saved_files_and_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        model = cb.AutoModelForMaskedLM.from_config(TINY["bert"]())
        model.save_pretrained(tmp_path / "model")
        write_atomic(tmp_path / "metrics.json", lambda path: path.write_text("{}"))
    finally:
        os.umask(previous)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "model") == 0o750  # tempfile would have made it 0700
    assert mode(tmp_path / "model" / "model.safetensors") == 0o640
    assert mode(tmp_path / "model" / "config.json") == 0o640
    assert mode(tmp_path / "metrics.json") == 0o640  # mkstemp would have made it 0600


def test_a_failed_save_keeps_the_previous_folder_untouched(tmp_path):
    folder = tmp_path / "out"
    save_folder(folder, {"a.txt": lambda p: p.write_text("old a"), "b.txt": lambda p: p.write_text("old b")})

    def fails(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_folder(folder, {"a.txt": lambda p: p.write_text("new a"), "b.txt": fails})
    assert (folder / "a.txt").read_text() == "old a" and (folder / "b.txt").read_text() == "old b"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    save_folder(folder, {"a.txt": lambda p: p.write_text("new a")}, remove=["b.txt"])
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"] and (folder / "a.txt").read_text() == "new a"


def test_model_tokenizer_and_metrics_are_saved_as_one_change(tmp_path):
    """Outputs of the recipes (model, tokenizer, metrics.json) are one atomic save: a failure while
    writing any of them leaves the previous folder as it was, model and tokenizer alike."""
    from compactbert.io.atomic import save_together
    from conftest import minilm_folder

    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    first = cb.AutoModelForMaskedLM.from_config(TINY["bert"](vocab_size=30522))
    save_together(tmp_path / "out", [first, tokenizer], {"metrics.json": {"round": 1}})
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"} <= set(before)

    class Broken:
        def folder_files(self, directory):
            return {"notes.txt": lambda path: (_ for _ in ()).throw(OSError("disk full"))}, []

    second = cb.AutoModelForMaskedLM.from_config(TINY["bert"](vocab_size=30522, hidden_size=64))
    with pytest.raises(OSError, match="disk full"):
        save_together(tmp_path / "out", [second, tokenizer, Broken()], {"metrics.json": {"round": 2}})
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_saving_through_a_link_to_a_folder_keeps_the_link(tmp_path):
    real = tmp_path / "real"
    save_folder(real, {"a.txt": lambda p: p.write_text("old")})
    (tmp_path / "link").symlink_to(real)
    save_folder(tmp_path / "link", {"a.txt": lambda p: p.write_text("new")})
    assert (tmp_path / "link").is_symlink() and (real / "a.txt").read_text() == "new"
