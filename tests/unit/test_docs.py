"""Docs that must not drift: the OpenAPI document covers every route; the config reference is current."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from jupyter_modeldeploy.config.reference import render
from jupyter_modeldeploy.server_ext.activity_handlers import activity_handlers
from jupyter_modeldeploy.server_ext.dashboard import dashboard_handlers
from jupyter_modeldeploy.server_ext.handlers import api_handlers
from jupyter_modeldeploy.server_ext.jupyter_ai_handlers import jupyter_ai_handlers
from jupyter_modeldeploy.server_ext.metrics_handlers import metrics_handlers
from jupyter_modeldeploy.server_ext.openapi import update
from jupyter_modeldeploy.server_ext.validate import validate_handlers
from jupyter_modeldeploy.server_ext.views import view_handlers

ROOT = Path(__file__).resolve().parents[2]


def to_openapi(pattern: str) -> str:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    path = path.replace("{action_name}", "ACTION")
    return path


def test_openapi_covers_every_rest_route() -> None:
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    paths = set(spec["paths"])
    prefix = "/api/modeldeploy"
    routes = api_handlers(prefix) + metrics_handlers(prefix) + view_handlers(prefix) + validate_handlers(prefix)
    routes += activity_handlers(prefix) + jupyter_ai_handlers(prefix)
    routes += [h for h in dashboard_handlers(prefix) if h[0].startswith(prefix)]  # not the page itself
    for pattern, handler in routes:
        path = to_openapi(pattern)
        if "ACTION" in path:
            for action in ("stop", "relaunch", "clone"):
                assert path.replace("ACTION", action) in paths, path
            continue
        assert path in paths, f"{path} ({handler.__name__}) is missing from docs/openapi.yaml"
        methods = {m for m in ("get", "post", "delete", "patch") if m in handler.__dict__ and handler.__dict__[m] is not None}
        documented = set(spec["paths"][path]) - {"parameters"}
        assert methods <= documented, (path, methods, documented)
    assert "/modeldeploy/endpoints/{route}/{path}" in paths


def test_openapi_body_schemas_are_generated_from_the_models() -> None:
    current = (ROOT / "docs" / "openapi.yaml").read_text()
    assert update(current) == current, "docs/openapi.yaml is stale: run 'make docs'"
    schemas = yaml.safe_load(current)["components"]["schemas"]
    assert schemas["TokenRequest"]["properties"]["expires_in_s"]["exclusiveMinimum"] is True
    assert schemas["TokenRequest"]["additionalProperties"] is False


def test_configuration_reference_is_current() -> None:
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == render(), "docs/configuration.md is stale: run 'make docs'"


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
