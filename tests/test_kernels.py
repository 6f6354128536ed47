"""The inference kernels (packed weights, fused products) equal the plain computation, and stay out of training."""

from __future__ import annotations

import pytest
import torch

import compactbert as cb
from compactbert.nn.kernels import cached_products, packed_dtypes
from conftest import FAMILIES, HEAD_CLASSES, TINY, has_head, max_rel_err, oracle_model, padded_batch, save_oracle

pytestmark = pytest.mark.skipif(torch.float32 not in packed_dtypes(), reason="no oneDNN on this build")

TOL = 1e-5  # relative to the largest output: fp32 sums in another order
CONFIGS = [
    TINY["bert"](), TINY["bert"](hidden_act="gelu_new"), TINY["bert"](hidden_act="silu"),
    TINY["distilbert"](), TINY["distilbert"](activation="relu"),
    TINY["mobilebert"](), TINY["mobilebert"](use_bottleneck_attention=True),
    TINY["mobilebert"](key_query_shared_bottleneck=False, intra_bottleneck_size=32),
    TINY["mobilebert"](use_bottleneck=False), TINY["mobilebert"](normalization_type="layer_norm"),
]
TASKS = list(HEAD_CLASSES)


def _plain(model, *args, **kwargs):
    """The reference computation: with autograd recording, no packed kernel runs."""
    with torch.enable_grad():
        return model(*args, **kwargs)


def _outputs(out) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in vars(out).items() if isinstance(v, torch.Tensor)}


def _assert_close(fast, plain, mask=None) -> None:
    assert fast.keys() == plain.keys()
    for name in fast:
        keep = mask if mask is not None and fast[name].shape[:2] == mask.shape else None
        assert max_rel_err(plain[name], fast[name], keep) <= TOL, name


def _kernels_ran(model) -> bool:
    return bool(cached_products(model))


