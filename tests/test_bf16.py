"""bfloat16 as a first-class mode: every family, head and pipeline against float32, losses in float32,
MobileBERT's large activations finite, the packed bf16 kernels against the plain bf16 path."""

from __future__ import annotations

import copy
import platform

import pytest
import torch

import compactbert as cb
from compactbert.nn.kernels import cached_products, packed_dtypes
from conftest import FAMILIES, HEAD_CLASSES, has_head, max_rel_err, padded_batch, tokenized_checkpoint

# bf16 keeps 8 bits of mantissa: on tiny random models every output is within 3% of its largest
# value (measured <= 1.2%); losses within 2% of the float32 loss.
TOL = 3e-2
LABELS = {"sequence_classification": {"labels": torch.tensor([0, 1])},
          "token_classification": {"labels": torch.zeros(2, 12, dtype=torch.long)},
          "question_answering": {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([3, 4])},
          "multiple_choice": {"labels": torch.tensor([1])},
          "next_sentence": {"labels": torch.tensor([0, 1])},
          "masked_lm": {"labels": torch.full((2, 12), -100).index_fill_(1, torch.tensor([2, 5]), 7)},
          "pretraining": {"labels": torch.full((2, 12), -100).index_fill_(1, torch.tensor([2, 5]), 7),
                          "next_sentence_label": torch.tensor([0, 1])}}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", list(HEAD_CLASSES))
def test_bf16_every_family_and_head_close_to_fp32(tiny_checkpoint, family, task):
    if not has_head(family, task):
        pytest.skip("DistilBERT has no such head")
    folder = tiny_checkpoint(family, task)
    cls = HEAD_CLASSES[task]
    fp32, bf16 = cls.from_pretrained(folder), cls.from_pretrained(folder, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    ids, mask = padded_batch(99, [12, 7], 0)
    if task == "multiple_choice":
        ids, mask = ids[None], mask[None]
    labels = LABELS.get(task, {})
    with torch.no_grad():
        a, b = fp32(ids, mask, **labels), bf16(ids, mask, **labels)
    keep = mask if task != "multiple_choice" else None
    for name, value in vars(a).items():
        if not isinstance(value, torch.Tensor):
            continue
        other = getattr(b, name)
        if name == "loss":
            assert other.dtype == torch.float32  # computed in float32 from the bf16 logits
            assert abs(other.item() - value.item()) <= 2e-2 * abs(value.item()), name
            continue
        assert other.dtype == torch.bfloat16 and torch.isfinite(other.float()).all(), name
        rows = keep if keep is not None and value.shape[:2] == keep.shape else None
        assert max_rel_err(value, other.float(), rows) <= TOL, name


@pytest.mark.skipif(torch.bfloat16 not in packed_dtypes(), reason="no oneDNN bf16 kernels on this CPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_packed_kernels_match_plain_bf16(tiny_checkpoint, family):
    model = cb.AutoModelForMaskedLM.from_pretrained(tiny_checkpoint(family), dtype=torch.bfloat16)
    ids, mask = padded_batch(99, [12, 7], 0)
    with torch.no_grad():
        fast = model(ids, mask).logits.float()
    assert cached_products(model)
    with torch.enable_grad():
        plain = model(ids, mask).logits.detach().float()
    assert max_rel_err(plain, fast, mask) <= TOL


def test_bf16_is_called_native_only_with_the_instructions():
    """oneDNN accepts bf16 on any AVX-512 x86 CPU and emulates it there (slower than float32):
    `compactbert env` and the benchmark call it native only with AVX512-BF16 or AMX."""
    from compactbert.devices import cpu_flags
    from compactbert.nn.kernels import bf16_is_native, describe

    avx512 = {"avx512f", "avx512bw", "avx512_vnni"}
    assert not bf16_is_native(True, "x86_64", avx512)  # an Intel Xeon with AVX-512 and VNNI only
    assert bf16_is_native(True, "x86_64", avx512 | {"avx512_bf16"})
    assert bf16_is_native(True, "AMD64", {"amx_bf16", "amx_tile"})
    assert not bf16_is_native(False, "x86_64", avx512 | {"avx512_bf16"})
    assert bf16_is_native(True, "aarch64", set())  # oneDNN's own check stands off x86
    if platform.machine().lower() in ("x86_64", "amd64"):
        native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
        assert describe()["bfloat16"].startswith("native") == (native and torch.bfloat16 in packed_dtypes())


def test_mobilebert_bf16_stays_finite_where_float16_overflows(tiny_checkpoint):
    """MobileBERT's activations reach 1e7-1e8 (real checkpoints); bf16 has float32's exponent range."""
    model = cb.AutoModel.from_pretrained(tiny_checkpoint("mobilebert", "base"))
    with torch.no_grad():
        for layer in model.encoder.layers:  # scale the NoNorm outputs up to MobileBERT's real magnitudes
            layer.bottleneck_out.norm.weight.mul_(3000.0)  # weights stay within float16's range
    ids, mask = padded_batch(99, [12, 7], 0)
    with torch.no_grad():
        reference = model(ids, mask).last_hidden_state
        assert reference.abs().max() > 7e4  # beyond float16's largest value (65504)
        half = copy.deepcopy(model).to(torch.float16)(ids, mask).last_hidden_state
        bf16 = copy.deepcopy(model).to(torch.bfloat16)(ids, mask).last_hidden_state
    assert not torch.isfinite(half[mask.bool()]).all()
    assert torch.isfinite(bf16).all()
    assert max_rel_err(reference, bf16.float(), mask) <= TOL


@pytest.mark.parametrize("family", ["distilbert", "mobilebert"])
def test_every_pipeline_runs_in_bf16_and_agrees_with_fp32(tmp_path, family):
    cases = {
        "fill-mask": ("masked_lm", "The capital of France is [MASK].",
                      lambda r: [p["token"] for p in r]),
        "text-classification": ("sequence_classification", "A wonderful, moving film.",
                                lambda r: r[0]["label"] if isinstance(r, list) else r["label"]),
        "token-classification": ("token_classification", "Ada Lovelace lived in London.",
                                 lambda r: [(e["word"], e["entity"]) for e in r]),
        "question-answering": ("question_answering", {"question": "Where did she live?",
                                                      "context": "Ada Lovelace lived in London."},
                               lambda r: (r["start"], r["end"])),
        "feature-extraction": ("base", "Plants create energy.", None),
    }
    for task, (head, text, key) in cases.items():
        folder = tokenized_checkpoint(tmp_path / task, family, head)
        fp32 = cb.pipeline(task, model=folder)(text)
        bf16 = cb.pipeline(task, model=folder, dtype="bfloat16")(text)
        if key is None:
            a, b = torch.as_tensor(fp32), torch.as_tensor(bf16)
            assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
        elif task == "fill-mask":
            assert key(fp32)[0] == key(bf16)[0]
        else:
            assert key(fp32) == key(bf16), task
