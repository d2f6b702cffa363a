"""Universal Memory on llama.cpp: several GGUF models under a budget (router mode), and
idle deployments that free their memory and come back on the next request."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.test_llamacpp_deployment import wait_status
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

KEY = "sk-memory-test-key-0001"


def chat(base: str, model: str | None, key: str = KEY) -> httpx.Response:
    body: dict = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    if model:
        body["model"] = model
    return httpx.post(base + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_two_models_under_a_budget_that_fits_one(jupyter_server: JupyterProcess, smollm2_gguf: Path,
                                                 tmp_path: Path) -> None:
    second = tmp_path / "smol-b.gguf"
    second.symlink_to(smollm2_gguf)
    client = jupyter_server.client()
    # The file is 98 MB: 0.15 GiB holds one model, not two.
    record = client.launch({"kind": "llamacpp", "name": "two-smol", "model": str(smollm2_gguf), "model_alias": "smol-a",
                            "additional_models": [str(second)], "max_cuda_memory_gib": 0.15, "api_key": KEY,
                            "threads": 1, "ctx_size": 1024})
    record = wait_status(client, record["id"], {"active", "idle"})
    assert [m["name"] for m in record["models"]] == ["smol-a", "smol-b"]
    assert any("at most 1 loaded" in note for note in record["engine"]["notes"])
    endpoint = record["endpoint_url"]
    try:
        listed = openai.OpenAI(base_url=record["api_base"], api_key=KEY).models.list()
        assert {m.id for m in listed.data} == {"smol-a", "smol-b"}
        for model in ["smol-a", "smol-b", "smol-a", "smol-b"]:
            by_segment = chat(f"{endpoint}/{model}/v1", None)
            assert by_segment.status_code == 200, by_segment.text
            assert by_segment.json()["model"] == model
            by_body = chat(record["api_base"], model)
            assert by_body.status_code == 200 and by_body.json()["model"] == model
        unknown = chat(record["api_base"], "smol-c")
        assert unknown.status_code == 404
        assert "smol-a" in unknown.json()["error"]["message"] and "smol-b" in unknown.json()["error"]["message"]
        deadline = time.monotonic() + 30
        while True:
            models = {m["name"]: m for m in client.get(record["id"])["models"]}
            states = sorted(m["state"] for m in models.values())
            if states == ["on_device", "on_disk"] and models["smol-a"]["swaps"] >= 1:
                break
            assert time.monotonic() < deadline, models
            time.sleep(0.5)
        assert models["smol-b"]["state"] == "on_device", "the most recently used model stays loaded"
    finally:
        client.delete(record["id"])


def test_idle_deployment_frees_memory_and_the_next_request_brings_it_back(
    jupyter_server: JupyterProcess, smollm2_gguf: Path
) -> None:
    client = jupyter_server.client()
    record = client.launch({"kind": "llamacpp", "name": "napper", "model": str(smollm2_gguf), "api_key": KEY,
                            "cpu_offload": True, "idle_time_limit_hours": 2 / 3600, "last_action_report_interval_s": 1,
                            "threads": 1, "ctx_size": 1024})
    try:
        record = wait_status(client, record["id"], {"active", "idle"})
        # Shown as asleep; its engine was stopped (llama.cpp has no sleep mode), so no process holds memory.
        asleep = wait_status(client, record["id"], {"sleeping"}, timeout=60)
        assert "next request relaunches it" in asleep["status_reason"]
        assert asleep["pid"] is None and asleep["serving"] and "stop" in asleep["actions"]
        # A wrong key does not wake it.
        assert chat(record["api_base"], None, key="sk-wrong").status_code == 401
        assert client.get(record["id"])["status"] == "sleeping"
        # The next request with a valid key is held while the engine relaunches, then answered.
        answer = chat(record["api_base"], None)
        assert answer.status_code == 200, answer.text
        assert client.get(record["id"])["status"] in ("active", "idle")
        assert any("relaunching for an incoming request" in line for line in client.logs(record["id"], tail=200))
    finally:
        client.delete(record["id"])
