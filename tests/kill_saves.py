"""Kill saves with SIGKILL at random instants and check what is left: python kill_saves.py FOLDER ROUNDS.

A child process (forked, so torch is imported once) saves two models, A and B, into FOLDER in turn,
forever; the parent kills it after a random delay, then loads FOLDER and checks it is entirely A or
entirely B (config marker and every weight) with the unrelated file README.md kept. Prints a JSON
summary on the last line."""

import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compactbert as cb  # noqa: E402
from conftest import TINY  # noqa: E402

folder, rounds = Path(sys.argv[1]), int(sys.argv[2])
models = {}
for version, seed in (("A", 1), ("B", 2)):
    torch.manual_seed(seed)
    models[version] = cb.AutoModelForMaskedLM.from_config(
        TINY["bert"](hidden_size=64, intermediate_size=128, id2label={0: version, 1: "x"}))
expected = {v: {k: t.clone() for k, t in m.state_dict().items()} for v, m in models.items()}
models["A"].save_pretrained(folder)
(folder / "README.md").write_text("kept across saves\n")

rng = random.Random(0)
seen = {"A": 0, "B": 0}
mid_save = 0
problems = []
for round_number in range(rounds):
    pid = os.fork()
    if pid == 0:  # the child: save B, A, B, ... until killed
        try:
            while True:
                for version in ("B", "A"):
                    models[version].save_pretrained(folder)
        finally:
            os._exit(1)
    time.sleep(rng.uniform(0.0, 0.25))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    leftovers = [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    mid_save += bool(leftovers)
    for leftover in leftovers:  # what a crashed save leaves beside the folder; never read
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        loaded = cb.AutoModelForMaskedLM.from_pretrained(folder)
        version = loaded.config.id2label[0]
        state = loaded.state_dict()
        if any(not torch.equal(state[k], expected[version][k]) for k in state):
            problems.append(f"round {round_number}: config says {version} but the weights differ")
        if not (folder / "README.md").is_file():
            problems.append(f"round {round_number}: README.md lost")
        seen[version] += 1
    except Exception as exc:  # noqa: BLE001 - reported, the test fails on any
        problems.append(f"round {round_number}: {type(exc).__name__}: {exc}")
print(json.dumps({"rounds": rounds, "seen": seen, "killed_mid_save": mid_save, "problems": problems}))
