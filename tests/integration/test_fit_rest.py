"""The fit check over REST: in /validate and dry runs, and a launch that cannot fit refused with the numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

HUGE_CONTEXT = 1 << 24  # SmolLM2's KV cache for this many tokens is about 360 GiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    proc = JupyterProcess(tmp_path_factory.mktemp("fit-rest")).start()
    yield proc
    proc.stop()


def config(gguf: Path, name: str, ctx_size: int) -> dict:
    return {"kind": "llamacpp", "name": name, "model": str(gguf), "ctx_size": ctx_size, "threads": 1,
            "restart": "never"}


def test_validate_and_dry_run_carry_the_fit(server: JupyterProcess, smollm2_gguf: Path) -> None:
    validated = server.api("POST", "validate", json=config(smollm2_gguf, "fit-ok", 2048))
    assert validated.status_code == 200, validated.text
    fit = validated.json()["fit"]
    assert fit["fits"] is True and fit["message"].startswith("fits: needs")
    assert fit["estimate"]["host_bytes"] > smollm2_gguf.stat().st_size
    assert {p["what"].split(" (")[0] for p in fit["estimate"]["parts"]} >= {"weights", "KV cache", "compute buffers"}
    planned = server.api("POST", "deployments", params={"dry_run": 1}, json=config(smollm2_gguf, "fit-ok", HUGE_CONTEXT))
    assert planned.status_code == 200, planned.text
    assert planned.json()["fit"]["fits"] is False


def test_a_launch_that_cannot_fit_is_refused_with_the_numbers(server: JupyterProcess, smollm2_gguf: Path) -> None:
    response = server.api("POST", "deployments", json=config(smollm2_gguf, "fit-huge", HUGE_CONTEXT))
    assert response.status_code == 409, response.text
    message = response.json()["error"]
    assert "'fit-huge' does not fit: host RAM: needs" in message and "GiB free" in message and "force" in message
    assert "fit-huge" not in [d["name"] for d in server.api("GET", "deployments").json()["deployments"]]


def test_force_launches_it_anyway_and_a_relaunch_is_checked_too(server: JupyterProcess, smollm2_gguf: Path) -> None:
    stored = server.api("POST", "deployments", params={"launch": 0}, json=config(smollm2_gguf, "fit-stored", HUGE_CONTEXT))
    assert stored.status_code == 201, stored.text  # stored, not started: nothing to check
    refused = server.api("POST", "deployments/fit-stored/relaunch")
    assert refused.status_code == 409 and "does not fit" in refused.json()["error"]
    assert server.api("GET", "deployments/fit-stored").json()["status"] == "stopped"
    assert server.api("DELETE", f"deployments/{stored.json()['id']}").status_code in (200, 204)
    response = server.api("POST", "deployments", params={"force": 1, "launch": 1},
                          json=config(smollm2_gguf, "fit-forced", HUGE_CONTEXT))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "loading"
    assert server.api("DELETE", f"deployments/{response.json()['id']}").status_code in (200, 204)