@pytest.fixture(params=["onednn", "mkl"])
def kernel(request, monkeypatch):
    """Every product on one float32 kernel: oneDNN's packed weights, or MKL's addmm (which tiny
    models' small weights get by default)."""
    from compactbert.nn import kernels

    monkeypatch.setattr(kernels, "SMALL_WEIGHT", 0 if request.param == "onednn" else 1 << 62)
    return request.param


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.model_type}")
@pytest.mark.parametrize("chunk", [None, 3])
def test_fast_path_equals_plain_path(tmp_path, config, chunk, monkeypatch, kernel):
    """Padded batch, unpadded batch and fill-mask positions: inference kernels = plain path at 1e-5;
    also with the feed-forward networks run `chunk` rows at a time (as for many tokens)."""
    if chunk is not None:
        from compactbert.nn import layers

        monkeypatch.setattr(layers, "FFN_CHUNK_ELEMENTS", chunk * config.intermediate_size if hasattr(
            config, "intermediate_size") else chunk * config.hidden_dim)
    model = cb.AutoModelForMaskedLM.from_pretrained(save_oracle(oracle_model(config), tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, [13, 9, 4, 1], config.pad_token_id)
    positions = torch.zeros_like(mask, dtype=torch.bool)
    positions[0, [0, 5, 12]] = True
    positions[2, 3] = True
    full = torch.ones_like(mask)
    for kwargs in ({"attention_mask": mask}, {}, {"attention_mask": mask, "positions": positions},
                   {"attention_mask": full}, {"attention_mask": full, "positions": positions}):
        with torch.inference_mode():
            fast = _outputs(model(ids, **kwargs))
        assert _kernels_ran(model)
        assert {e.mkl for e in cached_products(model)} == {kernel == "mkl"}
        _assert_close(fast, _outputs(_plain(model, ids, **kwargs)), mask)


@pytest.mark.parametrize("config", CONFIGS[::3] + [TINY["mobilebert"]()], ids=lambda c: f"{c.model_type}")
def test_mask_without_padding_equals_no_mask(tmp_path, config):
    """An attention mask of ones runs the packed path (every token kept): every output, hidden
    states and attentions included, equals the call without a mask (the padded path) at 1e-5."""
    model = cb.AutoModelForMaskedLM.from_pretrained(save_oracle(oracle_model(config), tmp_path / "m"))
    ids = torch.randint(5, config.vocab_size, (3, 11))
    full = torch.ones_like(ids)
    with torch.inference_mode():
        packed = model(ids, attention_mask=full, output_hidden_states=True, output_attentions=True)
        padded = model(ids, output_hidden_states=True, output_attentions=True)
    _assert_close(_outputs(packed), _outputs(padded))
    for name in ("hidden_states", "attentions"):
        pairs = list(zip(getattr(packed, name), getattr(padded, name), strict=True))
        assert pairs and all(max_rel_err(b, a) <= TOL for a, b in pairs), name


@pytest.mark.parametrize("family,config", [(f, TINY[f]()) for f in FAMILIES])
@pytest.mark.parametrize("task", TASKS)
def test_every_head_equals_plain_path(tmp_path, family, config, task, kernel):
    if not has_head(family, task):
        pytest.skip("DistilBERT has no such head")
    folder = save_oracle(oracle_model(config, task), tmp_path / "m")
    model = HEAD_CLASSES[task].from_pretrained(folder)
    ids, mask = padded_batch(config.vocab_size, [11, 6], config.pad_token_id)
    if task == "multiple_choice":
        ids, mask = ids[None], mask[None]  # (1 question, 2 choices, T)
    with torch.no_grad():
        fast = _outputs(model(ids, mask))
    _assert_close(fast, _outputs(_plain(model, ids, mask)), mask if task != "multiple_choice" else None)


def test_packed_weights_follow_in_place_updates_and_dtype_changes(tmp_path):
    config = TINY["mobilebert"]()
    model = cb.AutoModel.from_pretrained(save_oracle(oracle_model(config, "base"), tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, [9, 5], 0)
    with torch.no_grad():
        before = model(ids, mask).last_hidden_state
        layer = model.encoder.layers[0]
        layer.bottleneck_in.norm.weight.mul_(1.5)  # folded into a fused product
        layer.ffn.fc_in.weight.add_(0.05)
        layer.attention.q.bias.add_(0.1)
        after = model(ids, mask).last_hidden_state
    assert not torch.allclose(before, after)
    assert max_rel_err(_plain(model, ids, mask).last_hidden_state.detach(), after, mask) <= TOL
    model.to(torch.float64).to(torch.float32)  # new storage: the caches must be rebuilt, not reused
    with torch.no_grad():
        again = model(ids, mask).last_hidden_state
    assert max_rel_err(after, again, mask) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_model_loaded_under_inference_mode_runs(tiny_checkpoint, family, quantize):
    """Parameters made under torch.inference_mode() are inference tensors, which keep no version
    counter: the packed copies are keyed without it (this used to raise a RuntimeError)."""
    folder = tiny_checkpoint(family, "masked_lm")
    ids, mask = padded_batch(99, [9, 5], 0)
    with torch.no_grad():
        expected = cb.AutoModelForMaskedLM.from_pretrained(folder, quantize=quantize)(ids, mask).logits
    with torch.inference_mode():
        model = cb.AutoModelForMaskedLM.from_pretrained(folder, quantize=quantize)
        assert model.encoder.layers[0].attention.q.weight.is_inference()
        assert torch.equal(model(ids, mask).logits, expected)
        assert torch.equal(model(ids, mask).logits, expected)  # the cached copies, reused
        assert _kernels_ran(model)
        # Copying weights into inference tensors bumps no version: load_state_dict drops the copies.
        other = {k: v * 1.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        model.load_state_dict(other)
        changed = model(ids, mask).logits
    with torch.no_grad():
        fresh = cb.AutoModelForMaskedLM.from_pretrained(folder, quantize=quantize)
        fresh.load_state_dict(other)
        assert torch.equal(changed, fresh(ids, mask).logits)


@pytest.mark.parametrize("family", ["distilbert", "mobilebert"])
def test_torch_compile_matches_eager(tiny_checkpoint, family):
    """torch.compile(model) traces the plain products and the padded attention path (packed
    weights are opaque to inductor, which failed to lower them), with no graph break, and gives
    eager's outputs; a new batch shape recompiles and still does."""
    torch._dynamo.reset()
    model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint(family, "masked_lm"))
    compiled = torch.compile(model, fullgraph=True)
    for lengths in ([9, 5], [7, 7, 3]):
        ids, mask = padded_batch(99, lengths, 0)
        with torch.no_grad():
            got = compiled(ids, mask).logits  # first: the model has not run eagerly yet
            eager = model(ids, mask).logits
            assert _kernels_ran(model)
            assert max_rel_err(eager, got, mask) <= TOL


def test_training_never_sees_packed_weights(tmp_path):
    config = TINY["distilbert"]()
    model = cb.AutoModelForSequenceClassification.from_pretrained(
        save_oracle(oracle_model(config, "sequence_classification"), tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, [9, 5], 0)
    with torch.no_grad():
        model(ids, mask)
    assert _kernels_ran(model)
    keys = set(model.state_dict())
    model.train()
    assert not _kernels_ran(model)  # train() drops the caches
    out = model(ids, mask, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.layers[0].parameters())
    assert not _kernels_ran(model)
    assert set(model.state_dict()) == keys  # never a parameter or buffer
    saved = model.save_pretrained(tmp_path / "saved")
    assert cb.AutoModelForSequenceClassification.from_pretrained(saved).load_report.message() == ""


def test_models_with_packed_weights_copy_and_pickle(tmp_path):
    """The caches sit beside the modules: deepcopy and torch.save see only the parameters."""
    import copy
    import io

    config = TINY["mobilebert"]()
    model = cb.AutoModelForMaskedLM.from_pretrained(save_oracle(oracle_model(config), tmp_path / "m"))
    ids, mask = padded_batch(config.vocab_size, [9, 5], 0)
    with torch.no_grad():
        before = model(ids, mask).logits
    assert _kernels_ran(model)
    twin = copy.deepcopy(model)
    assert not _kernels_ran(twin)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    torch.save(model, io.BytesIO())  # whole-module pickling works too
    with torch.no_grad():
        assert torch.equal(twin(ids, mask).logits, before)


def test_small_float32_weights_run_on_mkl_and_large_ones_on_onednn():
    """The kernel follows the weight's size and dtype (SMALL_WEIGHT), and both give F.linear's result."""
    from compactbert.nn import kernels

    torch.manual_seed(0)
    for shape, dtype, mkl in (((512, 128), torch.float32, True), ((384, 384), torch.float32, True),
                              ((512, 512), torch.float32, False), ((768, 3072), torch.float32, False),
                              ((512, 128), torch.bfloat16, False)):
        if dtype not in packed_dtypes():
            continue
        linear = torch.nn.Linear(shape[1], shape[0]).to(dtype).eval()
        x = torch.randn(2, 16, shape[1], dtype=dtype)
        with torch.inference_mode():
            out = kernels.linear(linear, x)
        assert [e.mkl for e in cached_products(linear)] == [mkl], (shape, dtype)
        expected = torch.nn.functional.linear(x.float(), linear.weight.float(), linear.bias.float())
        assert max_rel_err(expected, out.float()) <= (TOL if dtype == torch.float32 else 1e-2), (shape, dtype)


@pytest.mark.parametrize("fused", [None, "gelu", "residual"])
def test_packed_row_counts_stay_in_the_bucket_set(monkeypatch, kernel, fused):
    """Every oneDNN product runs on a bucket row count (oneDNN keeps memory per shape), whether the
    rows are padded or split into a bucket and a padded rest, and the result is F.linear's; MKL's
    products run on the rows as they are."""
    from compactbert.nn import kernels

    seen = []
    run = kernels._run_packed
    monkeypatch.setattr(kernels, "_run_packed", lambda entry, x, *a: seen.append(x.shape[0]) or run(entry, x, *a))
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40).eval()
    for rows in (5, 64, 65, 70, 100, 127, 1000, 2050, 2300):
        x, residual = torch.randn(rows, 24), torch.randn(rows, 40)
        with torch.inference_mode():
            out = kernels.fast_linear(linear, x, activation="gelu" if fused == "gelu" else None,
                                      residual=residual if fused == "residual" else None)
        expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
        expected = torch.nn.functional.gelu(expected) if fused == "gelu" else expected
        expected = expected + residual if fused == "residual" else expected
        assert out.shape == (rows, 40) and max_rel_err(expected, out) <= TOL, rows
    if kernel == "mkl":
        assert not seen
        return
    assert all(kernels.bucket_rows(n) == n for n in seen), seen
    assert 2048 in seen  # 2,050 rows: the 2,048 bucket, then 2 rows padded to 8
