"""Optimised paths: int8 quantization and the benchmark itself (speed is measured by the benchmark, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import compactbert as cb
from conftest import tokenized_checkpoint, padded_batch


def test_int8_quantizes_encoder_linears_and_stays_close(tiny_checkpoint):
    folder = tiny_checkpoint("distilbert")
    fp32 = cb.AutoModelForMaskedLM.from_pretrained(folder)
    int8 = cb.AutoModelForMaskedLM.from_pretrained(folder, quantize="int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    kinds = [type(m) for m in int8.encoder.modules()]
    assert DynamicQuantizedLinear in kinds and torch.nn.Linear not in kinds
    assert type(int8.mlm.transform) is torch.nn.Linear  # heads stay float32
    ids, mask = padded_batch(99, [12, 7], 0)
    with torch.no_grad():
        a, b = fp32(ids, mask).last_hidden_state, int8(ids, mask).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(a[mask.bool()], b[mask.bool()], dim=-1)
    assert cosine.min() > 0.99
    assert not torch.equal(a, b)  # it really is a different computation


def test_int8_options_are_checked(tiny_checkpoint):
    folder = tiny_checkpoint("bert")
    with pytest.raises(cb.ConfigError, match="quantize='int4' is not supported"):
        cb.AutoModelForMaskedLM.from_pretrained(folder, quantize="int4")
    with pytest.raises(cb.ConfigError, match="starts from float32"):
        cb.AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.bfloat16, quantize="int8")


def test_int8_pipeline(tmp_path):
    folder = tokenized_checkpoint(tmp_path / "m", "mobilebert")
    fill = cb.pipeline("fill-mask", model=folder, quantize="int8")
    assert len(fill("The quick brown [MASK] jumps.")) == 5


@pytest.mark.slow
def test_benchmark_runs_and_matches_transformers(tmp_path):
    """The benchmark end to end on small models: every field present, top-5 identical to transformers."""
    out = subprocess.run([sys.executable, "-m", "compactbert", "bench", "--tiny", "--sentences", "8",
                          "--repeats", "1", "--json", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "cores" in report["machine"]
    assert [r["family"] for r in report["results"]] == ["distilbert", "mobilebert", "bort"]
    for r in report["results"]:
        assert r["fill_mask"]["top5_identical"] == 1.0
        for key in ("ratio", "tokens_per_s", "gflops"):
            assert r["fill_mask"][key] > 0
        assert r["encoder"]["ratio"] > 0 and r["latency"]["ratio"] > 0 and r["int8"]["ratio"] > 0
        assert set(r["memory_mb"]) == {"compactbert", "transformers"}
