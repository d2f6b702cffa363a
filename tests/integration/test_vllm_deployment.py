"""An `llm` deployment for real: vLLM launched by the supervisor, called through the gateway.

One deployment per module (SmolLM2-135M in bf16, --enforce-eager, a LoRA adapter at launch)
behind the session's Jupyter server; the vLLM environment and the test model are cached.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.test_llamacpp_deployment import wait_status
from tests.support.jupyter import JupyterProcess
from tests.support.vllm_model import ensure_lora_adapter, ensure_test_model
from tests.support.vllm_runtime import require_vllm_python

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

KEY = "sk-vllm-gateway-key-01"


@pytest.fixture(scope="module")
def vllm_python() -> str:
    return require_vllm_python()


@pytest.fixture(scope="module")
def llm_deployment(jupyter_server: JupyterProcess, vllm_python: str) -> Iterator[dict]:
    model = ensure_test_model(vllm_python)
    adapter = ensure_lora_adapter(vllm_python, model, seed=1)
    client = jupyter_server.client()
    record = client.launch({
        "kind": "llm", "name": "vllm-smol", "model": str(model), "api_key": KEY, "enforce_eager": True,
        "max_model_len": 512, "dtype": "bfloat16", "enable_lora": True, "max_lora_rank": 8, "max_loras": 2,
        "lora_modules": [f"sql={adapter}"], "max_num_seqs": 8, "max_cuda_memory_gib": 1,
    })
    try:
        record = wait_status(client, record["id"], {"active", "idle"}, timeout=900)
    except AssertionError:
        print("\n".join(client.logs(record["id"], tail=60)))
        raise
    yield record
    client.delete(record["id"])


def oai(record: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=record["api_base"], api_key=KEY, timeout=300, max_retries=0)


def test_models_completion_chat_and_stream_with_usage(llm_deployment: dict) -> None:
    client = oai(llm_deployment)
    assert {m.id for m in client.models.list().data} >= {"vllm-smol", "sql"}
    completion = client.completions.create(model="vllm-smol", prompt="The capital of France is", max_tokens=5)
    assert completion.choices[0].text and completion.usage.completion_tokens == 5
    chat = client.chat.completions.create(model="vllm-smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert chat.choices[0].message.content is not None
    chunks = list(client.chat.completions.create(model="vllm-smol", messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=6, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert httpx.get(llm_deployment["api_base"] + "/models").status_code == 401


def test_a_batch_keys_requests_go_to_vllm_with_their_priority(jupyter_server: JupyterProcess,
                                                             llm_deployment: dict) -> None:
    """vLLM schedules by priority (`--scheduling-policy priority`) and the gateway sends a batch key's class;
    under vLLM's default policy a request with a priority other than 0 is refused (400)."""
    made = jupyter_server.client().create_token(deployment=llm_deployment["id"], priority="batch")
    assert made["priority"] == "batch"
    batch = openai.OpenAI(base_url=llm_deployment["api_base"], api_key=made["token"], timeout=300, max_retries=0)
    chat = batch.chat.completions.create(model="vllm-smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                         extra_body={"priority": -5})  # the body's own is replaced by the key's
    assert chat.usage is not None and chat.usage.completion_tokens == 3


def test_lora_adapter_by_name_and_at_runtime(jupyter_server: JupyterProcess, llm_deployment: dict,
                                             vllm_python: str) -> None:
    client = oai(llm_deployment)
    out = client.completions.create(model="sql", prompt="SELECT", max_tokens=3)
    assert out.model == "sql"
    rest = jupyter_server.client()
    second = ensure_lora_adapter(vllm_python, ensure_test_model(vllm_python), seed=2)
    record = rest.add_adapter(llm_deployment["id"], "extra", str(second))
    assert "extra" in [m["name"] for m in record["models"]]
    assert "extra" in {m.id for m in client.models.list().data}
    assert client.completions.create(model="extra", prompt="Hello", max_tokens=2).model == "extra"
    assert any(m.endswith(str(second)) for m in rest.export(llm_deployment["id"])["lora_modules"])
    record = rest.remove_adapter(llm_deployment["id"], "extra")
    assert "extra" not in [m["name"] for m in record["models"]]
    assert "extra" not in {m.id for m in client.models.list().data}
    # The engine's runtime-loading route is not reachable with an API key alone.
    blocked = httpx.post(llm_deployment["api_base"] + "/load_lora_adapter", headers={"Authorization": f"Bearer {KEY}"},
                         json={"lora_name": "x", "lora_path": str(second)})
    assert blocked.status_code == 404


def test_vllm_metrics_reach_the_deployment_series(jupyter_server: JupyterProcess, llm_deployment: dict) -> None:
    client = oai(llm_deployment)
    client.completions.create(model="vllm-smol", prompt="Count:", max_tokens=8)
    rest = jupyter_server.client()
    deadline = time.monotonic() + 60
    while True:
        metrics = rest.metrics(llm_deployment["id"])
        engine = metrics.get("engine", {})
        if "vllm:generation_tokens_total" in engine and engine["vllm:generation_tokens_total"] > 0:
            break
        assert time.monotonic() < deadline, f"no vLLM metrics in the series: {sorted(engine)}"
        time.sleep(1)
    assert "engine:vllm:num_requests_running" in metrics["series"]
    assert metrics["totals"]["completion_tokens"] >= 8


def test_status_notes_say_what_the_cpu_build_does(jupyter_server: JupyterProcess, llm_deployment: dict) -> None:
    record = jupyter_server.client().get(llm_deployment["id"])
    assert record["engine"]["program"].startswith("vllm.")
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("GPU host: the CPU notes do not apply")
    assert any("CPU build" in note for note in record["engine"]["notes"])


def _engine_key(record: dict) -> str:
    """vLLM's private key, from its process environment (it never is on a command line or in a file)."""
    import psutil

    for proc in psutil.Process(record["pid"]).children(recursive=True):
        key = proc.environ().get("VLLM_API_KEY")
        if key:
            return key
    raise AssertionError("no vLLM process with a key")


def _engine(jupyter_server: JupyterProcess, record: dict) -> httpx.Client:
    """vLLM itself, on its Unix socket, with its private key (what only the server has)."""
    work = jupyter_server.state_dir / "deployments" / record["id"]
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(work / "engine.sock")), base_url="http://engine",
                        headers={"Authorization": f"Bearer {_engine_key(record)}"}, timeout=300)


