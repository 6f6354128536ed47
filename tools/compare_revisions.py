"""Time `compactbert bench`'s workloads on two revisions of compactbert, in one process, alternating.

    python tools/compare_revisions.py OLD_REV [--families distilbert mobilebert bort] [--repeats 3]

OLD_REV's `compactbert` package is taken from git (`git archive`) and imported under another name
beside the working tree's, so both run on the same machine state, the same weights and the same
inputs, each call alternating with the other's. Printed per family and workload: old median time / new median
time (above 1: the working tree is faster). Workloads, as `compactbert bench` runs them:

* fill-mask: 128 generated sentences (64-265 tokens), one mask each, top 5, batches of 32, in
  float32 and with quantize="int8";
* encoder: one padded batch of 32 sentences; latency: one 16-token sentence; both in float32
  and with quantize="int8".

This answers "is anything slower than before"; `compactbert bench` itself compares with transformers.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import torch

from compactbert.bench import _alternate as alternate  # median per call, one warm-up each

REPO = Path(__file__).resolve().parents[1]


def import_revision(rev: str, into: Path) -> Any:
    """OLD_REV's compactbert package, imported as `compactbert_at_<rev>`."""
    name = "compactbert_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "compactbert"], check=True,
                             capture_output=True).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(into, filter="data")
    (into / "compactbert").rename(into / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def compare(family: str, packages: dict[str, Any], workdir: Path, repeats: int) -> dict[str, float]:
    import compactbert
    from compactbert.synthetic import build_checkpoint, make_sentences

    folder = str(build_checkpoint(family, workdir / family))
    ratios = {}
    for quantize in (None, "int8"):
        pipes = {k: p.pipelines.pipeline("fill-mask", model=folder, batch_size=32, quantize=quantize)
                 for k, p in packages.items()}
        texts = make_sentences(128, mask=pipes["new"].tokenizer.mask_token)
        t = alternate({k: (lambda p=p: p(texts, top_k=5)) for k, p in pipes.items()}, repeats)
        ratios["fill-mask " + (quantize or "float32")] = t["old"] / t["new"]
    tok = compactbert.AutoTokenizer.from_pretrained(folder)
    mask = tok.mask_token
    batch = tok(make_sentences(32, seed=5, mask=mask), padding=True, truncation=True, return_tensors="pt")
    single = {k: v[:1, :16] for k, v in tok(make_sentences(1, seed=6, min_words=30, mask=mask), truncation=True,
                                            return_tensors="pt").items()}
    for quantize in (None, "int8"):
        models = {k: p.AutoModel.from_pretrained(folder, quantize=quantize).eval() for k, p in packages.items()}
        suffix = " int8" if quantize else ""
        with torch.inference_mode():
            for workload, inputs, count in (("encoder 32", batch, repeats), ("latency 1x16", single, repeats * 30)):
                t = alternate({k: (lambda m=m: m(**inputs)) for k, m in models.items()}, count)
                ratios[workload + suffix] = t["old"] / t["new"]
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="git revision to compare the working tree with")
    parser.add_argument("--families", nargs="+", default=["distilbert", "mobilebert", "bort"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import compactbert
    from compactbert.bench import quiet_loading

    quiet_loading()
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"new": compactbert, "old": import_revision(args.old, Path(tmp) / "src")}
        print(f"old = {args.old}, new = working tree; old time / new time (above 1: new is faster)")
        for family in args.families:
            ratios = compare(family, packages, Path(tmp), args.repeats)
            print(f"{family:<11}" + "  ".join(f"{k} {v:.3f}" for k, v in ratios.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
