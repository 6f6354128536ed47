"""Optimised paths: int8 quantization and the benchmark itself (speed is measured by the benchmark, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import compactbert as cb
from compactbert.synthetic import bench_models
from compactbert.nn.heads import MaskedLMHead
from compactbert.nn.kernels import _CACHES, cached_products, packed_dtypes
from conftest import (
    FAMILIES, HEAD_CLASSES, has_head, max_rel_err, minilm_folder, padded_batch, tokenized_checkpoint,
)


# Tiny random models, int8 vs float32: every output within 2% of its largest value (measured <= 0.1%).
INT8_TOL = 2e-2


def _int8_products(model) -> int:
    return sum(entry.int8 is not None for entry in cached_products(model))


@pytest.fixture
def every_product_int8(monkeypatch):
    """Tiny models' weights are all below SMALL_WEIGHT, which stay float32 on MKL even in int8 mode:
    run every product in int8, as a real model's large ones do."""
    from compactbert.nn import kernels

    monkeypatch.setattr(kernels, "SMALL_WEIGHT", 0)


@pytest.fixture(params=["x86", "int_mm"])
def int8_kernel(request, monkeypatch):
    """Both int8 kernels: the x86 quantized engine (where torch has it) and torch._int_mm."""
    from compactbert.nn import int8

    if request.param == "x86" and torch.backends.quantized.engine not in ("x86", "fbgemm"):
        pytest.skip("no x86 quantized engine in this torch build")
    monkeypatch.setattr(int8, "_X86_ENGINE", request.param == "x86")
    return request.param


@pytest.mark.skipif(torch.float32 not in packed_dtypes(), reason="int8 runs with the oneDNN kernels")
@pytest.mark.parametrize("smoothed", [True, False])
@pytest.mark.parametrize("fused", [None, "gelu", "relu", "residual"])
@pytest.mark.parametrize("rows", [5, 1400])  # 1400: past the row-maximum's large-input form
def test_int8_product_leaves_its_inputs_alone(every_product_int8, int8_kernel, smoothed, fused, rows):
    """The int8 product scales, divides and activates in place, but only tensors it made itself,
    unless the caller hands its input over as scratch: then the result is the same."""
    from compactbert.nn import kernels

    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 40).eval()
    kernels.quantize_int8(linear, {linear: {"weight": torch.rand(48) + 0.5}} if smoothed else {})
    x, residual = torch.randn(2, rows, 48), torch.randn(2, rows, 40)
    x_copy, residual_copy = x.clone(), residual.clone()
    activation = fused if fused in ("gelu", "relu") else None
    with torch.inference_mode():
        out = kernels.fast_linear(linear, x, activation=activation,
                                  residual=residual if fused == "residual" else None)
        expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
        assert torch.equal(x, x_copy) and torch.equal(residual, residual_copy)
        scratch = kernels.fast_linear(linear, x.clone(), activation=activation,
                                      residual=residual if fused == "residual" else None, scratch=True)
    expected = expected + residual if fused == "residual" else expected
    expected = cb.nn.activations.get_activation(activation)(expected) if activation else expected
    assert (out - expected).abs().max() <= 2e-2 * expected.abs().max()
    assert torch.equal(scratch, out)