def _events(body: bytes) -> list[dict]:
    import json

    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith(b"data: ") and line[6:] != b"[DONE]"]


def test_a_stream_is_the_engines_own_and_usage_is_counted(jupyter_server: JupyterProcess, llm_deployment: dict) -> None:
    """The gateway asks vLLM for usage the client did not ask for, and removes exactly that one event."""
    body = {"model": "vllm-smol", "messages": [{"role": "user", "content": "Say a word"}], "max_tokens": 5,
            "temperature": 0, "seed": 1, "stream": True}
    with _engine(jupyter_server, llm_deployment) as engine:
        direct = _events(engine.post("/v1/chat/completions", json=body).content)
    rest = jupyter_server.client()
    before = rest.metrics(llm_deployment["id"])["totals"]
    via = httpx.post(llm_deployment["api_base"] + "/chat/completions", json=body,
                     headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
    events = _events(via.content)
    strip = {"id", "created"}
    assert [{k: v for k, v in e.items() if k not in strip} for e in events] == \
           [{k: v for k, v in e.items() if k not in strip} for e in direct]
    assert all("usage" not in e or e["usage"] is None for e in events)  # the injected event is not passed on
    deadline = time.monotonic() + 20
    while (after := rest.metrics(llm_deployment["id"])["totals"])["requests"] == before["requests"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert after["completion_tokens"] - before["completion_tokens"] == 5


def test_dev_mode_and_control_routes_are_closed(jupyter_server: JupyterProcess, llm_deployment: dict) -> None:
    base = llm_deployment["api_base"].removesuffix("/v1")
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/sleep", "/wake_up", "/collective_rpc", "/v1/load_lora_adapter", "/reset_prefix_cache", "/metrics"):
        assert httpx.post(base + path, headers=auth, json={}).status_code in (404, 405), path
    work = jupyter_server.state_dir / "deployments" / llm_deployment["id"]
    assert (work / "engine.sock").exists()
    import socket

    import psutil

    reaper = psutil.Process(llm_deployment["pid"])
    ports = {c.laddr.port for p in [reaper, *reaper.children(recursive=True)] for c in p.net_connections(kind="inet")
             if c.status == psutil.CONN_LISTEN}
    # vLLM's own inter-process sockets (torch.distributed, ZMQ) listen on loopback; its HTTP API must not.
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.settimeout(2)
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                answer = conn.recv(16)
            except (TimeoutError, OSError):
                answer = b""
        assert not answer.startswith(b"HTTP/"), f"vLLM answers HTTP on TCP port {port}"
