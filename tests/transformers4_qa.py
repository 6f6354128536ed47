"""Run the question-answering pipeline of transformers 4.57 (removed in transformers 5) on a folder.

Used as the QA oracle in a subprocess whose PYTHONPATH puts transformers 4.57 first (see
tests/test_question_answering.py). argv: folder, JSON list of [inputs, kwargs] calls. Prints JSON.
"""

import json
import sys

import transformers

assert transformers.__version__.startswith("4."), transformers.__version__
qa = transformers.pipeline("question-answering", model=sys.argv[1], device="cpu")
results = [qa(inputs, **kwargs) for inputs, kwargs in json.loads(sys.argv[2])]
print(json.dumps(results))
