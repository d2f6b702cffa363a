"""Deployment configuration: one pydantic model per kind, with import, export and schemas.

`config` depends on nothing else of the project.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from typing import Annotated, Any

from pydantic import Field, SecretStr, TypeAdapter, ValidationError

from .common import GROUP_ORDER, NAME_PATTERN, ROUTE_PATTERN, SCHEMA_VERSION, DeploymentBase
from .embedding import EmbeddingConfig, EmbeddingModelEntry
from .llamacpp import MODEL_ALIAS_PATTERN, LlamaCppConfig
from .llm import LlmConfig

DeploymentConfig = Annotated[
    LlmConfig | LlamaCppConfig | EmbeddingConfig, Field(discriminator="kind")
]

CONFIG_CLASSES: dict[str, type[DeploymentBase]] = {
    "llm": LlmConfig,
    "llamacpp": LlamaCppConfig,
    "embedding": EmbeddingConfig,
}
#: Every deployment kind, in form order (one list: a kind registered later shows up wherever it is read).
KINDS: list[str] = list(CONFIG_CLASSES)

_adapter: TypeAdapter[DeploymentBase] = TypeAdapter(DeploymentConfig)


def _kinds_changed() -> None:
    """Validate against every kind now registered (the discriminated union of their models)."""
    global _adapter
    union = functools.reduce(operator.or_, CONFIG_CLASSES.values())  # every kind's model, `A | B | ...`
    _adapter = TypeAdapter(Annotated[union, Field(discriminator="kind")])  # type: ignore[valid-type]


def register_kind(config_class: type[DeploymentBase]) -> None:
    """Add a deployment kind by its config model (a `kind: Literal["..."]` field): with its engine
    (`engines.register_engine`) that is all a new kind needs to launch, be listed, fitted and charted."""
    kind = str(config_class.model_fields["kind"].default)
    CONFIG_CLASSES[kind] = config_class
    if kind not in KINDS:
        KINDS.append(kind)
    _kinds_changed()


def unregister_kind(kind: str) -> None:
    """Take a kind added by `register_kind` away again (the three built-in kinds stay)."""
    if kind in ("llm", "llamacpp", "embedding") or kind not in CONFIG_CLASSES:
        return
    del CONFIG_CLASSES[kind]
    KINDS.remove(kind)
    _kinds_changed()


def describe_errors(errors: list[dict[str, Any]], separator: str = "; ") -> str:
    """Field errors (`{field, message, allowed?}`) in words: the one way every layer writes them."""
    parts = []
    for error in errors:
        allowed = error.get("allowed")
        suffix = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
        parts.append(f"{error['field']}: {error['message']}{suffix}")
    return separator.join(parts)


class ConfigError(ValueError):
    """A configuration that does not validate; `errors` name each field path and problem."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__(describe_errors(errors))


def _typed(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


_NAME_WORDS = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters"
#: What each field pattern means, in words (a message never shows a regular expression).
PATTERN_WORDS = {
    NAME_PATTERN: f"use only {_NAME_WORDS} (no spaces)",
    ROUTE_PATTERN: f"leave it empty, or use only {_NAME_WORDS} (no spaces)",
    MODEL_ALIAS_PATTERN: "use only letters, digits, '.', '_', ':', '/' and '-', starting with a letter or digit, "
                         "at most 128 characters (no spaces)",
}


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    # Drop union member tags ("literal['auto']", "list[int]", "function-after[...]") from the path.
    parts = [str(p) for p in error["loc"] if isinstance(p, int) or "[" not in str(p)]
    # A discriminated union puts the kind first in the location: drop it from the path.
    if parts and parts[0] in CONFIG_CLASSES:
        parts = parts[1:]
    path = ".".join(parts)
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    ctx = error.get("ctx") or {}
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "string_pattern_mismatch":
        message = PATTERN_WORDS.get(str(ctx.get("pattern")), "has characters this field does not allow")
    elif error["type"] == "union_tag_invalid":
        path = path or "kind"
        message = f"unknown kind {ctx.get('tag')!r}; allowed: {', '.join(KINDS)}"
    elif error["type"] == "union_tag_not_found":
        path = "kind"
        message = f"missing; allowed: {', '.join(KINDS)}"
    result: dict[str, Any] = {"field": path or "(root)", "message": message}
    if error["type"] in ("literal_error", "enum") and "expected" in ctx:
        expected = str(ctx["expected"])
        values = re.findall(r"'([^']*)'", expected) or re.findall(r"[^\s,]+(?=,|$| or)", expected)
        result["allowed"] = [_typed(v) for v in values]
    return result


def _merge(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per field: the alternatives of a union become one message joined by 'or'."""
    merged: dict[str, dict[str, Any]] = {}
    for error in errors:
        seen = merged.get(error["field"])
        if seen is None:
            merged[error["field"]] = dict(error)
            continue
        seen["message"] = f"{seen['message']}, or {error['message'][0].lower()}{error['message'][1:]}"
        if "allowed" in error:
            seen["allowed"] = seen.get("allowed", []) + error["allowed"]
    return list(merged.values())


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A pydantic ValidationError as the API's error list: one `{field, message[, allowed]}` per field."""
    return _merge([_describe(e) for e in exc.errors()])


def parse_config(data: dict[str, Any] | str) -> DeploymentBase:
    """Validate a configuration (dict or JSON text) and return its kind's model.

    Raises ConfigError naming every wrong field.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError([{"field": "(root)", "message": f"not valid JSON: {exc}"}]) from None
    if not isinstance(data, dict):
        raise ConfigError([{"field": "(root)", "message": "a configuration must be a JSON object"}])
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ConfigError(
            [{"field": "schema_version", "message": f"unsupported version {version!r}; this release reads {SCHEMA_VERSION}"}]
        )
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(field_errors(exc)) from None


def export_config(config: DeploymentBase, *, include_secrets: bool = False) -> dict[str, Any]:
    """The configuration as JSON-ready data; secrets are left out unless asked for."""
    data = config.model_dump(mode="json")
    for name in config.secret_fields():
        value = getattr(config, name)
        if include_secrets and isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
        else:
            data.pop(name, None)
    return data


def clone_config(config: DeploymentBase, new_name: str, *, include_secrets: bool = True) -> DeploymentBase:
    """A copy of a configuration under a new name (fixed route cleared: routes are unique)."""
    data = export_config(config, include_secrets=include_secrets)
    data["name"] = new_name
    data["route"] = ""
    return parse_config(data)


def config_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind, with the form's group order attached."""
    cls = CONFIG_CLASSES[kind]
    schema = cls.model_json_schema()
    schema["x-group-order"] = list(GROUP_ORDER)
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema for every kind, keyed by kind."""
    return {kind: config_schema(kind) for kind in KINDS}


__all__ = [
    "CONFIG_CLASSES",
    "KINDS",
    "ConfigError",
    "DeploymentBase",
    "DeploymentConfig",
    "EmbeddingConfig",
    "EmbeddingModelEntry",
    "LlamaCppConfig",
    "LlmConfig",
    "all_schemas",
    "clone_config",
    "config_schema",
    "describe_errors",
    "export_config",
    "field_errors",
    "parse_config",
    "register_kind",
    "unregister_kind",
]
