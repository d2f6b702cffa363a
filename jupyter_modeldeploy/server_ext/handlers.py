"""REST API under `/api/modeldeploy/`: schemas, deployments, logs, tokens, status.

Every handler is a Jupyter APIHandler: Jupyter's authentication and XSRF protection apply.
Bodies are parsed by `jsonbody` (nesting limit, finite numbers) and validated by the models
in `schemas`; answers have the shapes `schemas` declares, and every error is one shape
(`schemas.Error`) with a 4xx status naming the fields at fault. See docs/rest-api.md and
openapi.yaml.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from pydantic import BaseModel
from tornado import iostream, web

from .. import __version__
from ..config import KINDS, ConfigError, all_schemas, config_schema, export_config, parse_config
from ..engines import EngineUnavailable
from ..engines.hf import ModelNotFound
from ..gateway.tokens import Quotas, TokenRegistry
from ..supervisor import Deployment, DeploymentError, Supervisor
from .fitcheck import fit_for, refusal
from .jsonbody import BodyError, parse_json
from .launch_defaults import engine_status
from .records import deployment_record
from .schemas import (
    AdapterRequest,
    CloneRequest,
    DryRunPlan,
    Error,
    FitReport,
    KeyQuotas,
    StatusResponse,
    Token,
    TokenCreated,
    TokenList,
    TokenRequest,
    TokenUpdate,
    ValidateResponse,
    parse_body,
)

Body = TypeVar("Body", bound=BaseModel)


class BaseHandler(APIHandler):
    """Shared helpers: the supervisor, JSON bodies, JSON errors.

    Every REST request first takes every report the gateway worker made (`synced`: a request whose
    answer ended is in every count read here), and every REST answer is preceded by the gateway's
    state publish (a revoked key, a lowered quota or a stopped deployment is in force in the worker
    before the call that changed it returns).
    """

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        gateway = self.settings.get("modeldeploy_gateway")
        if gateway is not None:
            await gateway.synced()

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        gateway = self.settings.get("modeldeploy_gateway")
        if gateway is not None:
            gateway.publish()
        return super().finish(*args, **kwargs)

    @property
    def supervisor(self) -> Supervisor:
        return self.settings["modeldeploy_supervisor"]

    @property
    def tokens(self) -> TokenRegistry:
        return self.settings["modeldeploy_tokens"]

    def public_base(self) -> str:
        """The server's URL as the client reached it (scheme, host, base URL)."""
        return f"{self.request.protocol}://{self.request.host}{self.base_url}"

    def record(self, dep: Deployment) -> dict[str, Any]:
        return deployment_record(dep, self.public_base(), self.settings.get("modeldeploy_metrics"))

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, allow_nan=False))

    def write_model(self, body: BaseModel, status: int = 200) -> None:
        """Answer with a `schemas` response body."""
        self.write_json(body.model_dump(mode="json"), status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as JSON, including tornado's own (404, 405, XSRF 403)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or getattr(exc, "reason", None) or self._reason
        if status_code == 405:
            message = f"{self.request.method} is not allowed on this route"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(Error(error=str(message)).model_dump(mode="json", exclude_none=True)))

    def fail(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        """Answer with an error: a one-line message, and the fields at fault when there are any."""
        self.write_json(Error.model_validate({"error": message, "errors": errors}).model_dump(mode="json", exclude_none=True),
                        status)

    def json_body(self) -> Any:
        """The request body as JSON (`{}` when empty); BodyError (400) when it is refused."""
        return parse_json(self.request.body)

    def body(self, model: type[Body]) -> Body:
        """The request body validated by a `schemas` model; BodyError (4xx) names each wrong field."""
        return parse_body(model, self.json_body())

    async def refuse_unless_it_fits(self, config: Any) -> None:
        """409 with the numbers when `config` cannot fit in memory now, unless `?force=1`."""
        if self.get_query_argument("force", "0") in ("1", "true"):
            return
        fit = await asyncio.get_running_loop().run_in_executor(None, fit_for, self.supervisor, config)
        if fit.fits is False:
            raise DeploymentError(refusal(config.name, fit), 409)

    def lookup(self, ref: str) -> Deployment:
        return self.supervisor.get(ref)

    async def run(self, action: Any) -> None:
        """Run an action, turning known errors into 4xx JSON answers."""
        try:
            await action()
        except BodyError as exc:
            self.fail(exc.status, str(exc), errors=exc.errors)
        except ConfigError as exc:
            self.fail(422, f"invalid configuration: {exc}", errors=exc.errors)
        except DeploymentError as exc:
            self.fail(exc.status, str(exc))
        except (EngineUnavailable, ModelNotFound) as exc:
            self.fail(422, str(exc))


class StatusHandler(BaseHandler):
    """GET: version, engines, GPU presence, deployment counts, what the store could not read."""

    @web.authenticated
    async def get(self) -> None:
        counts: dict[str, int] = {}
        for dep in self.supervisor.list():
            counts[dep.status.value] = counts.get(dep.status.value, 0) + 1
        loop = asyncio.get_running_loop()
        engines = await loop.run_in_executor(None, engine_status, self.supervisor.settings)
        self.write_model(
            StatusResponse.model_validate(
                {
                    "version": __version__,
                    "kinds": list(KINDS),
                    "engines": engines,
                    "gpu": shutil.which("nvidia-smi") is not None,
                    "deployments": counts,
                    "store": self.supervisor.store.report(),
                }
            )
        )


class SchemasHandler(BaseHandler):
    """GET every kind's JSON Schema, or one kind's."""

    @web.authenticated
    async def get(self, kind: str | None = None) -> None:
        if kind is None:
            self.write_json(all_schemas())
        elif kind not in KINDS:
            self.fail(404, f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
        else:
            self.write_json(config_schema(kind))


class ValidateHandler(BaseHandler):
    """POST a configuration: 200 with the normalised config and notices, or 422."""

    @web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            config = parse_config(self.json_body())
            notices = config.notices() if hasattr(config, "notices") else []
            self.write_model(ValidateResponse(ok=True, config=export_config(config), notices=notices))

        await self.run(action)


class LaunchHandler(BaseHandler):
    """Shared by the routes that launch a posted configuration."""

    async def launch_posted(self) -> None:
        """Launch the configuration in the body (`?dry_run=1` only plans it, `?launch=0` only stores it)."""

        async def action() -> None:
            config = parse_config(self.json_body())
            loop = asyncio.get_running_loop()
            if self.get_query_argument("dry_run", "0") in ("1", "true"):
                plan = await loop.run_in_executor(None, self.supervisor.dry_run, config)
                fit = await loop.run_in_executor(None, fit_for, self.supervisor, config)
                self.write_model(DryRunPlan(argv=plan.argv, env=plan.env, notes=plan.notes, models=plan.models,
                                            fit=FitReport.model_validate(fit.to_json())))
                return
            start = self.get_query_argument("launch", "1") not in ("0", "false")
            if start:
                await self.refuse_unless_it_fits(config)
            dep = await self.supervisor.launch(config, start=start)
            self.write_json(self.record(dep), 201)

        await self.run(action)


class DeploymentsHandler(LaunchHandler):
    """GET the list; POST a configuration to launch it (`?dry_run=1` only plans it)."""

    @web.authenticated
    async def get(self) -> None:
        self.write_json({"deployments": [self.record(d) for d in self.supervisor.list()]})

    @web.authenticated
    async def post(self) -> None:
        await self.launch_posted()


class ImportHandler(LaunchHandler):
    """POST an exported configuration: the same as launching it (POST only)."""

    @web.authenticated
    async def post(self) -> None:
        await self.launch_posted()


class DeploymentHandler(BaseHandler):
    """GET one record; DELETE stops and forgets it."""

    @web.authenticated
    async def get(self, ref: str) -> None:
        async def action() -> None:
            self.write_json(self.record(self.lookup(ref)))

        await self.run(action)

    @web.authenticated
    async def delete(self, ref: str) -> None:
        async def action() -> None:
            # Its keys and jupyter-ai models go with it (`cleanup`, a listener of the supervisor's changes).
            await self.supervisor.delete(self.lookup(ref).id)
            self.set_status(204)
            self.finish()

        await self.run(action)


class ActionHandler(BaseHandler):
    """POST stop / relaunch / clone."""

    @web.authenticated
    async def post(self, ref: str, action_name: str) -> None:
        async def action() -> None:
            if action_name == "stop":
                dep = await self.supervisor.stop(ref)
                self.write_json(self.record(dep))
            elif action_name == "relaunch":
                await self.refuse_unless_it_fits(self.supervisor.get(ref).config)
                dep = await self.supervisor.relaunch(ref)
                self.write_json(self.record(dep))
            elif action_name == "clone":
                body = self.body(CloneRequest)
                dep = await self.supervisor.clone(ref, body.name, body.overrides, start=body.launch,
                                                  include_secrets=body.include_secrets)
                self.write_json(self.record(dep), 201)
            else:
                raise DeploymentError(f"unknown action {action_name!r}", 404)

        await self.run(action)


class ExportHandler(BaseHandler):
    """GET the configuration as JSON, secrets left out unless `?include_secrets=1`."""

    @web.authenticated
    async def get(self, ref: str) -> None:
        async def action() -> None:
            dep = self.lookup(ref)
            with_secrets = self.get_query_argument("include_secrets", "0") in ("1", "true")
            data = export_config(dep.config, include_secrets=with_secrets)
            if self.get_query_argument("download", "0") in ("1", "true"):
                self.set_header("Content-Disposition", f'attachment; filename="{dep.name}.json"')
            self.write_json(data)

        await self.run(action)


class LogsHandler(BaseHandler):
    """GET the console tail; `?follow=1` streams new lines as text until the engine ends."""

    @web.authenticated
    async def get(self, ref: str) -> None:
        try:
            dep = self.lookup(ref)
        except DeploymentError as exc:
            self.fail(exc.status, str(exc))
            return
        try:
            tail = int(self.get_query_argument("tail", "200"))
        except ValueError:
            self.fail(400, "tail must be an integer")
            return
        if self.get_query_argument("follow", "0") not in ("1", "true"):
            self.write_json({"id": dep.id, "status": dep.status.value, "lines": dep.log.tail(tail)})
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        queue = dep.log.follow()
        try:
            for line in dep.log.tail(tail):
                self.write(line + "\n")
            await self.flush()
            while dep.status.live:
                try:
                    line = await asyncio.wait_for(queue.get(), timeout=15)
                except asyncio.TimeoutError:
                    continue
                if line is None:
                    break
                self.write(line + "\n")
                await self.flush()
            while not queue.empty():
                line = queue.get_nowait()
                if line is not None:
                    self.write(line + "\n")
        except iostream.StreamClosedError:
            return
        finally:
            dep.log.unfollow(queue)
        self.finish()


class AdaptersHandler(BaseHandler):
    """POST {"name", "path"} loads a LoRA adapter on a running deployment."""

    @web.authenticated
    async def post(self, ref: str) -> None:
        async def action() -> None:
            body = self.body(AdapterRequest)
            dep = await self.supervisor.adapter(ref, "add", body.name, body.path)
            self.write_json(self.record(dep), 201)

        await self.run(action)


class AdapterHandler(BaseHandler):
    """DELETE unloads a LoRA adapter."""

    @web.authenticated
    async def delete(self, ref: str, name: str) -> None:
        async def action() -> None:
            dep = await self.supervisor.adapter(ref, "remove", name)
            self.write_json(self.record(dep))

        await self.run(action)


class TokensHandler(BaseHandler):
    """GET the tokens (never their values); POST creates one and shows it once."""

    @web.authenticated
    async def get(self) -> None:
        self.write_model(TokenList(tokens=[Token.model_validate(t.to_json()) for t in self.tokens.list()]))

    @web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            body = self.body(TokenRequest)
            deployment_id = self.lookup(body.deployment).id if body.deployment is not None else None
            try:
                token, info = self.tokens.create(
                    deployment_id=deployment_id, project=body.project, name=body.name, expires_in_s=body.expires_in_s,
                    role=body.role, models=body.models, quotas=_quotas(body.quotas), priority=body.priority,
                )
            except ValueError as exc:
                raise DeploymentError(str(exc), 400) from None
            self.write_model(TokenCreated.model_validate({**info.to_json(), "token": token}), 201)

        await self.run(action)


def _quotas(body: KeyQuotas | None) -> Quotas | None:
    return Quotas.from_json(body.model_dump()) if body is not None else None


class TokenHandler(BaseHandler):
    """GET one token; PATCH changes its label or expiry; DELETE revokes it at once."""

    def _known(self, token_id: str) -> bool:
        try:
            self.tokens.get(token_id)
        except KeyError:
            self.fail(404, f"no token {token_id[:100]!r}")
            return False
        return True

    @web.authenticated
    async def get(self, token_id: str) -> None:
        if self._known(token_id):
            self.write_model(Token.model_validate(self.tokens.get(token_id).to_json()))

    @web.authenticated
    async def patch(self, token_id: str) -> None:
        async def action() -> None:
            body = self.body(TokenUpdate)
            if not self._known(token_id):
                return
            expires_at = time.time() + body.expires_in_s if body.expires_in_s is not None else None
            info = self.tokens.update(token_id, name=body.name, expires_at=expires_at, clear_expiry=body.no_expiry,
                                      quotas=_quotas(body.quotas), clear_quotas=body.quotas is not None,
                                      priority=body.priority)
            self.write_model(Token.model_validate(info.to_json()))

        await self.run(action)

    @web.authenticated
    async def delete(self, token_id: str) -> None:
        if self._known(token_id):
            self.write_model(Token.model_validate(self.tokens.revoke(token_id).to_json()))


def api_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The REST routes, each under `prefix` (the server's base URL + api/modeldeploy)."""
    ref = r"(?P<ref>[^/]+)"
    return [
        (rf"{prefix}/status", StatusHandler),
        (rf"{prefix}/schemas", SchemasHandler),
        (rf"{prefix}/schemas/(?P<kind>[^/]+)", SchemasHandler),
        (rf"{prefix}/validate", ValidateHandler),
        (rf"{prefix}/import", ImportHandler),
        (rf"{prefix}/deployments", DeploymentsHandler),
        (rf"{prefix}/deployments/{ref}", DeploymentHandler),
        (rf"{prefix}/deployments/{ref}/export", ExportHandler),
        (rf"{prefix}/deployments/{ref}/logs", LogsHandler),
        (rf"{prefix}/deployments/{ref}/(?P<action_name>stop|relaunch|clone)", ActionHandler),
        (rf"{prefix}/deployments/{ref}/adapters", AdaptersHandler),
        (rf"{prefix}/deployments/{ref}/adapters/(?P<name>[^/]+)", AdapterHandler),
        (rf"{prefix}/tokens", TokensHandler),
        (rf"{prefix}/tokens/(?P<token_id>[^/]+)", TokenHandler),
    ]
