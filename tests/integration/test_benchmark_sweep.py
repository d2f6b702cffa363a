"""A benchmark sweep on SmolLM2 through the gateway: a monotone concurrency axis, and a saved result to reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_modeldeploy import cli
from jupyter_modeldeploy.benchmark import results
from jupyter_modeldeploy.benchmark.runner import Settings, benchmark
from tests.integration.test_llamacpp_deployment import wait_status
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration


def test_a_sweep_on_smollm2_is_saved_and_reloads(jupyter_server: JupyterProcess, smollm2_gguf: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    client = jupyter_server.client()
    record = client.launch({"kind": "llamacpp", "name": "bench-smol", "model": str(smollm2_gguf), "threads": 2,
                            "ctx_size": 2048, "parallel": 4, "max_concurrent_requests": 3,
                            "api_key": "sk-bench-fixed-key-01"})
    try:
        wait_status(client, record["id"], {"active", "idle"})
        seen: list[int] = []
        tokens_before = len(client.tokens())
        result = benchmark(client, "bench-smol", Settings(prompt="Count to ten.", max_tokens=8, max_concurrency=8,
                                                            requests_per_client=1),
                           on_step=lambda step: seen.append(step.concurrency), save_to=tmp_path)
        axis = [s["concurrency"] for s in result["steps"]]
        assert axis == seen == [1, 2, 3]  # doubling, capped at the deployment's max_concurrent_requests
        assert "capped at 3" in result["note"]
        for step in result["steps"]:
            assert step["errors"] == 0 and step["requests"] == step["concurrency"]
            assert step["ttft_ms_p50"] > 0 and step["tokens_per_s"] > 0 and step["requests_per_s"] > 0
        # The sweep's own token is revoked after it.
        made = [t for t in client.tokens() if t.get("name") == "benchmark"]
        assert len(client.tokens()) == tokens_before + 1 and made and all(t.get("revoked_at") for t in made)
        [saved] = results.load_all(tmp_path)
        assert saved["id"] == result["id"] and saved["config"]["ctx_size"] == 2048
        assert "sk-bench-fixed-key-01" not in json.dumps(saved)
        # The command line: a sweep printed step by step and saved beside it, then every result as CSV.
        monkeypatch.setenv("MODELDEPLOY_BENCH_DIR", str(tmp_path))
        server = ["--url", jupyter_server.url, "--token", jupyter_server.token]
        assert cli.main([*server, "bench", "bench-smol", "--max-concurrency", "2", "--max-tokens", "4",
                         "--requests-per-client", "1", "--key", "sk-bench-fixed-key-01"]) == 0
        printed = capsys.readouterr().out
        assert "  1 clients  TTFT p50" in printed and "  2 clients" in printed and "saved: " in printed
        assert cli.main([*server, "bench", "--export", "csv"]) == 0
        rows = capsys.readouterr().out.strip().splitlines()
        assert rows[0].startswith("id,deployment,kind,model") and len(rows) == 1 + 3 + 2
    finally:
        client.delete(record["id"])
