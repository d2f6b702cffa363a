"""A fourth engine kind is one engine module plus its config model: it launches, fits, is listed and charted.

The toy kind below is all a new engine writes (here in one test module): a config model with its
launch-form options, and an engine with the contract of `engines.base.Engine` (plan, model_tasks,
availability, adapter_calls, fit_inputs). It runs the fake engine program; nothing else in the project learns
about it but the two registrations.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from jupyter_modeldeploy import config as config_module
from jupyter_modeldeploy import engines as engines_module
from jupyter_modeldeploy.config import DeploymentBase, config_schema, parse_config
from jupyter_modeldeploy.config.common import option
from jupyter_modeldeploy.engines import (
    ChartedMetrics,
    EngineAddress,
    EngineSettings,
    FitInputs,
    LaunchContext,
    LaunchPlan,
    MemoryNeed,
    routes,
)
from jupyter_modeldeploy.engines.base import EngineCall
from jupyter_modeldeploy.fit import estimate, fit_report
from jupyter_modeldeploy.metrics.hub import MetricsHub
from jupyter_modeldeploy.server_ext.launch_defaults import engine_status
from jupyter_modeldeploy.server_ext.records import deployment_record
from jupyter_modeldeploy.supervisor import Status, Supervisor

FAKE_ENGINE = Path(__file__).resolve().parents[1] / "support" / "fake_engine.py"
TOKENS = "llamacpp:tokens_predicted_total"  # the fake engine's counter
MiB = 1024 * 1024
TOY_RUNTIME = 40 * MiB  # the fake engine: one Python process


class ToyConfig(DeploymentBase):
    """A toy deployment: one model name, served by the fake engine."""

    kind: Literal["toy"] = option("toy", group="Instance", description="Deployment kind: the toy engine.")
    model: str = option("toy-model", group="Model", description="The model name it answers to.")


class ToyEngine:
    """The toy engine: the fake engine program on a Unix socket, its token counter charted."""

    kind = "toy"

    def plan(self, config: DeploymentBase, ctx: LaunchContext) -> LaunchPlan:
        assert isinstance(config, ToyConfig)
        argv = [sys.executable, str(FAKE_ENGINE), "--host", str(ctx.socket_path),
                "--api-key-file", str(ctx.work_dir / "engine.key"), "--alias", config.model]
        return LaunchPlan(
            argv=argv, models=[config.model], secrets=[ctx.engine_key], files={"engine.key": ctx.engine_key + "\n"},
            routes=routes.OPENAI_MODELS + routes.OPENAI_GENERATION + routes.HEALTH,
            listen=EngineAddress(socket_path=str(ctx.socket_path)),
            charted_metrics=ChartedMetrics(counters=frozenset({TOKENS})),
        )

    def model_tasks(self, config: DeploymentBase) -> dict[str, str]:
        assert isinstance(config, ToyConfig)
        return {config.model: "chat"}

    def availability(self, settings: EngineSettings) -> dict[str, object]:
        return {"available": FAKE_ENGINE.is_file(), "program": "fake_engine"}

    def adapter_calls(self, action: str, name: str, path: str | None = None) -> list[EngineCall] | None:
        return None

    def fit_inputs(self, config: DeploymentBase, *, gpu: bool, gpu_total_bytes: int) -> FitInputs:
        return FitInputs(parts=(MemoryNeed("the toy engine (one Python process)", TOY_RUNTIME),))


@pytest.fixture
def toy_kind() -> Iterator[None]:
    config_module.register_kind(ToyConfig)
    engines_module.register_engine(ToyEngine())
    yield
    engines_module.unregister_engine("toy")
    config_module.unregister_kind("toy")
    assert "toy" not in config_module.KINDS and parse_config({"kind": "llamacpp", "name": "x", "model": "m.gguf"})


async def test_a_fourth_kind_launches_fits_is_listed_and_charted(toy_kind: None, tmp_path: Path) -> None:
    # Its launch form and its validation come from its config model.
    assert "toy" in config_module.KINDS
    assert config_schema("toy")["properties"]["model"]["group"] == "Model"
    config = parse_config({"kind": "toy", "name": "toy-one", "model": "tiny"})
    assert isinstance(config, ToyConfig)
    with pytest.raises(config_module.ConfigError, match="unknown field"):
        parse_config({"kind": "toy", "name": "toy-two", "n_gpu_layers": 3})
    assert engine_status(EngineSettings())["toy"] == {"available": True, "program": "fake_engine"}
    # Fits: its engine answers the fit check's inputs (`fit_inputs`), and the check answers with figures.
    fit = estimate(config)
    assert fit.known and fit.total("host") == TOY_RUNTIME and fit.total("gpu") == 0
    report = fit_report(config)
    assert report.fits is True and report.message.startswith("fits: needs 40"), report.message
    assert report.to_json()["estimate"]["parts"] == [
        {"what": "the toy engine (one Python process)", "bytes": TOY_RUNTIME, "where": "host"}]

    supervisor = Supervisor(tmp_path / "state", health_timeout_s=30)
    await supervisor.start()
    try:
        dep = await supervisor.launch(config)
        assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 30), dep.status_reason
        # Listed, with a test request built from what its engine says the model does.
        record = deployment_record(dep, "http://127.0.0.1:8888")
        assert record["kind"] == "toy" and record["status"] in ("active", "idle")
        assert record["models"][0]["name"] == "tiny" and "/chat/completions" in record["test_command"]
        # Charted: its engine's counter becomes a per-second rate in the deployment's series.
        hub = MetricsHub(supervisor, interval_s=0.1, window=10)
        await hub.tick()
        await hub.tick()
        series = hub.deployment_json(dep, None)
        assert f"engine:{TOKENS}:rate" in series["series"] and dep.process is not None
        await supervisor.stop(dep.id)
        assert dep.status is Status.STOPPED
    finally:
        await supervisor.shutdown()
