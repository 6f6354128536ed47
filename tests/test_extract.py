"""BORT's subarchitecture extraction: exact parameter counts and operation counts against built
models of every family, the search space, W and the approximation scheme, BORT's distillation loss
at the masked tokens, and the command line end to end with resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import compactbert as cb
from compactbert import registry
from compactbert.errors import ConfigError
from compactbert.nn.costs import encoder_flops_per_token, parameter_counts
from compactbert.training import DistillationConfig, TextCorpus, distill
from compactbert.training.extract import (
    Architecture, ExtractionConfig, SearchSpace, costs, pareto_front, plan, size_speed_factor,
)
from compactbert.training.progressive import ib_bert_config
from conftest import write_bpe_tokenizer

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def geometries():
    """Every family's tiny preset and Hub geometry, and IB-BERT."""
    for family in registry.families():
        yield f"{family.model_type}-tiny", family.tiny()
        for bench in family.bench:
            yield f"{family.model_type}-hub", bench.config()
    yield "ib-bert", ib_bert_config()


@pytest.mark.parametrize("name,config", list(geometries()), ids=[n for n, _ in geometries()])
def test_parameter_counts_are_exact(name, config):
    with torch.device("meta"):  # built without memory or time: only shapes are counted
        model = cb.ForMaskedLM(config)
    counts = parameter_counts(config.encoder_spec())
    assert counts.layers == sum(p.numel() for p in model.encoder.layers.parameters())
    assert counts.net == sum(p.numel() for p in model.encoder.parameters())
    head = sum(p.numel() for n, p in model.mlm.named_parameters() if n != "decoder")
    assert counts.mlm_head == head
    assert config.encoder_spec().parameter_count() == counts.net + counts.mlm_head


@pytest.mark.parametrize("name,config", [(n, c) for n, c in geometries() if n.endswith("tiny")] +
                         [("ib-bert-small", ib_bert_config(num_hidden_layers=2, hidden_size=32, intra_bottleneck_size=64,
                                                           intermediate_size=96, embedding_size=16, vocab_size=99))],
                         ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("length", [7, 16])
def test_operation_counts_match_torchs_flop_counter(name, config, length):
    """torch.utils.flop_counter on the built model (eager attention, so that the scores and the
    weighted values are counted as matmuls; with autograd on, so that every Linear is an addmm)."""
    model = cb.AutoModel.from_config(config, attn_implementation="eager")
    spec = config.encoder_spec()
    ids = torch.randint(5, spec.vocab_size - 1, (3, length))
    with FlopCounterMode(display=False) as counter:
        model.encoder.run(ids)
    embedding_products = 0
    if spec.embedding_transform:
        embedding_products += 2 * spec.embedding_size * (3 if spec.trigram_input else 1) * spec.hidden_size
    if spec.embedding_projection:
        embedding_products += 2 * spec.embedding_size * spec.hidden_size
    expected = (encoder_flops_per_token(spec, length) + embedding_products) * 3 * length
    assert counter.get_total_flops() == expected


def test_search_space_default_and_files(tmp_path):
    space = SearchSpace.load("default")
    expected = sum(1 for d in (2, 4, 6, 8, 10, 12) for a in (4, 8, 12, 16) for h in (512, 768, 1024)
                   for i in (256, 512, 768, 1024, 3072) if h % a == 0)
    assert len(space.candidates) == expected == 300
    assert space.maximum() == Architecture(12, 16, 1024, 3072)
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"depth": [1, 2], "heads": [3, 4], "width": [8, 12], "ffn": [16]}))
    small = SearchSpace.load(path)
    assert {c.name for c in small.candidates} == {"D1-A4-H8-I16", "D2-A4-H8-I16", "D1-A3-H12-I16", "D2-A3-H12-I16",
                                                  "D1-A4-H12-I16", "D2-A4-H12-I16"}
    for bad, message in (({"depth": [1]}, "names exactly depth, heads, width, ffn"),
                         ({"depth": [], "heads": [1], "width": [8], "ffn": [8]}, "non-empty list of positive"),
                         ({"depth": [1], "heads": [3], "width": [8], "ffn": [8]}, "no heads value divides")):
        with pytest.raises(ConfigError, match=message):
            SearchSpace.load(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="search space file .*broken.json"):
        SearchSpace.load(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="BERT-style models .* the teacher is mobilebert"):
        Architecture(2, 4, 8, 8).config(cb.MobileBertConfig())


