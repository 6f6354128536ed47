"""MobileBERT's progressive knowledge transfer: the IB-BERT geometry against the released
computation, the pairing checks, each loss term against a direct formula, LAMB against its update
rule, the layer schedule observed on a real run, resume, the command line and transformers loading
the result."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import compactbert as cb
from compactbert.errors import ConfigError
from compactbert.nn.layers import TokenLayout
from compactbert.training.lamb import Lamb
from compactbert.training.pretraining_data import PretrainingCorpus
from compactbert.training.progressive import (
    TransferConfig, check_pair, ib_bert_config, layer_rate, mobilebert_config, phase_rate, progressive_transfer,
    soft_mlm_loss, student_from_teacher, transfer_terms,
)
from compactbert.training.progressive import run as run_module
from conftest import DEVICES, agree_in_one_and_two_processes, minilm_folder, transformers

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def tiny_pair(layers: int = 3, vocab: int = 30522, **student: object) -> tuple[cb.MobileBertConfig, cb.MobileBertConfig]:
    teacher = ib_bert_config(vocab_size=vocab, num_hidden_layers=layers, hidden_size=32, intra_bottleneck_size=64,
                             intermediate_size=96, embedding_size=16, max_position_embeddings=64,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return teacher, mobilebert_config(teacher, intra_bottleneck_size=16, intermediate_size=24,
                                      num_feedforward_networks=2, **student)


@pytest.fixture(scope="module")
def tokenizer():
    return cb.AutoTokenizer.from_pretrained(minilm_folder())


def documents(path: Path, lines: int = 120, per_document: int = 4) -> Path:
    """The shipped corpus cut into documents of `per_document` lines (a blank line between)."""
    text = (DATA / "corpus_train.txt").read_text().splitlines()[:lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join("\n".join(text[i:i + per_document]) for i in range(0, len(text), per_document)) + "\n")
    return path


# ---------------------------------------------------------------------------- geometry

def test_ib_bert_is_the_released_teacher_and_the_student_the_hub_mobilebert():
    teacher = ib_bert_config()
    assert (teacher.num_hidden_layers, teacher.hidden_size, teacher.true_hidden_size, teacher.intermediate_size,
            teacher.num_attention_heads, teacher.embedding_size) == (24, 512, 1024, 4096, 4, 128)
    assert teacher.normalization_type == "layer_norm" and teacher.hidden_act == "gelu" and teacher.trigram_input
    spec = teacher.encoder_spec()
    assert (spec.qk_input_size, spec.value_input_size, spec.inner_size) == (512, 512, 1024)
    student = mobilebert_config(teacher)
    hub = cb.MobileBertConfig(classifier_activation=False)  # google/mobilebert-uncased's config.json
    assert student.to_dict() == hub.to_dict()


def test_ib_bert_layer_computes_the_released_attention():
    """With neither bottleneck-attention flag, q, k and v read the layer input x (H wide) and the
    attention output adds to the input bottleneck (the released TensorFlow code)."""
    teacher, _ = tiny_pair(layers=1)
    torch.manual_seed(0)
    model = cb.AutoModel.from_config(teacher).eval()
    layer = model.encoder.layers[0]
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    layout = TokenLayout(mask, (2, 5), x.dtype, x.device)
    ours = layout.pad(layer(layout.pack(x), layout))

    att = layer.attention
    heads, d = 4, 16

    def split(t):
        return t.view(2, 5, heads, d).transpose(1, 2)

    residual = layer.bottleneck_in.norm(layer.bottleneck_in.dense(x))
    scores = split(att.q(x)) @ split(att.k(x)).transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], -1e30)
    ctx = (scores.softmax(-1) @ split(att.v(x))).transpose(1, 2).reshape(2, 5, 64)
    a = layer.attention_norm(att.out(ctx) + residual)
    a = layer.ffn.norm(layer.ffn.fc_out(F.gelu(layer.ffn.fc_in(a))) + a)
    expected = layer.bottleneck_out.norm(layer.bottleneck_out.dense(a) + x)
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], expected[keep], rtol=1e-5, atol=1e-5)


def test_pairing_is_checked_with_every_difference_named():
    teacher, student = tiny_pair()
    check_pair(teacher, student)
    with pytest.raises(ConfigError, match=r"num_hidden_layers \(teacher 3, student 2\).*hidden_size \(teacher 32, "
                                          r"student 48\)"):
        check_pair(teacher, student.replace(num_hidden_layers=2, hidden_size=48))
    with pytest.raises(ConfigError, match="num_attention_heads"):
        check_pair(teacher, student.replace(num_attention_heads=2))
    with pytest.raises(ConfigError, match="MobileBERT-layout models .* the teacher is BertConfig"):
        check_pair(cb.BertConfig(), student)


def test_student_starts_from_the_teachers_embeddings_and_heads():
    teacher_config, student_config = tiny_pair()
    torch.manual_seed(0)
    teacher = cb.ForMaskedLM.from_config(teacher_config)
    student = student_from_teacher(teacher, student_config)
    theirs = teacher.state_dict()
    copied = [n for n in student.state_dict() if not n.startswith("encoder.layers.") and n in theirs]
    assert {"encoder.embeddings.word.weight", "encoder.embeddings.transform.weight", "mlm.extra"} <= set(copied)
    for name in copied:
        assert torch.equal(student.state_dict()[name], theirs[name]), name
    assert student.mlm.decoder is student.encoder.embeddings.word.weight  # still tied
    assert hasattr(student, "nsp")


# ---------------------------------------------------------------------------- losses

def test_transfer_terms_equal_direct_formulas():
    torch.manual_seed(0)
    b, heads, t, h = 2, 4, 6, 8
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]]).bool()
    th, sh = torch.randn(b, t, h) * 3 + 1, torch.randn(b, t, h)
    ts, ss = torch.randn(b, heads, t, t), torch.randn(b, heads, t, t)
    masked_ts = ts.masked_fill(~mask[:, None, None, :], torch.finfo(torch.float32).min)
    masked_ss = ss.masked_fill(~mask[:, None, None, :], torch.finfo(torch.float32).min)
    weights = (100.0, 1.0, 5000.0, 5.0)
    terms = transfer_terms(th[mask], sh[mask], masked_ts, masked_ss, mask, weights)

    feature = mean = variance = attention = 0.0
    tokens = queries = 0
    for i in range(b):
        for j in range(t):
            if not mask[i, j]:
                continue
            tokens += 1
            tv, sv = th[i, j].double(), sh[i, j].double()
            tn = (tv - tv.mean()) / torch.sqrt(tv.var(unbiased=False) + 1e-12)
            sn = (sv - sv.mean()) / torch.sqrt(sv.var(unbiased=False) + 1e-12)
            feature += float(((tn - sn) ** 2).mean())
            mean += float((tv.mean() - sv.mean()) ** 2)
            variance += abs(float(tv.var(unbiased=False) - sv.var(unbiased=False)))
            real = mask[i].nonzero().squeeze(1)
            for k in range(heads):
                p = ts[i, k, j, real].double().softmax(-1)
                log_q = ss[i, k, j, real].double().log_softmax(-1)
                attention += float(-(p * log_q).sum())
                queries += 1
    expected = [feature / tokens, attention / queries, mean / tokens, variance / tokens]
    got = [terms.feature, terms.attention, terms.mean, terms.variance]
    for value, reference in zip(got, expected):
        assert float(value) == pytest.approx(reference, rel=1e-5)
    assert float(terms.total) == pytest.approx(sum(w * e for w, e in zip(weights, expected)), rel=1e-5)
    # parts of a batch add up to it when given the batch's counts
    first = transfer_terms(th[:1][mask[:1]], sh[:1][mask[:1]], masked_ts[:1], masked_ss[:1], mask[:1], weights,
                           tokens=tokens, query_rows=queries)
    second = transfer_terms(th[1:][mask[1:]], sh[1:][mask[1:]], masked_ts[1:], masked_ss[1:], mask[1:], weights,
                            tokens=tokens, query_rows=queries)
    assert float(first.total + second.total) == pytest.approx(float(terms.total), rel=1e-5)


def test_soft_masked_lm_target_mixes_label_and_teacher():
    torch.manual_seed(1)
    student, teacher = torch.randn(5, 11), torch.randn(5, 11)
    labels = torch.tensor([0, 3, 3, 10, 7])
    for ratio, temperature in ((0.5, 1.0), (1.0, 1.0), (0.2, 2.0)):
        target = ratio * F.one_hot(labels, 11).double() + (1 - ratio) * (teacher.double() / temperature).softmax(-1)
        expected = float(-(target * student.double().log_softmax(-1)).sum(-1).mean())
        assert float(soft_mlm_loss(student, teacher, labels, ratio, temperature)) == pytest.approx(expected, rel=1e-6)
    assert float(soft_mlm_loss(student, teacher, labels, 1.0)) == pytest.approx(
        float(F.cross_entropy(student, labels)), rel=1e-6)


# ---------------------------------------------------------------------------- optimizer and schedule

def test_lamb_follows_its_update_rule():
    torch.manual_seed(2)
    w0, b0 = torch.randn(4, 3), torch.randn(4)
    w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
    frozen = torch.nn.Parameter(torch.randn(2))
    lr, wd, (b1, b2), eps = 0.01, 0.1, (0.9, 0.999), 1e-6
    optimizer = Lamb([{"params": [w], "weight_decay": wd}, {"params": [b, frozen], "adapt": False}], lr=lr)
    m_w = v_w = torch.zeros_like(w0)
    m_b = v_b = torch.zeros_like(b0)
    ref_w, ref_b = w0.clone(), b0.clone()
    for step in range(3):
        gw, gb = torch.randn(4, 3), torch.randn(4)
        w.grad, b.grad, frozen.grad = gw.clone(), gb.clone(), None
        optimizer.step()
        m_w, v_w = b1 * m_w + (1 - b1) * gw, b2 * v_w + (1 - b2) * gw * gw
        u = m_w / (v_w.sqrt() + eps) + wd * ref_w
        ref_w = ref_w - lr * (ref_w.norm() / u.norm()) * u
        m_b, v_b = b1 * m_b + (1 - b1) * gb, b2 * v_b + (1 - b2) * gb * gb
        ref_b = ref_b - lr * m_b / (v_b.sqrt() + eps)
        torch.testing.assert_close(w.detach(), ref_w, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(b.detach(), ref_b, rtol=1e-6, atol=1e-7)
    assert frozen not in optimizer.state  # no gradient: no step, no moments
    with pytest.raises(ValueError, match="LAMB needs"):
        Lamb([w], lr=-1)


def test_phase_rate_and_layer_multipliers():
    assert phase_rate(0, 100) == 0.0
    assert phase_rate(5, 100) == pytest.approx(0.5)
    assert phase_rate(10, 100) == pytest.approx(0.9 + 0.1 * math.sqrt(0.9))
    assert phase_rate(99, 100) == pytest.approx(0.9 + 0.1 * math.sqrt(0.01))
    assert [layer_rate(i, 2, 0.1) for i in (-1, 0, 1, 2, 3)] == [0.0, 0.1, 0.1, 1.0, 0.0]


def test_the_layer_schedule_on_a_real_run(tokenizer, tmp_path):
    """Observed at every optimizer step of stage 1: the layers above the current one, the embeddings
    and the heads do not move and get no optimizer state; the current layer's matrices move by
    rate x |w| (LAMB's trust ratio) and those below by below_layer_rate x that."""
    teacher_config, student_config = tiny_pair()
    torch.manual_seed(0)
    teacher = cb.ForMaskedLM.from_config(teacher_config)
    student = student_from_teacher(teacher, student_config)
    names = dict(student.named_parameters())
    seen: list[dict] = []

    def before(optimizer, args, kwargs):
        seen.append({"params": {n: p.detach().clone() for n, p in names.items()},
                     "lrs": [(g["layer"], g["lr"]) for g in optimizer.param_groups]})

    def after(optimizer, args, kwargs):
        seen[-1]["after"] = {n: p.detach().clone() for n, p in names.items()}
        seen[-1]["stateful"] = {n for n, p in names.items() if optimizer.state.get(p)}

    per_layer, rate = 4, 1e-2
    config = TransferConfig(stage1_steps=3 * per_layer, stage2_steps=0, per_device_train_batch_size=8,
                            stage1_learning_rate=rate, next_sentence=False, checkpoint_dir=tmp_path)
    hooks = [register_optimizer_step_pre_hook(before),
             register_optimizer_step_post_hook(after)]
    try:
        progressive_transfer(teacher, student, tokenizer, PretrainingCorpus([DATA / "corpus_train.txt"]), config)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 3 * per_layer

    def layer_of(name):
        return int(name.split(".")[2]) if name.startswith("encoder.layers.") else -1

    for step, record in enumerate(seen):
        current, j = divmod(step, per_layer)
        expected = rate * phase_rate(j, per_layer)
        for name in names:
            old, new = record["params"][name], record["after"][name]
            layer = layer_of(name)
            if layer > current or layer == -1:
                assert torch.equal(old, new), (step, name)
                assert name not in record["stateful"], (step, name)
                continue
            assert name in record["stateful"]
            if old.dim() == 2:  # adapted matrices: |dw| = lr x |w|
                share = float((new - old).norm() / old.norm())
                assert share == pytest.approx(expected * (1.0 if layer == current else 0.1), rel=1e-3, abs=1e-9)


# ---------------------------------------------------------------------------- data

def test_documents_give_next_sentence_pairs(tmp_path):
    corpus = PretrainingCorpus([documents(tmp_path / "docs.txt", lines=40, per_document=4)])
    assert len(corpus) == 40 and corpus.documents == 10
    first, second, labels = corpus.batch(seed=0, stage=2, step=3, size=64, next_sentence=True)
    assert set(labels) == {0, 1}
    where = {line: i for i, line in enumerate(corpus.lines)}
    for a, b, label in zip(first, second, labels):
        i, j = where[a], where[b]
        if label == 0:
            assert j == i + 1 and corpus.document[i] == corpus.document[j]
        else:
            assert corpus.document[i] != corpus.document[j]
    assert corpus.batch(0, 2, 3, 64, True) == (first, second, labels)  # a function of (seed, stage, step)
    assert corpus.batch(0, 2, 4, 64, True) != (first, second, labels)
    # every line once per pass
    one_pass = [line for step in range(5) for line in corpus.batch(0, 1, step, 8, False)[0]]
    assert sorted(one_pass) == sorted(corpus.lines)


# ---------------------------------------------------------------------------- runs

def _run(tokenizer, tmp_path, device="cpu", **changes):
    teacher_config, student_config = tiny_pair()
    torch.manual_seed(0)
    teacher = cb.ForMaskedLM.from_config(teacher_config)
    student = student_from_teacher(teacher, student_config)
    config = TransferConfig(**{**dict(stage1_steps=6, stage2_steps=4, per_device_train_batch_size=4,
                                      gradient_accumulation_steps=2, save_steps=2, device=device,
                                      checkpoint_dir=tmp_path / "state"), **changes})
    corpus = PretrainingCorpus([documents(tmp_path / "docs.txt", lines=60)])
    return student, teacher, corpus, config


@pytest.mark.parametrize("device", DEVICES)
def test_interrupted_run_resumes_to_the_same_student(tokenizer, tmp_path, device, monkeypatch):
    student, teacher, corpus, config = _run(tokenizer, tmp_path / "a", device)
    whole = progressive_transfer(teacher, student, tokenizer, corpus, config)
    assert whole.steps == 10

    broken, teacher2, corpus2, config2 = _run(tokenizer, tmp_path / "b", device)
    step = run_module._Transfer.step
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # in stage 2, after the state of step 6 was written
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(run_module._Transfer, "step", failing)
    with pytest.raises(KeyboardInterrupt):
        progressive_transfer(teacher2, broken, tokenizer, corpus2, config2)
    monkeypatch.setattr(run_module._Transfer, "step", step)
    fresh, teacher3, corpus3, _ = _run(tokenizer, tmp_path / "b", device)
    resumed = progressive_transfer(teacher3, fresh, tokenizer, corpus3, config2, resume=True)
    assert resumed.steps == 4  # stage 2's steps after the saved one
    for (name, a), b in zip(student.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.report["stage2"]["history"] == whole.report["stage2"]["history"]
    def losses(report):
        return [{k: v for k, v in layer.items() if k != "seconds_this_session"} for layer in report["stage1"]["layers"]]

    assert losses(resumed.report) == losses(whole.report)

    with pytest.raises(ConfigError, match="other settings .*learning_rate"):
        other, teacher4, corpus4, _ = _run(tokenizer, tmp_path / "b", device)
        progressive_transfer(teacher4, other, tokenizer, corpus4,
                             TransferConfig(**{**config2.__dict__, "learning_rate": 0.5}), resume=True)


def test_bf16_autocast_run(tokenizer, tmp_path):
    """Under bf16 autocast, the frozen teacher's inference kernels give way to autocast's products
    (a packed float32 product next to bfloat16 attention scores used to fail), and the losses stay finite."""
    student, teacher, corpus, config = _run(tokenizer, tmp_path, bf16=True)
    report = progressive_transfer(teacher, student, tokenizer, corpus, config).report
    assert all(math.isfinite(v) for layer in report["stage1"]["layers"] for v in layer["last_tenth"].values())
    assert all(math.isfinite(record["total"]) for record in report["stage2"]["history"])
    assert student.encoder.layers[0].attention.q.weight.dtype == torch.float32  # autocast, not a cast


def test_errors_name_the_problem(tokenizer, tmp_path):
    student, teacher, corpus, config = _run(tokenizer, tmp_path)
    with pytest.raises(ValueError, match="stage1_steps=2 gives the 3 layers no step each"):
        progressive_transfer(teacher, student, tokenizer, corpus, TransferConfig(stage1_steps=2, checkpoint_dir=tmp_path))
    with pytest.raises(ValueError, match="choose one of lamb, adamw"):
        TransferConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="not both 0"):
        TransferConfig(stage1_steps=0, stage2_steps=0)
    plain = cb.ForMaskedLM.from_config(student.config)
    with pytest.raises(ValueError, match="needs a student with a next-sentence head"):
        progressive_transfer(teacher, plain, tokenizer, corpus, config)


def test_command_line_end_to_end_and_transformers_loads_the_student(tokenizer, tmp_path):
    teacher_config, student_config = tiny_pair()
    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    cb.ForMaskedLM.from_config(teacher_config).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    student_file = tmp_path / "student.json"
    student_file.write_text(json.dumps(student_config.to_dict()))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "compactbert", "transfer", "--teacher", str(teacher_dir),
                          "--student-config", str(student_file), "--corpus", str(documents(tmp_path / "d.txt")),
                          "--validation", str(DATA / "corpus_dev.txt"), "--stage1-steps", "6", "--stage2-steps", "4",
                          "--per-device-train-batch-size", "8", "--optimizer", "adamw", "--log-steps", "2",
                          "--output-dir", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "stage 1, layer 3/3, step 2/2" in run.stderr and "stage 2, step 4/4" in run.stderr
    stage1 = json.loads((out / "stage1_report.json").read_text())
    stage2 = json.loads((out / "stage2_report.json").read_text())
    assert [entry["layer"] for entry in stage1["layers"]] == [0, 1, 2]
    assert {"agreement", "divergence", "accuracy", "teacher_accuracy"} <= set(stage2["validation"])
    assert [r["step"] for r in stage2["history"]] == [2, 4] and "nsp" in stage2["history"][0]
    assert not (tmp_path / "out.transfer-state").exists()  # the trainer state is gone once saved

    ours = cb.AutoModelForMaskedLM.from_pretrained(out)
    theirs = transformers.MobileBertForMaskedLM.from_pretrained(out)
    batch = cb.AutoTokenizer.from_pretrained(out)(["Plants release [MASK] into the air.", "A short one."],
                                                  padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = theirs(**batch).logits
        scale = float(expected.abs().max())
        keep = batch["attention_mask"].bool()
        torch.testing.assert_close(ours(**batch).logits[keep], expected[keep], rtol=0, atol=1e-5 * max(1.0, scale))

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(student_config.replace(num_hidden_layers=2).to_dict()))
    run = subprocess.run([sys.executable, "-m", "compactbert", "transfer", "--teacher", str(teacher_dir),
                          "--student-config", str(bad), "--corpus", str(DATA / "corpus_dev.txt"),
                          "--output-dir", str(tmp_path / "never")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "num_hidden_layers (teacher 3, student 2)" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "never").exists()


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    a, _ = agree_in_one_and_two_processes(Path(__file__).resolve().parent / "ddp_transfer.py", tmp_path, rel=1e-4)
    # equal because both trained the same way, not because nothing moved
    for name in ("encoder.layers.0.attention.q.weight", "encoder.layers.2.ffn.fc_in.weight"):
        assert not torch.allclose(a["params"][name], a["initial"][name], atol=1e-4), name
