"""Loading by name through the real huggingface_hub client, against a local server speaking the Hub protocol.

The library runs in subprocesses, because huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
when it is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import compactbert as cb
from conftest import tokenized_checkpoint
from hub_server import HubServer

TEXT = "The quick brown [MASK] jumps over the lazy dog."


@pytest.fixture
def hub(tmp_path):
    with HubServer() as server:
        yield server


def run(hub: HubServer, tmp_path, *args: str, offline: bool = False, code: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "compactbert", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def local_results(folder, **kwargs):
    return cb.pipeline("fill-mask", model=folder)(TEXT, **kwargs)


def same_predictions(cli_json: str, expected: list[dict]) -> None:
    got = json.loads(cli_json)[0]["masks"][0]
    assert [p["token"] for p in got] == [p["token"] for p in expected]
    assert all(abs(a["score"] - b["score"]) <= 1e-6 for a, b in zip(got, expected))


def test_download_then_offline_from_cache(hub, tmp_path):
    folder = tokenized_checkpoint(tmp_path / "repo", "distilbert")
    shutil.copy(folder / "model.safetensors", folder / "pytorch_model.bin")  # must not be fetched
    hub.add("org/tiny-distil", folder)

    done = run(hub, tmp_path, "download", "org/tiny-distil")
    assert done.returncode == 0, done.stderr
    assert "is in the cache" in done.stdout
    assert hub.fetched("model.safetensors") == 1 and hub.fetched("pytorch_model.bin") == 0
    assert hub.fetched("tokenizer.json") == 1 and hub.fetched("vocab.txt") == 1

    before = len(hub.requests)
    offline = run(hub, tmp_path, "fill-mask", TEXT, "--model", "org/tiny-distil", "--json", offline=True)
    assert offline.returncode == 0, offline.stderr
    assert len(hub.requests) == before  # nothing touched the network
    same_predictions(offline.stdout, local_results(folder))


def test_revisions(hub, tmp_path):
    main = tokenized_checkpoint(tmp_path / "main", "mobilebert")
    v1 = tokenized_checkpoint(tmp_path / "v1", "mobilebert", num_feedforward_networks=2)
    hub.add("org/mobile", main)
    commit = hub.add("org/mobile", v1, revision="v1")
    for revision in ("v1", commit):
        out = run(hub, tmp_path, "fill-mask", TEXT, "--model", "org/mobile", "--revision", revision, "--json")
        assert out.returncode == 0, out.stderr
        same_predictions(out.stdout, local_results(v1))
    out = run(hub, tmp_path, "fill-mask", TEXT, "--model", "org/mobile", "--json")
    same_predictions(out.stdout, local_results(main))


def test_python_api_by_name(hub, tmp_path):
    folder = tokenized_checkpoint(tmp_path / "repo", "distilbert")
    hub.add("org/api", folder)
    cache = tmp_path / "explicit-cache"
    code = f"""
import compactbert as cb, json
cfg = cb.AutoConfig.from_pretrained("org/api", cache_dir={str(cache)!r})
tok = cb.AutoTokenizer.from_pretrained("org/api", cache_dir={str(cache)!r})
model = cb.AutoModelForMaskedLM.from_pretrained("org/api", cache_dir={str(cache)!r})
again = cb.AutoModel.from_pretrained("org/api", cache_dir={str(cache)!r}, local_files_only=True)
print(json.dumps([cfg.model_type, tok.mask_token, model.num_parameters(), type(again).__name__]))
"""
    out = run(hub, tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    model_type, mask, params, kind = json.loads(out.stdout.strip().splitlines()[-1])
    assert (model_type, mask, kind) == ("distilbert", "[MASK]", "EncoderModel")
    assert params == cb.AutoModelForMaskedLM.from_pretrained(folder).num_parameters()
    assert any(cache.rglob("model.safetensors"))


def test_unknown_repository(hub, tmp_path):
    out = run(hub, tmp_path, "fill-mask", TEXT, "--model", "org/does-not-exist")
    assert out.returncode == 1
    assert out.stderr.startswith("compactbert: error: 'org/does-not-exist': was not found on the Hub")
    assert "Traceback" not in out.stderr


def test_unknown_revision(hub, tmp_path):
    hub.add("org/repo", tokenized_checkpoint(tmp_path / "repo", "distilbert"))
    out = run(hub, tmp_path, "download", "org/repo", "--revision", "nope")
    assert out.returncode == 1 and "revision 'nope' does not exist in 'org/repo'" in out.stderr


def test_repository_without_weights(hub, tmp_path):
    folder = tokenized_checkpoint(tmp_path / "repo", "distilbert")
    (folder / "model.safetensors").unlink()
    hub.add("org/no-weights", folder)
    out = run(hub, tmp_path, "download", "org/no-weights")
    assert out.returncode == 1 and "no weights found in 'org/no-weights'" in out.stderr


def test_offline_cache_miss(hub, tmp_path):
    hub.add("org/never-fetched", tokenized_checkpoint(tmp_path / "repo", "distilbert"))
    out = run(hub, tmp_path, "fill-mask", TEXT, "--model", "org/never-fetched", offline=True)
    assert out.returncode == 1
    assert "is not in the local cache" in out.stderr and "compactbert download org/never-fetched" in out.stderr
    assert not hub.requests


def test_alias_resolves_and_bort_warns_once(hub, tmp_path):
    folder = tokenized_checkpoint(tmp_path / "bort", "bert")
    hub.add("amazon/bort", folder)
    out = run(hub, tmp_path, "fill-mask", "Hello [MASK] world.", "The <mask> barked.", "--model", "bort")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("never trained") == 1
    assert "amazon/bort" in out.stderr


def test_unknown_alias_suggests_close_matches():
    with pytest.raises(cb.UnknownModelError, match="Did you mean 'distilbert-base-uncased'"):
        cb.AutoConfig.from_pretrained("distilbert-base-uncsed")
