"""jupyter-ai 2.x's config.json as the registration writes it: the OpenAI-compatible providers' fields and
the one OPENAI_API_KEY, merged with the user's settings, refused where they would be overwritten, removed
exactly, a damaged file left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_modeldeploy.server_ext import jupyter_ai_v2 as v2

BASE = "http://h/modeldeploy/endpoints/smol/v1"
THEIRS = {"model_provider_id": None, "embeddings_provider_id": None, "send_with_shift_enter": True,
          "fields": {"openai-chat:gpt-4o": {"openai_organization": "org"}}, "api_keys": {"ANTHROPIC_API_KEY": "sk-a"},
          "completions_fields": {}, "embeddings_fields": {}}


def owners(**keys: str | None) -> v2.KeyOwner:
    return lambda secret: keys.get(secret)


def config(tmp_path: Path, data: dict[str, object] | None = None) -> Path:
    path = tmp_path / "jupyter_ai" / "config.json"
    path.parent.mkdir(exist_ok=True)
    if data is not None:
        path.write_text(json.dumps(data))
    return path


def test_register_merges_selects_only_when_nothing_is_selected_and_unregister_removes_exactly_that(tmp_path: Path) -> None:
    path = config(tmp_path, THEIRS)
    written = v2.register(path, deployment_id="d1", chat=["a", "b"], embeddings=["e"], api_base=BASE, key="md-k1",
                          whose_key=owners())
    assert written == {"fields": ["openai-chat-custom:a", "openai-chat-custom:b"],
                       "embeddings_fields": ["openai-custom:e"],
                       "selected": ["openai-chat-custom:a", "openai-custom:e"]}
    data = json.loads(path.read_text())
    assert data["model_provider_id"] == "openai-chat-custom:a" and data["embeddings_provider_id"] == "openai-custom:e"
    assert data["fields"]["openai-chat-custom:b"] == {"openai_api_base": BASE}
    assert data["fields"]["openai-chat:gpt-4o"] == {"openai_organization": "org"}  # theirs kept
    assert data["api_keys"] == {"ANTHROPIC_API_KEY": "sk-a", "OPENAI_API_KEY": "md-k1"}
    assert data["send_with_shift_enter"] is True
    assert (path.stat().st_mode & 0o777) == 0o600
    ledger = (path.parent / v2.LEDGER).read_text()
    assert "md-k1" not in ledger  # the ledger holds no key

    assert v2.unregister(path, "d1", owners(**{"md-k1": "d1"})) == 3
    assert json.loads(path.read_text()) == THEIRS | {"completions_model_provider_id": None}
    assert json.loads((path.parent / v2.LEDGER).read_text()) == {}


def test_the_users_selection_stays_and_survives_removal(tmp_path: Path) -> None:
    path = config(tmp_path, {**THEIRS, "model_provider_id": "anthropic-chat:claude"})
    written = v2.register(path, deployment_id="d1", chat=["a"], embeddings=[], api_base=BASE, key="md-k1",
                          whose_key=owners())
    assert written["selected"] == []
    assert json.loads(path.read_text())["model_provider_id"] == "anthropic-chat:claude"
    v2.unregister(path, "d1", owners(**{"md-k1": "d1"}))
    assert json.loads(path.read_text())["model_provider_id"] == "anthropic-chat:claude"


def test_a_file_created_here_has_what_jupyter_ai_requires(tmp_path: Path) -> None:
    path = config(tmp_path)
    v2.register(path, deployment_id="d1", chat=["a"], embeddings=[], api_base=BASE, key="md-k1", whose_key=owners())
    data = json.loads(path.read_text())
    assert set(v2.DEFAULTS) <= set(data) and data["model_provider_id"] == "openai-chat-custom:a"


@pytest.mark.parametrize(("data", "whose", "named"), [
    ({"api_keys": {"OPENAI_API_KEY": "sk-users-own"}}, None, "api_keys.OPENAI_API_KEY is already set"),
    ({"api_keys": {"OPENAI_API_KEY": "md-other"}}, "d2", "registered for deployment d2"),
    ({"api_keys": {"OPENAI_API_KEY": 12345}}, "d2", "api_keys.OPENAI_API_KEY is already set"),
    ({"fields": {"openai-chat-custom:a": {"openai_api_base": "http://elsewhere/v1"}}}, None,
     "fields['openai-chat-custom:a']"),
    ({"embeddings_fields": {"openai-custom:e": {}}}, None, "embeddings_fields['openai-custom:e']"),
    ({"model_provider_id": "openai-chat:gpt-4o"}, None, "model_provider_id is 'openai-chat:gpt-4o'"),
    ({"completions_model_provider_id": "openai-chat-custom:their-vllm"}, None, "completions_model_provider_id is"),
])
def test_what_is_not_ours_is_refused_and_left_unchanged(tmp_path: Path, data: dict[str, object], whose: str | None,
                                                       named: str) -> None:
    path = config(tmp_path, data)
    before = path.read_text()
    with pytest.raises(v2.Conflict, match=named.replace("[", r"\[").replace(".", r"\.")) as caught:
        v2.register(path, deployment_id="d1", chat=["a"], embeddings=["e"], api_base=BASE, key="md-k1",
                    whose_key=lambda secret: whose)
    assert "sk-users-own" not in str(caught.value) and "md-other" not in str(caught.value)
    assert path.read_text() == before and not (path.parent / v2.LEDGER).exists()


def test_a_dead_key_of_ours_is_replaced(tmp_path: Path) -> None:
    path = config(tmp_path, {"api_keys": {"OPENAI_API_KEY": "md-revoked"}})
    v2.register(path, deployment_id="d1", chat=["a"], embeddings=[], api_base=BASE, key="md-k1",
                whose_key=owners(**{"md-revoked": ""}))
    assert json.loads(path.read_text())["api_keys"]["OPENAI_API_KEY"] == "md-k1"


def test_removal_leaves_what_the_user_changed_since(tmp_path: Path) -> None:
    path = config(tmp_path, THEIRS)
    v2.register(path, deployment_id="d1", chat=["a"], embeddings=[], api_base=BASE, key="md-k1", whose_key=owners())
    data = json.loads(path.read_text())
    data["fields"]["openai-chat-custom:a"] = {"openai_api_base": "http://mine/v1"}  # the user's now
    data["api_keys"]["OPENAI_API_KEY"] = "sk-users-own"
    data["model_provider_id"] = "openai-chat-custom:a"
    path.write_text(json.dumps(data, indent=4))  # as jupyter-ai writes it
    assert v2.unregister(path, "d1", owners(**{"md-k1": "d1"})) == 0
    after = json.loads(path.read_text())
    assert after["fields"]["openai-chat-custom:a"] == {"openai_api_base": "http://mine/v1"}
    assert after["api_keys"]["OPENAI_API_KEY"] == "sk-users-own" and after["model_provider_id"] == "openai-chat-custom:a"
    assert v2.unregister(tmp_path / "none" / "config.json", "d1", owners()) == 0


@pytest.mark.parametrize("text", ["{not json", "[]", '{"fields": []}'])
def test_a_damaged_file_is_left_as_it_is(tmp_path: Path, text: str) -> None:
    path = config(tmp_path)
    path.write_text(text)
    with pytest.raises(ValueError, match="left unchanged"):
        v2.register(path, deployment_id="d1", chat=["a"], embeddings=[], api_base=BASE, key="md-k1",
                    whose_key=owners())
    with pytest.raises(ValueError, match="left unchanged"):
        v2.unregister(path, "d1", owners())
    assert path.read_text() == text
