"""jupyter-ai 2.x: a deployment registered through its OpenAI-compatible provider's settings, tested
against the real package (`jupyter-ai` 2.x with `langchain-openai`, in its own environment: `make
jupyter-ai-2`).

jupyter-ai's own ConfigManager reads the file (and rewrites it, as its server does when it starts) and
lists the model as selected with its base URL and key; the provider class it names, built with the
parameters it gives (as its chat handlers do), answers a chat through the gateway with the key made
for it. Unregistering removes what was written and revokes the key (401); so does deleting the
deployment.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from jupyter_modeldeploy.client import ModelDeployError
from jupyter_modeldeploy.paths import cache_root
from tests.support.fake_server import fake_deployment, fake_jupyter

pytestmark = pytest.mark.integration

JUPYTER_AI_VERSION = "2.31.7"  # the Makefile's jupyter-ai-2 target installs the same
CHAT_THROUGH_JUPYTER_AI = """
import json, logging
from jupyter_ai.config_manager import ConfigManager
from jupyter_ai_magics.utils import get_em_providers, get_lm_providers

manager = ConfigManager(log=logging.getLogger("jupyter-ai"), lm_providers=get_lm_providers(),
                        em_providers=get_em_providers(), defaults={})
described = manager.get_config()  # what its settings panel shows: key names, not keys
provider = manager.lm_provider
answer = provider(**manager.lm_provider_params).invoke("Say hello")
embeddings = get_em_providers()["openai-custom"]  # what an embedding model's registration writes for
print(json.dumps({"model_provider_id": described.model_provider_id, "fields": described.fields,
                  "api_keys": described.api_keys, "provider": provider.id, "content": answer.content,
                  "key_names": [provider.auth_strategy.name, embeddings.auth_strategy.name],
                  "embeddings_fields": [f.key for f in embeddings.fields]}))
"""


def jupyter_ai_python() -> Path:
    return cache_root() / f"jupyter-ai-{JUPYTER_AI_VERSION}" / "bin" / "python"


def through_jupyter_ai(data_dir: Path, home: Path) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "JUPYTER_DATA_DIR": str(data_dir)}
    chat = subprocess.run([str(jupyter_ai_python()), "-c", CHAT_THROUGH_JUPYTER_AI], capture_output=True, text=True,
                          timeout=300, env=env, cwd=home)
    assert chat.returncode == 0, chat.stderr[-3000:]
    return json.loads(chat.stdout.strip().splitlines()[-1])


def test_a_deployment_becomes_a_jupyter_ai_2_model_and_answers_its_chat(tmp_path: Path) -> None:
    if not jupyter_ai_python().exists():
        pytest.skip(f"jupyter-ai {JUPYTER_AI_VERSION} is not installed at {jupyter_ai_python().parent.parent}: "
                    "run 'make jupyter-ai-2'")
    ours = fake_jupyter(tmp_path / "ours", "--ModelDeployApp.jupyter_ai_version=2")
    data_dir = tmp_path / "ours" / "data"  # the Jupyter data folder both read
    config_file = data_dir / "jupyter_ai" / "config.json"
    config_file.parent.mkdir(parents=True)
    theirs = {"fields": {"openai-chat:gpt-4o": {"openai_organization": "org-mine"}},
              "api_keys": {"ANTHROPIC_API_KEY": "sk-ant-mine"}}
    config_file.write_text(json.dumps(theirs))
    try:
        client = ours.client()
        record = client.wait(client.launch(fake_deployment("for-ai"))["id"], timeout=60)
        model, api_base = record["models"][0]["name"], record["api_base"]
        gid = f"openai-chat-custom:{model}"
        with pytest.raises(ModelDeployError, match="version must be 2 or 3") as bad:
            client.register_ai("for-ai", version=9)
        assert bad.value.status == 400
        # The user's own OPENAI_API_KEY is never overwritten: 409 naming it, the file as it was, no key left live.
        config_file.write_text(json.dumps({**theirs, "api_keys": {"OPENAI_API_KEY": "sk-openai-mine"}}))
        with pytest.raises(ModelDeployError, match=r"api_keys\.OPENAI_API_KEY is already set") as conflict:
            client.register_ai("for-ai", version=2)
        assert conflict.value.status == 409 and "sk-openai-mine" not in str(conflict.value)
        assert json.loads(config_file.read_text())["api_keys"] == {"OPENAI_API_KEY": "sk-openai-mine"}
        assert not [t for t in client.tokens() if t["name"] == "jupyter-ai" and t["revoked_at"] is None]
        config_file.write_text(json.dumps(theirs))

        registered = client.register_ai("for-ai")  # the server's setting: 2
        assert registered["version"] == 2 and registered["selected"] == [gid]
        assert [(m["model_id"], m["params"]) for m in registered["models"]] == [(gid, {"openai_api_base": api_base})]
        assert (config_file.stat().st_mode & 0o777) == 0o600
        key = json.loads(config_file.read_text())["api_keys"]["OPENAI_API_KEY"]
        state = client.ai_registration("for-ai")  # what the Lab panel's jupyter-ai action shows
        assert state["registered"] and state["version"] == 2 and [m["model_id"] for m in state["models"]] == [gid]

        answer = through_jupyter_ai(data_dir, tmp_path)
        assert answer["provider"] == "openai-chat-custom" and answer["model_provider_id"] == gid
        assert answer["fields"][gid] == {"openai_api_base": api_base}
        assert sorted(answer["api_keys"]) == ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
        assert str(answer["content"]).startswith("x")  # the fake engine's answer
        assert answer["key_names"] == ["OPENAI_API_KEY", "OPENAI_API_KEY"] and answer["embeddings_fields"] == [
            "openai_api_base"]
        logged = client.requests(deployment="for-ai", limit=1)[0]
        assert (logged["status"], logged["key_name"], logged["route"], logged["model"]) == (
            200, "jupyter-ai", "/v1/chat/completions", model)
        assert logged["key_id"] in {t["id"] for t in client.tokens() if t["revoked_at"] is None}

        # jupyter-ai rewrote the file as its own (indent 4, its defaults): removal still finds what was ours.
        assert client.unregister_ai("for-ai") == {"removed": 1}
        assert client.ai_registration("for-ai")["registered"] is False
        after = json.loads(config_file.read_text())
        assert (config_file.stat().st_mode & 0o777) == 0o600
        assert after["model_provider_id"] is None and gid not in after["fields"]
        assert after["fields"]["openai-chat:gpt-4o"] == theirs["fields"]["openai-chat:gpt-4o"]
        assert after["api_keys"] == theirs["api_keys"]
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        refused = httpx.post(f"{api_base}/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"},
                             timeout=30)
        assert refused.status_code == 401

        again = client.register_ai("for-ai", version=2)
        assert again["selected"] == [gid]
        client.register_ai("for-ai", version=2)  # again: replaces its own registration, one live key
        live = [t for t in client.tokens() if t["name"] == "jupyter-ai" and t["revoked_at"] is None]
        assert len(live) == 1 and json.loads(config_file.read_text())["fields"][gid] == {"openai_api_base": api_base}
        key_id = next(t["id"] for t in client.tokens() if t["name"] == "jupyter-ai" and t["revoked_at"] is None)
        client.delete("for-ai")
        gone = json.loads(config_file.read_text())
        assert gone["model_provider_id"] is None and gid not in gone["fields"] and "OPENAI_API_KEY" not in gone["api_keys"]
        assert json.loads((config_file.parent / ".modeldeploy-v2.json").read_text()) == {}
        assert all(t["id"] != key_id for t in client.tokens())  # revoked, then forgotten with the deployment
    finally:
        ours.stop()
