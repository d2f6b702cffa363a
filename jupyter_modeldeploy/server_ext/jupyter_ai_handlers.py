"""`GET/POST/DELETE /api/modeldeploy/deployments/{ref}/jupyter-ai`: whether a deployment is registered
as jupyter-ai models; register it; unregister it.

jupyter-ai 3.x gets custom models (`jupyter_ai.py`), 2.x its OpenAI-compatible providers' settings
(`jupyter_ai_v2.py`): `?version=2|3`, else the server's `jupyter_ai_version` setting, whose `auto`
means the major version of the jupyter-ai installed next to this server (3 when there is none).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from tornado import web

from ..gateway.tokens import TokenRegistry
from ..supervisor import Deployment, DeploymentError
from . import jupyter_ai, jupyter_ai_v2
from .handlers import BaseHandler
from .schemas import JupyterAIRegistration

KEY_LABEL = "jupyter-ai"
VERSIONS = ("2", "3")


def installed_version() -> str:
    """The major version of the jupyter-ai in this server's environment: "2", or "3" (also when none)."""
    try:
        major = importlib.metadata.version("jupyter-ai").split(".", 1)[0]
    except importlib.metadata.PackageNotFoundError:
        return "3"
    return "2" if major == "2" else "3"


def choose_version(requested: str | None, setting: str) -> str:
    if requested is not None:
        if requested not in VERSIONS:
            raise DeploymentError(f"version must be 2 or 3 (jupyter-ai's major version), not {requested[:20]!r}", 400)
        return requested
    return setting if setting in VERSIONS else installed_version()


def key_owner(tokens: TokenRegistry) -> jupyter_ai_v2.KeyOwner:
    """Whose key a secret in jupyter-ai's file is (see jupyter_ai_v2.KeyOwner)."""
    def whose(secret: str) -> str | None:
        info = tokens.lookup(secret)
        if info is None or info.name != KEY_LABEL or info.deployment_id is None:
            return None
        return info.deployment_id if info.revoked_at is None else ""
    return whose


def forget(tokens: TokenRegistry, dep: Deployment) -> int:
    """Remove a deployment's jupyter-ai entries (2.x and 3.x) and revoke the key made for them (also when the
    file cannot be changed: what is left there no longer opens anything)."""
    path = jupyter_ai.config_path()
    try:
        return jupyter_ai.unregister(path, dep.id) + jupyter_ai_v2.unregister(path, dep.id, key_owner(tokens))
    finally:  # after: the 2.x removal tells its key from the user's by looking it up
        for token in tokens.list():
            if token.deployment_id == dep.id and token.name == KEY_LABEL and token.revoked_at is None:
                tokens.revoke(token.id)


def _write(version: str, tokens: TokenRegistry, dep: Deployment, record: dict[str, Any], key: str) -> dict[str, Any]:
    path, api_base = jupyter_ai.config_path(), record["api_base"]
    models = {task: [m["name"] for m in record["models"] if m["task"] == task] for task in ("chat", "embed")}
    if version == "3":
        entries = jupyter_ai.register(path, deployment_id=dep.id, deployment=dep.name, models=models["chat"],
                                      api_base=api_base, key=key)
        return {"version": 3, "config": path.name, "models": entries}
    written = jupyter_ai_v2.register(path, deployment_id=dep.id, chat=models["chat"], embeddings=models["embed"],
                                     api_base=api_base, key=key, whose_key=key_owner(tokens))
    return {"version": 2, "config": path.name, "selected": written["selected"],
            "models": jupyter_ai_v2.entries(dep.id, dep.name, written, api_base)}


class JupyterAIHandler(BaseHandler):
    """GET: its jupyter-ai models now; POST: the deployment's models become jupyter-ai models;
    DELETE: they go."""

    @web.authenticated
    async def get(self, ref: str) -> None:
        async def action() -> None:
            dep = self.lookup(ref)
            version = choose_version(self.get_query_argument("version", None),
                                     self.settings.get("modeldeploy_jupyter_ai_version", "auto"))
            path = jupyter_ai.config_path()
            try:
                if version == "3":
                    entries = jupyter_ai.registered(path, dep.id)
                else:
                    entries = jupyter_ai_v2.registered(path, dep.id, dep.name)
            except (OSError, ValueError) as exc:
                raise DeploymentError(str(exc), 409) from None
            self.write_model(JupyterAIRegistration.model_validate(
                {"version": int(version), "config": path.name, "registered": bool(entries), "models": entries}))

        await self.run(action)

    @web.authenticated
    async def post(self, ref: str) -> None:
        async def action() -> None:
            version = choose_version(self.get_query_argument("version", None),
                                     self.settings.get("modeldeploy_jupyter_ai_version", "auto"))
            dep = self.lookup(ref)
            record = self.record(dep)
            tasks = {m["task"] for m in record["models"]}
            if "chat" not in tasks and (version == "3" or "embed" not in tasks):
                what = "chat model" if version == "3" else "chat or embedding model"
                raise DeploymentError(f"deployment {dep.name!r} serves no {what} for jupyter-ai {version}.x", 422)
            try:
                forget(self.tokens, dep)  # one key at a time
                key, info = self.tokens.create(deployment_id=dep.id, name=KEY_LABEL)
                try:
                    answer = _write(version, self.tokens, dep, record, key)
                except BaseException:
                    self.tokens.revoke(info.id)  # written nowhere: no live key left behind
                    raise
            except (OSError, ValueError) as exc:
                raise DeploymentError(str(exc), 409) from None
            self.write_model(JupyterAIRegistration.model_validate({**answer, "registered": True}), 201)

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