def test_row_absmax_both_forms():
    """Each row's largest |value|, whether written with abs() (small inputs) or from amax/amin."""
    from compactbert.nn.int8 import ABSMAX_SPLIT, row_absmax

    torch.manual_seed(0)
    for rows in (3, ABSMAX_SPLIT // 64 + 1):
        x = torch.randn(rows, 64)
        x[0] = -x[0].abs()  # a row whose largest |value| is negative
        x[1] = x[1].abs()
        assert torch.equal(row_absmax(x), x.abs().amax(1, keepdim=True)), rows


def test_in_place_activations_equal_the_plain_ones():
    from compactbert.nn.activations import ACTIVATIONS, IN_PLACE, get_activation

    assert set(IN_PLACE) == set(ACTIVATIONS)
    x = torch.randn(300) * 4
    for name in ACTIVATIONS:
        y = x.clone()
        out = get_activation(name, in_place=True)(y)
        assert torch.equal(out, ACTIVATIONS[name](x)) and torch.equal(y, out), name


@pytest.mark.skipif(torch.float32 not in packed_dtypes(), reason="int8 runs with the oneDNN kernels")
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", list(HEAD_CLASSES))
def test_int8_every_family_and_head_close_to_fp32(tiny_checkpoint, every_product_int8, int8_kernel, family, task):
    if not has_head(family, task):
        pytest.skip("DistilBERT has no such head")
    folder = tiny_checkpoint(family, task)
    cls = HEAD_CLASSES[task]
    fp32, int8 = cls.from_pretrained(folder), cls.from_pretrained(folder, quantize="int8")
    assert int8.quantized == "int8" and fp32.quantized is None
    ids, mask = padded_batch(99, [12, 7], 0)
    if task == "multiple_choice":
        ids, mask = ids[None], mask[None]
    with torch.no_grad():
        a, b = fp32(ids, mask), int8(ids, mask)
    layers = len(int8.encoder.layers)
    assert _int8_products(int8) >= 5 * layers  # q and k (one product), v, out, fc_in, fc_out of every layer
    for head in (m for m in int8.modules() if isinstance(m, MaskedLMHead)):
        assert _CACHES[head]["vocabulary"].int8 is not None  # the vocabulary projection runs in int8 too
    keep = mask if task != "multiple_choice" else None
    for name, value in vars(a).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            other = getattr(b, name)
            assert not torch.equal(value, other), name  # it really is another computation
            rows = keep if keep is not None and value.shape[:2] == keep.shape else None
            assert max_rel_err(value, other, rows) <= INT8_TOL, name


@pytest.mark.skipif(torch.float32 not in packed_dtypes(), reason="int8 runs with the oneDNN kernels")
def test_int8_leaves_small_products_in_float32():
    """In int8 mode, weights below SMALL_WEIGHT stay float32 on MKL (faster at 16 rows, and exact);
    larger ones run in int8."""
    from compactbert.nn import kernels

    torch.manual_seed(0)
    for (out_features, in_features), int8 in (((512, 128), False), ((384, 384), False), ((512, 512), True),
                                              ((3072, 768), True)):
        linear = torch.nn.Linear(in_features, out_features).eval()
        kernels.quantize_int8(linear, {})
        x = torch.randn(16, in_features)
        with torch.inference_mode():
            out = kernels.linear(linear, x)
        (entry,) = cached_products(linear)
        assert (entry.int8 is not None, entry.mkl) == (int8, not int8), (out_features, in_features)
        expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
        assert max_rel_err(expected, out) <= (INT8_TOL if int8 else 1e-5)


def test_int8_query_and_key_share_one_smoothed_product(tiny_checkpoint, every_product_int8):
    """In int8, q and k run as one product smoothed by both weights' column ranges (meaning is
    kept: real MiniLM's min cosine 0.99632, separately 0.99631); v stays on its own (with them:
    0.9924)."""
    model = cb.AutoModel.from_pretrained(tiny_checkpoint("bert", "base"), quantize="int8")
    ids, mask = padded_batch(99, [12, 7], 0)
    with torch.no_grad():
        model(ids, mask)
    for layer in model.encoder.layers:
        attention = layer.attention
        qk = _CACHES[attention]["qk"]
        assert qk.int8 is not None and qk.int8.inv_smooth is not None
        assert qk.int8.scale.numel() == attention.q.out_features + attention.k.out_features
        assert attention.q not in _CACHES and attention.k not in _CACHES
        assert _CACHES[attention.v]["weight"].int8.inv_smooth is not None


def test_int8_save_reload_and_dequantize(tiny_checkpoint, tmp_path, every_product_int8):
    """A quantized model saves its full float weights and its mode; reloading gives the same model."""
    folder = tiny_checkpoint("bert", "masked_lm")
    fp32 = cb.AutoModelForMaskedLM.from_pretrained(folder)
    int8 = cb.AutoModelForMaskedLM.from_pretrained(folder, quantize="int8")
    saved = int8.save_pretrained(tmp_path / "q")
    assert json.loads((saved / "config.json").read_text())["compactbert_quantize"] == "int8"
    reloaded = cb.AutoModelForMaskedLM.from_pretrained(saved)
    assert reloaded.quantized == "int8" and reloaded.load_report.message() == ""
    for key, value in fp32.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key  # no weight lost or rounded
    ids, mask = padded_batch(99, [12, 7], 0)
    with torch.no_grad():
        assert torch.equal(int8(ids, mask).logits, reloaded(ids, mask).logits)
        exact = fp32(ids, mask).logits
        assert torch.equal(reloaded.dequantize()(ids, mask).logits, exact)
    transformers = pytest.importorskip("transformers")
    oracle = transformers.AutoModelForMaskedLM.from_pretrained(saved).eval()  # transformers reads it as float32
    with torch.no_grad():
        assert max_rel_err(exact, oracle(input_ids=ids, attention_mask=mask).logits, mask) <= 1e-5
    plain = reloaded.save_pretrained(tmp_path / "plain")  # dequantized: the mode is no longer recorded
    assert "compactbert_quantize" not in json.loads((plain / "config.json").read_text())
    assert cb.AutoModelForMaskedLM.from_pretrained(saved, dtype=torch.bfloat16).quantized is None


def test_int8_model_trains_on_float_weights(tiny_checkpoint, every_product_int8):
    model = cb.AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint("distilbert", "sequence_classification"), quantize="int8")
    ids, mask = padded_batch(99, [9, 5], 0)
    with torch.no_grad():
        model(ids, mask)
    assert _int8_products(model) > 0
    model.train()
    model(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is not None for p in model.encoder.layers[0].parameters())
    assert _int8_products(model) == 0


