"""The Lab panel's TypeScript types are checked against the OpenAPI document the server's models generate.

Every field an interface declares must exist in the matching schema with a compatible type,
and nullability must agree: a panel that reads a field the server does not send, or treats
a nullable one as always there, fails here rather than in a user's browser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
API_TS = ROOT / "labextension" / "src" / "api.ts"
# TypeScript interface -> OpenAPI component schema.
CHECKED = {"IDeployment": "DeploymentRecord", "IToken": "Token"}
TS_TO_JSON = {"string": "string", "number": "number", "boolean": "boolean"}


def interface_fields(source: str, name: str) -> dict[str, tuple[str, bool]]:
    """`{field: (type text, optional)}` of one exported interface (top-level fields only)."""
    match = re.search(rf"export interface {name}[^{{]*\{{(.*?)\n\}}", source, re.S)
    assert match, f"no interface {name} in api.ts"
    fields: dict[str, tuple[str, bool]] = {}
    depth = 0
    for line in match.group(1).splitlines():
        stripped = line.strip()
        if depth == 0 and (m := re.match(r"^(\w+)(\??):\s*(.+?);?$", stripped)):
            fields[m.group(1)] = (m.group(3), m.group(2) == "?")
        depth += stripped.count("{") - stripped.count("}")
    return fields


def schema_type(schema: dict, components: dict) -> tuple[str | None, bool]:
    """(JSON type, nullable) of a property schema, following one $ref / allOf."""
    nullable = bool(schema.get("nullable"))
    for key in ("allOf", "anyOf"):
        if key in schema and len(schema[key]) == 1:
            schema = schema[key][0]
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema.get("type"), nullable or bool(schema.get("nullable"))


@pytest.mark.parametrize(("interface", "component"), sorted(CHECKED.items()))
def test_typescript_interfaces_match_the_openapi_schemas(interface: str, component: str) -> None:
    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    components = document["components"]["schemas"]
    schema = components[component]
    fields = interface_fields(API_TS.read_text(), interface)
    assert fields, interface
    problems = []
    for field, (ts_type, optional) in fields.items():
        if field not in schema["properties"]:
            problems.append(f"{interface}.{field}: not in {component}")
            continue
        json_type, nullable = schema_type(schema["properties"][field], components)
        ts_nullable = "null" in ts_type.split("|") or " null" in ts_type
        if nullable and not (ts_nullable or optional):
            problems.append(f"{interface}.{field}: the server may send null, the type says {ts_type}")
        base = ts_type.replace("| null", "").strip()
        if base.endswith("[]"):
            expected = "array"
        elif base in TS_TO_JSON:
            expected = TS_TO_JSON[base]
        elif base.startswith(("Record<", "{")):
            expected = "object"
        else:
            expected = None  # an alias (Status, Action): its values are checked below
        if json_type == "integer":
            json_type = "number"  # TypeScript has one number type
        if expected is not None and json_type is not None and json_type != expected:
            problems.append(f"{interface}.{field}: {ts_type} but the schema says {json_type}")
    assert problems == []


def test_status_and_action_unions_match_the_server() -> None:
    source = API_TS.read_text()
    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    record = document["components"]["schemas"]["DeploymentRecord"]["properties"]
    for alias, prop in (("Status", record["status"]), ("Action", record["actions"]["items"])):
        match = re.search(rf"export type {alias} =([^;]*);", source, re.S)
        assert match, alias
        values = set(re.findall(r"'([a-z_]+)'", match.group(1)))
        assert values == set(prop["enum"]), alias
