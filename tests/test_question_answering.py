"""question-answering pipeline: the same answers as transformers' pipeline on the same folders.

transformers 5 removed its question-answering pipeline, so the oracle is the last release that
has it (4.57.1), installed apart in .oracle/transformers4 (see the README's test command) and run
in a subprocess with that folder first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import compactbert as cb
from compactbert.tasks.question_answering import encode_windows
from conftest import tokenized_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(os.environ.get("COMPACTBERT_TRANSFORMERS4", ROOT / ".oracle" / "transformers4"))
INSTALL = "bash tests/setup_oracles.sh"

CONTEXT = ("Ada Lovelace was an English mathematician and writer, chiefly known for her work on Charles "
           "Babbage's proposed mechanical general-purpose computer, the Analytical Engine. She was the first "
           "to recognise that the machine had applications beyond pure calculation. Her notes on the engine "
           "include what is often called the first published algorithm, written in 1843 while she lived in "
           "London with her husband William King and their three children, Byron, Annabella and Ralph.")
QUESTIONS = ["Who was Ada Lovelace?", "When was the first algorithm published?", "Where did she live?"]
# Windows of 48 tokens overlapping by 16 make several windows per question (the model reads 64).
CALLS = [
    ({"question": QUESTIONS[0], "context": CONTEXT}, {"max_seq_len": 48, "doc_stride": 16}),
    ({"question": QUESTIONS[1], "context": CONTEXT}, {"max_seq_len": 56, "doc_stride": 12, "top_k": 3}),
    ({"question": QUESTIONS[2], "context": CONTEXT},
     {"max_seq_len": 40, "doc_stride": 8, "top_k": 2, "handle_impossible_answer": True}),
    ({"question": QUESTIONS[0], "context": CONTEXT}, {"max_seq_len": 48, "doc_stride": 20, "align_to_words": False,
                                                       "max_answer_len": 4, "top_k": 2}),
    ({"question": "Who?", "context": "Ada wrote notes on the engine."}, {}),  # one window, default lengths
]


def _oracle(folder: Path) -> list:
    if not (ORACLE / "transformers").is_dir():
        pytest.fail(f"the transformers 4.57 QA oracle is not installed in {ORACLE}; run: {INSTALL}")
    env = {**os.environ, "PYTHONPATH": str(ORACLE), "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "transformers4_qa.py"), str(folder), json.dumps(CALLS)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _same(got, want):
    if isinstance(want, dict):
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
        assert got["score"] == pytest.approx(want["score"], rel=1e-4, abs=1e-7)
    else:
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)


@pytest.fixture(scope="module", params=["distilbert", "mobilebert", "bert"], ids=["distilbert", "mobilebert", "bort"])
def qa_folder(request, tmp_path_factory):
    return tokenized_checkpoint(tmp_path_factory.mktemp("qa") / request.param, request.param, "question_answering")


def test_answers_equal_transformers_pipeline(qa_folder):
    ours = cb.pipeline("question-answering", model=qa_folder)
    want = _oracle(qa_folder)
    assert len(encode_windows(ours.tokenizer, [QUESTIONS[0]], [CONTEXT], 48, 16)[0]) >= 3  # really long contexts
    for (inputs, kwargs), expected in zip(CALLS, want):
        _same(ours(**inputs, **kwargs), expected)
        _same(ours(inputs, **kwargs), expected)  # the dict form
    # Several questions in one call (windows of different questions batched together): same answers.
    kwargs = {"max_seq_len": 56, "doc_stride": 12, "top_k": 2}
    alone = [ours(question=q, context=CONTEXT, **kwargs) for q in QUESTIONS]
    _same(ours(question=QUESTIONS, context=CONTEXT, **kwargs), alone)
    _same(ours([{"question": q, "context": CONTEXT} for q in QUESTIONS], batch_size=2, **kwargs), alone)


def test_answer_text_comes_from_the_context(qa_folder):
    ours = cb.pipeline("question-answering", model=qa_folder)
    for answer in ours(question=QUESTIONS[1], context=CONTEXT, top_k=5, max_seq_len=56, doc_stride=12):
        assert CONTEXT[answer["start"]:answer["end"]] == answer["answer"] and answer["answer"]
        assert 0 < answer["score"] <= 1


def test_bad_input_is_refused(qa_folder):
    ours = cb.pipeline("question-answering", model=qa_folder)
    with pytest.raises(cb.InputError, match="both a question and a context"):
        ours(question="who?")
    with pytest.raises(cb.InputError, match="2 questions but 3 contexts"):
        ours(question=["a?", "b?"], context=["x", "y", "z"])
    with pytest.raises(cb.InputError, match="is empty"):
        ours(question="  ", context=CONTEXT)
    with pytest.raises(cb.InputError, match="'question' and 'context'"):
        ours([{"question": "a?"}])
    with pytest.raises(cb.InputError, match="exceeds this model's limit of 64"):
        ours(question="a?", context=CONTEXT, max_seq_len=512)
    with pytest.raises(cb.InputError, match="must be smaller than max_seq_len"):
        ours(question="a?", context=CONTEXT, max_seq_len=32, doc_stride=32)
    with pytest.raises(cb.InputError, match="shorten the question, raise max_seq_len"):
        ours(question=" ".join(["why"] * 80), context=CONTEXT, max_seq_len=32, doc_stride=8)