def test_plan_buckets_and_representatives():
    teacher = cb.BertConfig(vocab_size=1000)
    space = SearchSpace.load({"depth": [1, 2, 4, 6], "heads": [2, 4], "width": [32, 64, 128], "ffn": [64, 256]})
    for epsilon in (0.05, 0.2, 0.5):
        candidates, top = plan(space, teacher, ExtractionConfig(epsilon=epsilon, sequence_length=32))
        assert top.architecture == Architecture(6, 4, 128, 256)
        order = [(c.costs.parameters, c.costs.flops) for c in candidates]
        assert order == sorted(order)
        for c in candidates:
            p, i = c.costs.parameters / top.costs.parameters, c.costs.flops / top.costs.flops
            assert c.factor == pytest.approx((1 - p) * (1 - i))
        useful = [c for c in candidates if c.factor > 0]
        best = max(c.factor for c in useful)
        buckets = {}
        for c in useful:
            buckets.setdefault(c.bucket, []).append(c)
            assert best * (1 - epsilon) ** (c.bucket + 1) < c.factor <= best * (1 - epsilon) ** c.bucket * (1 + 1e-9)
        trained = [c for c in candidates if c.train]
        assert len(trained) == len(buckets)  # one surrogate per interval: its largest model
        for members in buckets.values():
            chosen = [c for c in members if c.train]
            assert len(chosen) == 1 and chosen[0] is members[-1]
        assert sum(c.train for c in plan(space, teacher, ExtractionConfig(exhaustive=True))[0]) == len(useful)


def test_bort_geometry_scored_against_bert_large():
    """The analytic part of W for the released BORT (D4 A8 H1024 I768) against BERT-large."""
    roberta = registry.get_family("bert").bench[0].config()  # amazon/bort's config.json
    assert roberta.vocab_size == 50265
    bort = costs(Architecture(4, 8, 1024, 768).config(roberta), 128)
    large = costs(Architecture(24, 16, 1024, 4096).config(roberta), 128)
    assert bort.parameters == 4 * (4 * 1024 * 1024 + 2 * 1024 * 768 + 9 * 1024 + 768) == 23_108_608
    assert bort.net_parameters == 75_107_328  # the 52.0M embeddings + 23.1M encoder of training.md
    assert size_speed_factor(bort, large) == pytest.approx((1 - 23_108_608 / large.parameters)
                                                           * (1 - bort.flops / large.flops))


def test_bort_loss_at_the_masked_tokens(tmp_path):
    vocab = write_bpe_tokenizer(tmp_path)
    tokenizer = cb.AutoTokenizer.from_pretrained(tmp_path)
    torch.manual_seed(0)
    teacher = cb.ForMaskedLM.from_config(registry.get_family("bert").tiny(vocab_size=vocab))
    student = cb.ForMaskedLM.from_config(registry.get_family("bert").tiny(vocab_size=vocab, num_hidden_layers=1))
    corpus = TextCorpus([DATA / "corpus_dev.txt"])
    result = distill(teacher, student, tokenizer, corpus, DistillationConfig(
        num_train_epochs=50, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=4,
        alpha_ce=0.5, alpha_mlm=0.1, alpha_cos=0.0, kl_on="masked"))
    assert result.steps == 3 and all(math.isfinite(h["loss"]) for h in result.history)
    with pytest.raises(ValueError, match="kl_on='all'"):
        DistillationConfig(kl_on="all")


