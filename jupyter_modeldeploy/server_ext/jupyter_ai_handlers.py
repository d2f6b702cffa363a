"""`GET/POST/DELETE /api/modeldeploy/deployments/{ref}/jupyter-ai`: whether a deployment is registered as
jupyter-ai models; register it; unregister it."""

from __future__ import annotations

from tornado import web

from ..supervisor import Deployment, DeploymentError
from ..supervisor.tokens import TokenRegistry
from . import jupyter_ai
from .handlers import BaseHandler
from .schemas import JupyterAIRegistration

KEY_LABEL = "jupyter-ai"


def forget(tokens: TokenRegistry, dep: Deployment) -> int:
    """Remove a deployment's jupyter-ai entries and revoke the key made for them."""
    removed = jupyter_ai.unregister(jupyter_ai.config_path(), dep.id)
    for token in tokens.list():
        if token.deployment_id == dep.id and token.name == KEY_LABEL and token.revoked_at is None:
            tokens.revoke(token.id)
    return removed


class JupyterAIHandler(BaseHandler):
    """GET: its jupyter-ai models now; POST: the deployment's chat models become jupyter-ai custom models;
    DELETE: they go."""

    @web.authenticated
    async def get(self, ref: str) -> None:
        async def action() -> None:
            dep = self.lookup(ref)
            try:
                entries = jupyter_ai.registered(jupyter_ai.config_path(), dep.id)
            except (OSError, ValueError) as exc:
                raise DeploymentError(str(exc), 409) from None
            self.write_model(JupyterAIRegistration.model_validate(
                {"config": jupyter_ai.config_path().name, "registered": bool(entries), "models": entries}))

        await self.run(action)

    @web.authenticated
    async def post(self, ref: str) -> None:
        async def action() -> None:
            dep = self.lookup(ref)
            record = self.record(dep)
            models = [m["name"] for m in record["models"] if m["task"] == "chat"]
            if not models:
                raise DeploymentError(f"deployment {dep.name!r} serves no chat model for jupyter-ai", 422)
            forget(self.tokens, dep)  # one key at a time
            key, _info = self.tokens.create(deployment_id=dep.id, name=KEY_LABEL)
            try:
                entries = jupyter_ai.register(jupyter_ai.config_path(), deployment_id=dep.id, deployment=dep.name,
                                              models=models, api_base=record["api_base"], key=key)
            except (OSError, ValueError) as exc:
                raise DeploymentError(str(exc), 409) from None
            self.write_model(JupyterAIRegistration.model_validate(
                {"config": jupyter_ai.config_path().name, "registered": True, "models": entries}), 201)

        await self.run(action)

    @web.authenticated
    async def delete(self, ref: str) -> None:
        async def action() -> None:
            try:
                removed = forget(self.tokens, self.lookup(ref))
            except (OSError, ValueError) as exc:
                raise DeploymentError(str(exc), 409) from None
            self.write_json({"removed": removed})

        await self.run(action)


def jupyter_ai_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [(rf"{prefix}/deployments/(?P<ref>[^/]+)/jupyter-ai", JupyterAIHandler)]
