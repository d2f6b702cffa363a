"""REST routes the views need beyond the deployments API: the test command, the launch form's defaults.

Each view (notebook dashboard, Lab panel, CLI) asks the server for the command rather than
building its own, so the command is the same everywhere (`test_command.test_command`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import web

from ..supervisor import DeploymentError
from .handlers import BaseHandler
from .launch_defaults import bundled_model, engine_status, launch_defaults
from .records import endpoint_url
from .test_command import test_command_answer


class TestCommandHandler(BaseHandler):
    """POST `{key?, prompt?, model?}`: the deployment's test command, with the key when one is in hand."""

    __test__ = False  # not a pytest test class

    @web.authenticated
    async def post(self, ref: str) -> None:
        async def action() -> None:
            body = self.json_body()
            if not isinstance(body, dict):
                raise DeploymentError("a test-command request is a JSON object", 400)
            for name in ("key", "prompt", "model"):
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise DeploymentError(f"{name} must be a string", 400)
            dep = self.lookup(ref)
            if body.get("model") and dep.models and body["model"] not in dep.models:
                raise DeploymentError(f"{ref} serves no model {body['model']!r}; it serves {', '.join(dep.models)}", 400)
            api_base = endpoint_url(self.public_base(), dep.route) + "/v1"
            self.write_json(test_command_answer(dep, api_base, key=body.get("key") or None,
                                                prompt=body.get("prompt"), model=body.get("model") or None))

        await self.run(action)


class LaunchDefaultsHandler(BaseHandler):
    """GET the kind and values a new launch form opens on (`launch_defaults.launch_defaults`)."""

    @web.authenticated
    async def get(self) -> None:
        loop = asyncio.get_running_loop()
        engines = await loop.run_in_executor(None, engine_status, self.supervisor.settings)
        bundled = await loop.run_in_executor(None, bundled_model)
        self.write_json(launch_defaults(self.supervisor.list(), engines, bundled))


def view_handlers(prefix: str) -> list[tuple[str, Any]]:
    """The views' routes, each under `prefix` (the server's base URL + api/modeldeploy)."""
    return [
        (rf"{prefix}/deployments/(?P<ref>[^/]+)/test-command", TestCommandHandler),
        (rf"{prefix}/launch-defaults", LaunchDefaultsHandler),
    ]
