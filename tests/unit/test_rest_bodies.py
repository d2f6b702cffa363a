"""Request bodies: JSON parsing limits and the strict request models (no server needed)."""

from __future__ import annotations

import pytest

from jupyter_modeldeploy.config import ConfigError, parse_config
from jupyter_modeldeploy.server_ext.jsonbody import BodyError, nesting_depth, parse_json
from jupyter_modeldeploy.server_ext.schemas import CloneRequest, TokenRequest, parse_body


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "[[[[{{{{\\"]]"}]}', limit=32) == 3
    assert nesting_depth(b"[" * 40 + b"]" * 40, limit=32) == 33  # stops counting past the limit


def test_parse_json_limits_depth_and_keeps_shallow_bodies() -> None:
    assert parse_json(b'{"a": {"b": [1, 2]}}') == {"a": {"b": [1, 2]}}
    assert parse_json(b"") == {}
    with pytest.raises(BodyError) as info:
        parse_json(b"[" * 33 + b"]" * 33)
    assert info.value.status == 400 and info.value.errors[0]["field"] == "(root)"


@pytest.mark.parametrize(
    "body,field",
    [(b'{"x": Infinity}', "x"), (b'{"a": [1, {"b": NaN}]}', "a.1.b"), (b'{"t": -1e999}', "t"), (b"Infinity", "(root)")],
)
def test_non_finite_numbers_are_refused_by_field(body: bytes, field: str) -> None:
    with pytest.raises(BodyError) as info:
        parse_json(body)
    assert [e["field"] for e in info.value.errors] == [field]


def test_token_request_is_strict() -> None:
    assert parse_body(TokenRequest, {"project": "p", "expires_in_s": 60}).expires_in_s == 60
    for bad, field in [({"project": False}, "project"), ({"project": "p", "name": 1}, "name"),
                       ({"project": "p", "deployment": "d"}, "(root)"), ({}, "(root)"), ({"project": ""}, "project")]:
        with pytest.raises(BodyError) as info:
            parse_body(TokenRequest, bad)
        assert info.value.status == 422
        assert [e["field"] for e in info.value.errors] == [field], bad


def test_body_must_be_an_object() -> None:
    with pytest.raises(BodyError) as info:
        parse_body(CloneRequest, [1])
    assert info.value.errors[0]["field"] == "(root)"


def test_a_path_under_an_unknown_users_home_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"kind": "llamacpp", "name": "t", "model": "~nosuchuser-md/m.gguf"})
    assert [e["field"] for e in info.value.errors] == ["model"]
    with pytest.raises(ConfigError) as info:
        parse_config({"kind": "embedding", "name": "e", "models": [{"model": "~nosuchuser-md/x"}]})
    assert [e["field"] for e in info.value.errors] == ["models.0.model"]
    assert parse_config({"kind": "llamacpp", "name": "t", "model": "~/m.gguf"}).model == "~/m.gguf"
