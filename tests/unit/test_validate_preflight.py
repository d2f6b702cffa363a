"""What `/validate` finds before a launch: missing model paths, non-GGUF files, unknown hub repos offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.server_ext.validate import preflight


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    return cache


def llamacpp(model: str, **extra: object) -> object:
    return parse_config({"kind": "llamacpp", "name": "smol", "model": model, **extra})


def test_llamacpp_model_must_exist_and_be_gguf(tmp_path: Path, empty_hf_cache: Path) -> None:
    good = tmp_path / "good.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 60)
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model")
    assert preflight(llamacpp(str(good)), offline=True) == []
    [missing] = preflight(llamacpp(str(tmp_path / "nope.gguf")), offline=True)
    assert missing["field"] == "model" and "no file" in missing["message"] and "nope.gguf" in missing["message"]
    [wrong] = preflight(llamacpp(str(text)), offline=True)
    assert wrong["field"] == "model" and "not a GGUF file" in wrong["message"]
    [folder] = preflight(llamacpp(str(tmp_path)), offline=True)
    assert "is a folder" in folder["message"]
    [extra] = preflight(llamacpp(str(good), additional_models=[str(text)]), offline=True)
    assert extra["field"] == "additional_models.0"


def test_hub_references_offline_must_be_cached(empty_hf_cache: Path) -> None:
    [file_ref] = preflight(llamacpp("someone/some-repo/model.Q4.gguf"), offline=True)
    assert "not in the local Hugging Face cache" in file_ref["message"] and "offline" in file_ref["message"]
    assert preflight(llamacpp("someone/some-repo/model.Q4.gguf"), offline=False) == []  # the hub decides
    llm = parse_config({"kind": "llm", "name": "big", "model": "nobody/no-such-model"})
    [repo] = preflight(llm, offline=True)
    assert repo["field"] == "model" and "unknown Hugging Face repo nobody/no-such-model" in repo["message"]
    emb = parse_config({"kind": "embedding", "name": "e", "models": [{"model": "/no/such/folder"}]})
    [folder] = preflight(emb, offline=True)
    assert folder["field"] == "models.0.model" and "no folder /no/such/folder" in folder["message"]


def test_cached_repo_and_local_folder_pass(tmp_path: Path, empty_hf_cache: Path) -> None:
    snapshot = empty_hf_cache / "models--owner--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = empty_hf_cache / "models--owner--cached" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    llm = parse_config({"kind": "llm", "name": "big", "model": "owner/cached"})
    assert preflight(llm, offline=True) == []
    local = parse_config({"kind": "llm", "name": "big", "model": str(tmp_path)})
    assert preflight(local, offline=True) == []
