"""LoRA adapters loaded and unloaded on a serving deployment, through its engine's `adapter_calls`.

The engine says whether it can change adapters at runtime and which requests do it
(`engines.base.Engine.adapter_calls`), which adapters a configuration serves (`adapters`) and how a
configuration says so (`with_adapters`); this module checks the command, makes the calls and keeps
the change in the deployment's configuration, its plan's models and the store,
then announces it (`DeploymentChange("models")`).
"""

from __future__ import annotations

from ..config import export_config, parse_config
from .deployment import Deployment, DeploymentError
from .run import DeploymentHost
from .signals import DeploymentChange


async def change_adapter(host: DeploymentHost, dep: Deployment, action: str, name: str, path: str | None = None) -> None:
    """Load ('add') or unload ('remove') adapter `name` on the running engine; kept in the deployment's config."""
    engine = host.engine(dep.kind)
    calls = engine.adapter_calls(action, name, path)  # None: the engine loads none at runtime
    served = engine.adapters(dep.config)  # None: this deployment serves none
    if calls is None or served is None:
        raise DeploymentError(f"deployment {dep.name!r} does not serve LoRA adapters (enable_lora is off)", 400)
    if not dep.status.serving:
        raise DeploymentError(f"deployment {dep.name!r} is {dep.status.value}; adapters change on a serving engine", 409)
    if action == "add":
        if not path:
            raise DeploymentError("an adapter needs a path", 400)
        if name in served or name in dep.models:
            raise DeploymentError(f"an adapter or model named {name!r} is already served", 409)
    elif name not in served:
        raise DeploymentError(f"no adapter {name!r}; served adapters: {', '.join(served) or 'none'}", 404)
    await host.ensure_ready(dep)
    try:
        await host.engine_calls(dep, calls)
    except RuntimeError as exc:
        raise DeploymentError(f"the engine refused: {exc}", 422) from None
    if action == "add":
        served[name] = path or ""
        if dep.plan:
            dep.plan.models.append(name)
    else:
        del served[name]
        if dep.plan and name in dep.plan.models:
            dep.plan.models.remove(name)
    dep.config = parse_config({**export_config(dep.config, include_secrets=True),
                               **engine.with_adapters(dep.config, served)})
    dep.model_tasks = engine.model_tasks(dep.config)
    host.store.save(dep.to_stored())
    host.changes.send(DeploymentChange("models", dep))
