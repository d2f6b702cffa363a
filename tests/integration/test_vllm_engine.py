"""A real vLLM server launched from the `llm` engine's plan, driven with the official openai client.

One server per module (SmolLM2-135M in bf16, --enforce-eager, 512 tokens of context, a LoRA
adapter given at launch); on two CPU cores it is healthy after about 80 s.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from jupyter_modeldeploy.config import LlmConfig, parse_config
from jupyter_modeldeploy.engines.base import EngineSettings, LaunchContext
from jupyter_modeldeploy.engines.llm import (
    ENGINE,
    IS_SLEEPING_PATH,
    LOAD_LORA_PATH,
    SLEEP_PATH,
    UNLOAD_LORA_PATH,
    WAKE_UP_PATH,
    Device,
    detect_device,
    sleep_calls,
    wake_calls,
)
from tests.support.vllm_model import ensure_lora_adapter, ensure_test_model
from tests.support.vllm_runtime import VllmProcess, free_port, require_vllm_python

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

SERVED = "smol"
ADAPTER = "sql"
PROMPT = "The capital of France is"


class Server:
    """What the tests need of the running server."""

    def __init__(self, process: VllmProcess, key: str, config: LlmConfig, second_adapter: Path) -> None:
        self.process = process
        self.key = key
        self.config = config
        self.second_adapter = second_adapter
        self.client = openai.OpenAI(
            base_url=process.base_url + "/v1", api_key=key, timeout=300, max_retries=0
        )
        self.http = httpx.Client(base_url=process.base_url, timeout=300)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def model_ids(self) -> list[str]:
        return [m.id for m in self.client.models.list().data]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    python = require_vllm_python()
    model_dir = ensure_test_model(python)
    first = ensure_lora_adapter(python, model_dir, seed=1)
    second = ensure_lora_adapter(python, model_dir, seed=2)
    work = tmp_path_factory.mktemp("vllm-engine")
    config = parse_config(
        {
            "kind": "llm",
            "name": SERVED,
            "model": str(model_dir),
            "enforce_eager": True,
            "max_model_len": 512,
            "max_num_seqs": 8,
            "dtype": "bfloat16",
            "enable_lora": True,
            "lora_modules": [f"{ADAPTER}={first}"],
            "max_loras": 2,
            "max_lora_rank": 8,
            "max_cpu_loras": 2,
            "seed": 0,
            "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        }
    )
    assert isinstance(config, LlmConfig)
    key = secrets.token_urlsafe(24)
    port = free_port()
    plan = ENGINE.plan(
        config,
        LaunchContext(port=port, engine_key=key, work_dir=work, settings=EngineSettings(vllm_python=python)),
    )
    process = VllmProcess(plan=plan, port=port, log_path=work / "vllm.log")
    process.start()
    try:
        seconds = process.wait_healthy()
        print(f"\nvLLM healthy after {seconds:.1f} s")
        yield Server(process, key, config, second)
    finally:
        stopped = process.stop()
        print(f"\nvLLM stopped in {stopped:.1f} s")


def test_plan_keeps_the_key_off_the_command_line(server: Server) -> None:
    assert server.key not in " ".join(server.process.plan.argv)
    assert server.process.plan.env["VLLM_API_KEY"] == server.key


def test_health_is_open_and_v1_needs_the_key(server: Server) -> None:
    assert server.http.get("/health").status_code == 200
    assert server.http.get("/v1/models").status_code == 401
    assert server.http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert server.http.get("/v1/models", headers=server.auth).status_code == 200


def test_models_list_has_the_served_name_and_the_adapter(server: Server) -> None:
    ids = server.model_ids()
    assert SERVED in ids and ADAPTER in ids
    assert set(server.process.plan.models) <= set(ids)


def test_completion(server: Server) -> None:
    result = server.client.completions.create(model=SERVED, prompt=PROMPT, max_tokens=8, temperature=0)
    assert result.model == SERVED
    assert result.choices[0].text.strip()
    assert result.usage is not None and 0 < result.usage.completion_tokens <= 8


def test_chat(server: Server) -> None:
    result = server.client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
    )
    assert result.choices[0].message.content
    assert result.usage is not None and result.usage.prompt_tokens > 0


def test_streaming_with_usage(server: Server) -> None:
    stream = server.client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = [], None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text)
    assert usage is not None and 0 < usage.completion_tokens <= 10
    assert server.process.plan.stream_usage is True


def logprobs_of(server: Server, model: str) -> list[float]:
    result = server.client.completions.create(
        model=model, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1
    )
    assert result.choices[0].logprobs is not None
    return [round(v, 3) for v in result.choices[0].logprobs.token_logprobs or []]


def test_lora_adapter_is_served_by_name_and_changes_the_output(server: Server) -> None:
    result = server.client.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=4, temperature=0)
    assert result.model == ADAPTER
    assert logprobs_of(server, ADAPTER) != logprobs_of(server, SERVED)


def test_runtime_lora_load_and_unload(server: Server) -> None:
    body: dict[str, Any] = {"lora_name": "extra", "lora_path": str(server.second_adapter)}
    # the runtime endpoints sit under /v1: the engine key guards them
    assert server.http.post(LOAD_LORA_PATH, json=body).status_code == 401
    loaded = server.http.post(LOAD_LORA_PATH, json=body, headers=server.auth)
    assert loaded.status_code == 200, loaded.text
    assert "extra" in server.model_ids()
    result = server.client.completions.create(model="extra", prompt=PROMPT, max_tokens=4, temperature=0)
    assert result.model == "extra"
    assert logprobs_of(server, "extra") != logprobs_of(server, ADAPTER)
    unloaded = server.http.post(UNLOAD_LORA_PATH, json={"lora_name": "extra"}, headers=server.auth)
    assert unloaded.status_code == 200, unloaded.text
    assert "extra" not in server.model_ids()
    with pytest.raises(openai.NotFoundError):
        server.client.completions.create(model="extra", prompt=PROMPT, max_tokens=2)


def test_metrics_are_vllms(server: Server) -> None:
    server.client.completions.create(model=SERVED, prompt=PROMPT, max_tokens=2)
    response = server.http.get(server.process.plan.metrics_path or "/metrics")
    assert response.status_code == 200
    names = {
        line.split("{")[0].split(" ")[0] for line in response.text.splitlines() if line.startswith("vllm:")
    }
    assert len(names) > 20
    assert any(name.startswith("vllm:prompt_tokens") for name in names)
    assert any(name.startswith("vllm:generation_tokens") for name in names)


def test_no_sleep_endpoints_without_universal_memory(server: Server) -> None:
    # sleep mode is only switched on for cpu_offload/disk_swap on a GPU build; here it is off
    assert "--enable-sleep-mode" not in server.process.plan.argv
    assert server.http.post(SLEEP_PATH, params={"level": 1}).status_code == 404
    assert server.http.get(IS_SLEEPING_PATH).status_code == 404
    assert server.http.post(WAKE_UP_PATH).status_code == 404


def _device_of(python: str, work: Path) -> Device:
    config = parse_config({"kind": "llm", "name": "probe", "model": "/unused"})
    assert isinstance(config, LlmConfig)
    ctx = LaunchContext(port=1, engine_key="k", work_dir=work, settings=EngineSettings(vllm_python=python))
    return detect_device(python, config, ctx)


def test_cpu_build_refuses_sleep_mode(server: Server, tmp_path: Path) -> None:
    """Why the engine never asks the CPU build for sleep mode: vLLM refuses to start with it."""
    python = server.process.plan.argv[0]
    if _device_of(python, tmp_path).kind != "cpu":
        pytest.skip("a GPU build of vLLM: sleep mode is supported there")
    argv = [*server.process.plan.argv, "--enable-sleep-mode"]
    argv[argv.index("--port") + 1] = str(free_port())
    env = {**os.environ, **server.process.plan.env, "VLLM_SERVER_DEV_MODE": "1"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "Sleep mode is not supported on current platform" in proc.stdout + proc.stderr


def test_sleep_and_wake_on_gpus(server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Universal Memory on a GPU build: level 1 (cpu_offload) and level 2 (disk_swap)."""
    python = server.process.plan.argv[0]
    work = tmp_path_factory.mktemp("vllm-sleep")
    if _device_of(python, work).kind != "cuda":
        pytest.skip("vLLM's CPU build has no sleep mode (see test_cpu_build_refuses_sleep_mode)")
    base = {"kind": "llm", "name": "sleepy", "model": server.config.model, "enforce_eager": True}
    level1 = parse_config({**base, "max_model_len": 512, "cpu_offload": True})
    level2 = parse_config({**base, "max_model_len": 512, "disk_swap": True})
    assert isinstance(level1, LlmConfig) and isinstance(level2, LlmConfig)
    port = free_port()
    settings = EngineSettings(vllm_python=python)
    plan = ENGINE.plan(level1, LaunchContext(port=port, engine_key="k", work_dir=work, settings=settings))
    device = _device_of(python, work)
    process = VllmProcess(plan=plan, port=port, log_path=work / "vllm.log")
    process.start()
    try:
        process.wait_healthy()
        client = openai.OpenAI(base_url=process.base_url + "/v1", api_key="k", max_retries=0)
        before = client.completions.create(model="sleepy", prompt=PROMPT, max_tokens=6, temperature=0)
        with httpx.Client(base_url=process.base_url, timeout=300) as http:
            for config in (level1, level2):
                for call in sleep_calls(config, device):
                    assert http.request(call.method, call.path, params=call.params, json=call.json).is_success
                assert http.get(IS_SLEEPING_PATH).json()["is_sleeping"] is True
                for call in wake_calls(config, device):
                    response = http.request(call.method, call.path, params=call.params, json=call.json)
                    assert response.is_success, response.text
                assert http.get(IS_SLEEPING_PATH).json()["is_sleeping"] is False
                after = client.completions.create(model="sleepy", prompt=PROMPT, max_tokens=6, temperature=0)
                assert after.choices[0].text == before.choices[0].text
    finally:
        process.stop()
