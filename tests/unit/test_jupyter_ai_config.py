"""jupyter-ai's custom_models as the registration writes them: others' entries kept, ours replaced, a
damaged file left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_modeldeploy.server_ext import jupyter_ai


def test_register_replaces_ours_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "jupyter_ai" / "config.json"
    path.parent.mkdir()
    theirs = {"id": "custom-x/openai/gpt", "name": "mine", "model_id": "openai/gpt", "params": {}}
    path.write_text(json.dumps({"custom_models": [theirs], "fields": {"a": {}}}))
    shown = jupyter_ai.register(path, deployment_id="d1", deployment="smol", models=["a", "b"], api_base="http://h/v1",
                                key="md-secret")
    assert [m["name"] for m in shown] == ["smol · a", "smol · b"] and all("api_key" not in m["params"] for m in shown)
    jupyter_ai.register(path, deployment_id="d1", deployment="smol", models=["a"], api_base="http://h/v1", key="md-new")
    data = json.loads(path.read_text())
    assert data["fields"] == {"a": {}} and data["custom_models"][-1] == theirs
    ours = data["custom_models"][:-1]
    assert [(m["model_id"], m["params"]["api_key"]) for m in ours] == [("openai/a", "md-new")]
    assert ours[0]["id"] == jupyter_ai.entry_id("d1", "a") and ours[0]["id"].startswith("custom-")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert jupyter_ai.unregister(path, "d1") == 1 and json.loads(path.read_text())["custom_models"] == [theirs]
    assert jupyter_ai.unregister(tmp_path / "none.json", "d1") == 0


def test_registered_lists_ours_without_their_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert jupyter_ai.registered(path, "d1") == []
    jupyter_ai.register(path, deployment_id="d1", deployment="smol", models=["a"], api_base="http://h/v1", key="md-k")
    jupyter_ai.register(path, deployment_id="d2", deployment="other", models=["b"], api_base="http://h/v1", key="md-o")
    data = json.loads(path.read_text())
    data["custom_models"].append({"description": jupyter_ai.DESCRIPTION_MARK + "d1", "id": 5})  # edited by hand
    path.write_text(json.dumps(data))
    shown = jupyter_ai.registered(path, "d1")
    assert [(m["model_id"], m["params"]) for m in shown] == [("openai/a", {"api_base": "http://h/v1"})]
    assert "md-k" not in json.dumps(shown)
    jupyter_ai.unregister(path, "d1")
    assert jupyter_ai.registered(path, "d1") == [] and len(jupyter_ai.registered(path, "d2")) == 1


def test_a_damaged_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        jupyter_ai.register(path, deployment_id="d1", deployment="x", models=["a"], api_base="u", key="k")
    assert path.read_text() == "{not json"
