"""jupyter-ai, one click: a deployment registered as jupyter-ai 3.x custom models, tested against
the real package (`jupyter-ai[jupyternaut]`, in its own environment: `make jupyter-ai`).

jupyter-ai's own server lists the models from its configuration; a chat request made with
jupyter-ai's chat model class and that configuration reaches the deployment with the key made
for it; deleting the deployment removes the models and revokes the key.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from jupyter_modeldeploy.paths import cache_root
from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import free_port, terminate

pytestmark = pytest.mark.integration

JUPYTER_AI_VERSION = "3.2.0"  # the Makefile's jupyter-ai target installs the same
CHAT_THROUGH_JUPYTER_AI = """
import json, sys
from jupyter_ai_jupyternaut.config.config_models import JaiConfig
from jupyter_ai_jupyternaut.jupyternaut.chat_models import ChatLiteLLM

config = JaiConfig.model_validate(json.load(open(sys.argv[1])))
model = next(m for m in config.custom_models if m.model_id == sys.argv[2])
answer = ChatLiteLLM(model=model.model_id, **model.params).invoke("Say hello")
print(json.dumps({"content": answer.content, "usage": answer.usage_metadata}))
"""


def jupyter_ai_python() -> Path:
    return cache_root() / f"jupyter-ai-{JUPYTER_AI_VERSION}" / "bin" / "python"


def start_jupyter_ai_server(home: Path, data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """jupyter-ai's environment's own Jupyter server, reading the same Jupyter data folder."""
    port, token = free_port(), secrets.token_hex(16)
    env = {"JUPYTER_DATA_DIR": str(data_dir), "JUPYTER_CONFIG_DIR": str(home / "config"), "HOME": str(home),
           "PATH": f"{jupyter_ai_python().parent}:/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(jupyter_ai_python()), "-m", "jupyter", "server", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home}"],
        cwd=home, env=env, stdout=(home / "jupyter-ai.log").open("ab"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / "jupyter-ai.log").read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/jupyternaut/config", headers={"Authorization": f"token {token}"},
                         timeout=5).status_code == 200:
                return proc, url, token
        time.sleep(0.5)
    terminate(proc)
    raise AssertionError("jupyter-ai's server did not answer:\n" + (home / "jupyter-ai.log").read_text()[-3000:])


def test_a_deployment_becomes_a_jupyter_ai_model_and_answers_its_chat(tmp_path: Path) -> None:
    if not jupyter_ai_python().exists():
        pytest.fail(f"jupyter-ai {JUPYTER_AI_VERSION} is not installed at {jupyter_ai_python().parent.parent}: "
                    "run 'make jupyter-ai'")
    ours = fake_jupyter(tmp_path / "ours")
    data_dir = tmp_path / "ours" / "data"  # the Jupyter data folder both servers read
    try:
        client = ours.client()
        record = client.wait(client.launch(fake_deployment("for-ai"))["id"], timeout=60)
        model = record["models"][0]["name"]
        registered = client.register_ai("for-ai")
        assert [m["model_id"] for m in registered["models"]] == [f"openai/{model}"]
        assert registered["models"][0]["params"] == {"api_base": record["api_base"]}  # no key in the answer
        config_file = data_dir / "jupyter_ai" / "config.json"
        assert (config_file.stat().st_mode & 0o777) == 0o600

        proc, url, token = start_jupyter_ai_server(tmp_path / "ai", data_dir)
        try:
            listed = httpx.get(f"{url}/api/jupyternaut/config", headers={"Authorization": f"token {token}"},
                               timeout=30).json()
            mine = [m for m in listed["custom_models"] if m["model_id"] == f"openai/{model}"]
            assert len(mine) == 1 and mine[0]["name"] == "for-ai"
        finally:
            terminate(proc)

        chat = subprocess.run([str(jupyter_ai_python()), "-c", CHAT_THROUGH_JUPYTER_AI, str(config_file),
                               f"openai/{model}"], capture_output=True, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": str(tmp_path)})
        assert chat.returncode == 0, chat.stderr[-3000:]
        answer = json.loads(chat.stdout.strip().splitlines()[-1])
        assert answer["content"].startswith("x")  # the fake engine's answer
        logged = client.requests(deployment="for-ai", limit=1)[0]
        assert logged["status"] == 200 and logged["key_name"] == "jupyter-ai"

        key_id = logged["key_id"]
        client.delete("for-ai")
        assert not [m for m in json.loads(config_file.read_text())["custom_models"]
                    if m["model_id"] == f"openai/{model}"]
        assert all(t["id"] != key_id for t in client.tokens())  # revoked, then forgotten with the deployment
    finally:
        ours.stop()
