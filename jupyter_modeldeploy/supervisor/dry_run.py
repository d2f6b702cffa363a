"""A dry run: the launch plan an engine would run for a configuration, with its secrets masked.

Nothing is started or kept. Planning may prepare files in the work folder (router mode links its
models there): a throw-away folder keeps a dry run from touching any deployment's state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..config import DeploymentBase
from ..engines import Engine, EngineSettings, LaunchContext, LaunchPlan
from .logbuffer import MASK


def masked_plan(engine: Engine, config: DeploymentBase, settings: EngineSettings) -> LaunchPlan:
    """The engine's plan for `config` in a throw-away folder, every secret in argv, env and files masked."""
    with tempfile.TemporaryDirectory(prefix="modeldeploy-dry-run-") as work_dir:
        ctx = LaunchContext(port=0, engine_key=MASK, work_dir=Path(work_dir), settings=settings)
        plan = engine.plan(config, ctx)
    hidden = [s for s in plan.secrets if s and s != MASK]

    def mask(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, MASK)
        return text

    plan.argv = [mask(a) for a in plan.argv]
    plan.env = {k: mask(v) for k, v in plan.env.items()}
    plan.files = {k: mask(v) for k, v in plan.files.items()}
    return plan