@pytest.mark.parametrize("family", [f.model_type for f in registry.families()])
def test_a_part_without_masked_tokens_gives_no_logits_and_no_loss(family):
    """BORT's loss at the masked tokens: a micro-batch may hold none. The model then returns (0, V)
    logits (it used to fail reshaping an empty tensor) and the part adds nothing."""
    from compactbert.training.distill import _loss

    config = registry.get_family(family).tiny(vocab_size=99)
    teacher = cb.ForMaskedLM.from_config(config)
    ids = torch.randint(5, 90, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    nothing = torch.zeros(2, 7, dtype=torch.bool)
    with torch.no_grad():
        assert teacher.eval()(ids, mask, positions=nothing).logits.shape == (0, 99)
    student = cb.ForMaskedLM.from_config(config)
    terms = _loss(teacher, student.train(), {"input_ids": ids, "attention_mask": mask, "labels": torch.full_like(ids, -100)},
                  DistillationConfig(kl_on="masked", alpha_cos=0.0), (5, 5))
    terms.total.backward()
    assert float(terms.total) == 0.0


def _tiny_teacher(folder: Path) -> Path:
    folder.mkdir(parents=True)
    vocab = write_bpe_tokenizer(folder)
    (folder / "config.json").unlink(missing_ok=True)
    torch.manual_seed(0)
    model = cb.ForMaskedLM.from_config(registry.get_family("bert").tiny(vocab_size=vocab, max_position_embeddings=64))
    model.save_pretrained(folder)
    return folder


def test_command_line_end_to_end_with_resume(tmp_path):
    teacher = _tiny_teacher(tmp_path / "teacher")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"depth": [1, 2], "heads": [2, 4], "width": [16, 32], "ffn": [16, 48]}))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "compactbert", "extract", "--teacher", str(teacher), "--corpus",
               str(DATA / "corpus_train.txt"), "--validation", str(DATA / "corpus_dev.txt"), "--space", str(space),
               "--budget-steps", "3", "--per-device-train-batch-size", "8", "--max-length", "32",
               "--sequence-length", "32", "--output-dir", str(out)]
    run = subprocess.run(command + ["--exhaustive"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((out / "candidates.json").read_text())
    # all but the maximum point's geometry (with either head count: heads change neither p nor i), factor 0
    assert len(rows) == 16 and sum(r["trained"] for r in rows) == 14
    assert {r["name"] for r in rows if not r["trained"]} == {"D2-A2-H32-I48", "D2-A4-H32-I48"}
    measured = [r for r in rows if r["W"] is not None]
    assert measured[0]["W"] == max(r["W"] for r in measured)
    for r in measured:
        assert r["W"] == pytest.approx(r["factor"] / r["error"])
    summary = json.loads((out / "extraction.json").read_text())
    assert summary["chosen"]["name"] == measured[0]["name"] and summary["surrogates_trained"] == 14
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | " + measured[0]["name"] in (out / "ranking.md").read_text()
    chosen = cb.AutoConfig.from_pretrained(out)  # config.json, as `compactbert distill --student-config` reads it
    assert (chosen.num_hidden_layers, chosen.num_attention_heads, chosen.hidden_size, chosen.intermediate_size) == (
        measured[0]["depth"], measured[0]["heads"], measured[0]["width"], measured[0]["ffn"])
    assert "surrogate 14/14" in run.stderr and "chosen: " + measured[0]["name"] in run.stdout

    # The approximation resumes from the exhaustive run's surrogates: nothing is trained again.
    run = subprocess.run(command + ["--epsilon", "0.3", "--resume"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "surrogate " not in run.stderr
    approximate = json.loads((out / "extraction.json").read_text())
    assert approximate["surrogates_trained"] < 14
    assert approximate["chosen"]["W"] <= summary["chosen"]["W"]

    run = subprocess.run(command + ["--budget-steps", "4", "--resume"], capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "other settings" in run.stderr and "Traceback" not in run.stderr


def test_pareto_front_keeps_the_undominated():
    candidates, _ = plan(SearchSpace.load({"depth": [1, 2], "heads": [2], "width": [8, 16], "ffn": [8]}),
                         cb.BertConfig(vocab_size=100), ExtractionConfig())
    # D1-H16 is larger and slower than D1-H8 and errs more: dominated. D2-H8 is larger but errs less.
    errors = {"D1-A2-H8-I8": 5.0, "D2-A2-H8-I8": 4.0, "D1-A2-H16-I8": 6.0}
    for c in candidates:
        c.error = errors.get(c.architecture.name)
    assert {c.architecture.name for c in pareto_front(candidates)} == {"D1-A2-H8-I8", "D2-A2-H8-I8"}
