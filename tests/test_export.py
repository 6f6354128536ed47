"""ONNX export (compactbert/export.py): every family and export task, each MobileBERT variant, run in
onnxruntime on padded batches of real text of mixed lengths and shapes other than the traced one;
max |onnx - eager float32| within 1e-4 x max(1, max |eager|)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import compactbert as cb
from compactbert import export
from compactbert.cli import main
from conftest import FAMILIES, TINY, has_head, oracle_model, save_oracle, tokenized_checkpoint
from test_outputs import MOBILE_VARIANTS

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

# Export task -> the internal task of the head it exports.
HEADS = {"base": "base", "fill-mask": "masked_lm", "text-classification": "sequence_classification",
         "token-classification": "token_classification", "question-answering": "question_answering"}
TEXTS = ["Paris is the capital of France, and a city of art and light.", "Hello world.", "A dog barked.",
         "Plants create energy through photosynthesis in their leaves every day."]
PAIRS = (["Who barked?", "What do plants create?"], ["A dog barked at the mailman.", "Plants create energy."])


def graph_vs_eager(folder, model) -> float:
    """Run the exported graph as the README shows (the tokenizer's numpy output fed as it is) on a
    padded batch of real text and of text pairs; max |graph - eager| / max(1, max |eager|) over
    every output, at real tokens for per-token outputs."""
    tok = cb.AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for encoded in (tok(TEXTS, padding=True, return_tensors="np"), tok(*PAIRS, padding=True, return_tensors="np")):
        outputs = dict(zip(names, session.run(None, dict(encoded))))
        with torch.no_grad():
            eager = model(**{k: torch.from_numpy(v) for k, v in encoded.items()})
        real = encoded["attention_mask"].astype(bool)
        assert real.shape[1] > 7 and not real.all()  # other than the traced shape, and padded
        for name, got in outputs.items():
            want = getattr(eager, name).numpy()
            assert got.shape == want.shape, name
            keep = real if want.ndim >= 2 and want.shape[:2] == real.shape else slice(None)
            worst = max(worst, float(np.abs(got[keep] - want[keep]).max() / max(1.0, np.abs(want[keep]).max())))
    return worst


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", list(HEADS))
def test_export_matches_eager_for_every_family_and_task(tmp_path, family, task):
    if not has_head(family, HEADS[task]):
        pytest.skip(f"{family} has no {HEADS[task]} head")
    folder = tokenized_checkpoint(tmp_path / "model", family, HEADS[task])
    report = export.export_onnx(folder, tmp_path / "onnx", task=task)
    model = export.EXPORT_TASKS[task].from_pretrained(folder).eval()
    assert graph_vs_eager(tmp_path / "onnx", model) <= export.TOLERANCE
    assert report.max_abs_diff <= export.TOLERANCE * max(1.0, report.max_abs_output)
    written = json.loads((tmp_path / "onnx" / "onnx_export.json").read_text())
    assert written["task"] == task and written["max_abs_diff"] == report.max_abs_diff


@pytest.mark.parametrize("changes", MOBILE_VARIANTS, ids=[str(i) for i in range(len(MOBILE_VARIANTS))])
def test_export_matches_eager_for_each_mobilebert_variant(tmp_path, changes):
    folder = tokenized_checkpoint(tmp_path / "model", "mobilebert", "masked_lm", **changes)
    export.export_onnx(folder, tmp_path / "onnx", task="fill-mask")
    model = cb.AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert graph_vs_eager(tmp_path / "onnx", model) <= export.TOLERANCE


def test_cli_export_writes_a_self_contained_folder_with_an_int8_graph(tmp_path, capsys):
    folder = tokenized_checkpoint(tmp_path / "model", "distilbert", "sequence_classification")
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(folder), str(out), "--task", "text-classification", "--int8", "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert "max |onnx - eager|" in printed and "int8 graph: min cosine" in printed
    for name in ("model.onnx", "model_quantized.onnx", "config.json", "tokenizer.json", "tokenizer_config.json",
                 "onnx_export.json"):
        assert (out / name).is_file(), name
    assert cb.AutoConfig.from_pretrained(out).num_labels == 2
    import onnx

    assert onnx.load(str(out / "model.onnx")).opset_import[0].version == 17
    # The quantized graph keeps the inputs and outputs, and its answers stay close to float32.
    tok = cb.AutoTokenizer.from_pretrained(out)
    encoded = dict(tok(TEXTS, padding=True, return_tensors="np"))
    full = ort.InferenceSession(str(out / "model.onnx")).run(None, encoded)[0]
    small = ort.InferenceSession(str(out / "model_quantized.onnx")).run(None, encoded)[0]
    assert small.shape == full.shape and np.abs(small - full).max() < 0.05 * np.abs(full).max() + 1e-3
    assert json.loads((out / "onnx_export.json").read_text())["int8_min_cosine"] > 0.9


def test_export_leaves_the_model_as_it_was(tmp_path):
    config = TINY["bert"](hidden_dropout_prob=0.5)
    model = cb.AutoModelForMaskedLM.from_config(config, dtype=torch.bfloat16)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export.export_onnx(model, tmp_path / "onnx")
    assert model.training and model.dtype == torch.bfloat16
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    export.export_onnx(model.float(), tmp_path / "onnx2")
    assert not model.training  # an eval model stays in eval mode (the exporter restores the wrapper's mode)
    ids = torch.randint(3, 99, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)  # dropout still off


def test_export_errors_are_named(tmp_path):
    model = cb.AutoModelForMaskedLM.from_config(TINY["bert"]())
    with pytest.raises(cb.ConfigError, match="unknown export task 'summarization'"):
        export.export_onnx(model, tmp_path / "x", task="summarization")
    with pytest.raises(cb.ConfigError, match="opset must be an integer >= 17"):
        export.export_onnx(model, tmp_path / "x", opset=11)
    with pytest.raises(cb.ConfigError, match="task='base' but the model is a ForMaskedLM"):
        export.export_onnx(model, tmp_path / "x", task="base")
    with pytest.raises(export.ExportError, match="ForMultipleChoice has no ONNX export"):
        export.export_onnx(cb.AutoModelForMultipleChoice.from_config(TINY["bert"]()), tmp_path / "x")
    with pytest.raises(export.ExportError, match="quantized in PyTorch"):
        export.export_onnx(cb.AutoModelForMaskedLM.from_config(TINY["bert"]()).quantize("int8"), tmp_path / "x")
    with pytest.raises(TypeError, match="only when the model is given by name"):
        export.export_onnx(model, tmp_path / "x", revision="main")
    assert not (tmp_path / "x").exists()


def test_missing_onnxruntime_is_a_named_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(export.ExportError, match=r'pip install "compactbert\[onnx\]"'):
        export.export_onnx(cb.AutoModel.from_config(TINY["bert"]()), tmp_path / "x")
    assert main(["export", "onnx", "nowhere", str(tmp_path / "y")]) == 1


def test_a_failed_check_writes_nothing_and_keeps_the_previous_export(tmp_path, monkeypatch):
    folder = save_oracle(oracle_model(TINY["albert"](), "base"), tmp_path / "model")
    out = tmp_path / "onnx"
    export.export_onnx(folder, out)
    before = (out / "model.onnx").read_bytes()
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no graph can pass
    with pytest.raises(export.ExportError, match="nothing was written"):
        export.export_onnx(folder, out, opset=17)
    assert (out / "model.onnx").read_bytes() == before
    assert json.loads((out / "onnx_export.json").read_text())["opset"] == export.DEFAULT_OPSET
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