@pytest.mark.skipif(torch.float32 not in packed_dtypes(), reason="int8 runs with the oneDNN kernels")
def test_int8_keeps_meaning_on_real_minilm(int8_kernel):
    """Real all-MiniLM-L6-v2 over the shipped sentences (>= 200): mean-pooled embeddings of int8 vs
    float32, min cosine >= 0.995 (measured 0.9976 with products under 512 x 512 in float32, 0.9963
    with every product in int8; ONNX Runtime per-channel int8 0.9885)."""
    from compactbert.quality import pooled_embeddings, quality_sentences

    folder = minilm_folder()
    sentences = quality_sentences()
    assert len(sentences) >= 200
    tokenizer = cb.AutoTokenizer.from_pretrained(folder)
    fp32, int8 = cb.AutoModel.from_pretrained(folder), cb.AutoModel.from_pretrained(folder, quantize="int8")
    a = pooled_embeddings(lambda ids, mask: fp32(ids, mask).last_hidden_state, tokenizer, sentences)
    b = pooled_embeddings(lambda ids, mask: int8(ids, mask).last_hidden_state, tokenizer, sentences)
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert cosine.min() >= 0.995 and cosine.mean() >= 0.998


@pytest.mark.parametrize("family", ["bert", "distilbert", "mobilebert"])
def test_torch_quantize_dynamic_swaps_every_product_as_on_transformers(tiny_checkpoint, family):
    """transformers users' CPU recipe, torch.ao.quantization.quantize_dynamic(model, {nn.Linear}),
    swaps every product (compactbert's are torch's own nn.Linear), on a model that already ran its
    packed kernels too, and agrees with the same recipe on transformers' model."""
    transformers = pytest.importorskip("transformers")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import quantize_dynamic

    folder = tiny_checkpoint(family, "base")
    ours = cb.AutoModel.from_pretrained(folder).eval()
    theirs = transformers.AutoModel.from_pretrained(folder).eval()
    ids = torch.randint(5, 99, (1, 12))
    with torch.inference_mode():
        exact = ours(ids).last_hidden_state  # caches packed weights and the fused products
    products = sum(type(m) is torch.nn.Linear for m in ours.modules())
    for inplace in (False, True):  # a deep copy carries no stale state, and neither does the model itself
        quantized = quantize_dynamic(ours, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace)
        assert sum(type(m) is DynamicLinear for m in quantized.modules()) == products
        assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
        with torch.inference_mode():
            got = quantized(ids).last_hidden_state
        assert not torch.equal(got, exact) and max_rel_err(exact, got) <= INT8_TOL
    oracle = quantize_dynamic(theirs, {torch.nn.Linear}, dtype=torch.qint8)
    with torch.inference_mode():
        expected = oracle(input_ids=ids).last_hidden_state
    assert max_rel_err(expected, got) <= 1e-5  # measured: 0, 0 and 1.2e-7


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
    assert [r["family"] for r in report["results"]] == list(bench_models())  # every family's, in registry order
    for r in report["results"]:
        assert r["fill_mask"]["top5_identical"] == 1.0
        for key in ("ratio", "tokens_per_s", "gflops"):
            assert r["fill_mask"][key] > 0
        assert r["encoder"]["ratio"] > 0 and r["latency"]["ratio"] > 0 and r["int8"]["ratio"] > 0
        assert set(r["memory_mb"]) == {"compactbert", "transformers"}


def _table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("family"))
    return lines[start:lines.index("", start)]


@pytest.mark.parametrize("extra", [[], ["--no-transformers"]])
def test_benchmark_report_is_aligned_and_quiet(tmp_path, extra):
    """The table's columns line up with or without transformers; no load reports or progress bars."""
    out = subprocess.run([sys.executable, "-m", "compactbert", "bench", "--tiny", "--families", "distilbert",
                          "--sentences", "8", "--repeats", "1", "--no-memory", "--workdir", str(tmp_path), *extra],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    table = _table(out.stdout)
    assert len(table) == 2 and len({len(line) for line in table}) == 1, table
    header, row = table
    from compactbert.bench import COLUMNS

    ends = [header.index(name) + len(name) for name, _ in COLUMNS[1:]]
    assert all(row[end - 1] != " " and (end == len(row) or row[end] == " ") for end in ends), table
    if extra:
        assert row.split()[1] == "-" and row.split()[5] == "-"
