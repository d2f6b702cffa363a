"""The gateway's one normal form of a path: what passes, what is refused, and that it is stable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_modeldeploy.engines import routes
from jupyter_modeldeploy.gateway.headers import cors_headers, preflight_headers, request_headers, returned_header
from jupyter_modeldeploy.gateway.paths import PATH_CHARS, PathError, check_query, normalise_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/models/", "/v1/models"),
        ("/%70rops", "/props"),  # an escaped unreserved character is the same path
        ("/v1/%63hat/completions", "/v1/chat/completions"),
        ("", "/"),
        ("/", "/"),
    ],
)
def test_paths_that_pass(raw: str, normal: str) -> None:
    assert normalise_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "/props%3F", "/props%3f", "/props%23", "/%2570rops", "/v1%2Fmodels", "/props%25", "/%u0070rops",
        "/props%0D%0AX-Injected: 1", "/props%0A", "/a%00b", "/pro ps", "/props\x7f", "/prøps", "/props\r\n",
        "/v1/../props", "/v1/./models", "//props", "/v1//models", "/props%", "/props%4", "/props%zz", "/a\\b",
        "/props#frag", "/a%C3%A9",
    ],
)
def test_paths_refused(raw: str) -> None:
    with pytest.raises(PathError):
        normalise_path(raw)


def test_refusals_name_the_problem() -> None:
    with pytest.raises(PathError, match="%3F"):
        normalise_path("/props%3F")
    with pytest.raises(PathError, match="control character"):
        normalise_path("/a%0Db")
    with pytest.raises(PathError, match="non-ASCII"):
        normalise_path("/é")


@given(st.text(max_size=40))
def test_normal_form_is_stable_and_plain(raw: str) -> None:
    """Whatever passes holds only plain path characters and normalises to itself."""
    try:
        normal = normalise_path("/" + raw)
    except PathError:
        return
    assert set(normal) <= PATH_CHARS
    assert "%" not in normal and "//" not in normal
    assert normalise_path(normal) == normal


def test_queries() -> None:
    assert check_query("model=a&x=%20y") == "model=a&x=%20y"
    for bad in ("a=b c", "a=\x01", "a=é", "a=%zz", "a#b"):
        with pytest.raises(PathError):
            check_query(bad)


def test_allow_lists_hold_serving_routes_only() -> None:
    for table in (routes.LLAMA_SERVER, routes.VLLM, routes.EMBEDDING_SERVER, routes.LLAMA_CPP_PYTHON):
        for path in ("/slots", "/lora-adapters", "/sleep", "/wake_up", "/collective_rpc", "/v1/load_lora_adapter",
                     "/models/load", "/metrics", "/", "/update_weights", "/abort_requests", "/reset_prefix_cache"):
            assert table.find(path) is None, (table, path)
    props = routes.LLAMA_SERVER.find("/props")
    assert props is not None and props.methods == routes.READ  # POST /props changes the engine for everyone
    assert routes.LLAMA_SERVER.find("/v1/chat/completions") is not None
    info = routes.EMBEDDING_SERVER.find("/info")
    assert info is not None and info.model_scoped


def test_forwarded_headers() -> None:
    sent = request_headers([
        ("Content-Type", "application/json"), ("Authorization", "Bearer k"), ("Expect", "100-continue"),
        ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("Cookie", "a=b"), ("Accept-Encoding", "gzip"),
        ("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "r1"), ("Transfer-Encoding", "chunked"),
    ])
    assert sent == [("Content-Type", "application/json"), ("X-Request-Id", "r1")]
    assert not returned_header("Set-Cookie") and not returned_header("Access-Control-Allow-Origin")
    assert returned_header("Content-Type") and returned_header("X-Request-Id")


def test_cors_answers() -> None:
    assert cors_headers("https://app.example.org", ["*"])["Access-Control-Allow-Origin"] == "*"
    assert cors_headers("https://evil.example", ["https://app.example.org"]) == {}
    assert cors_headers(None, ["*"]) == {}
    own = cors_headers("https://app.example.org", ["https://app.example.org"])
    assert own["Access-Control-Allow-Origin"] == "https://app.example.org" and own["Vary"] == "Origin"
    pre = preflight_headers("https://a.example", ["*"], "authorization, content-type")
    assert pre["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert "\x01" not in preflight_headers("https://a.example", ["*"], "a\x01b")["Access-Control-Allow-Headers"]


def _walked(raw: str, check: object) -> str | PathError:
    """The per-character walk's answer (what the plain-path shortcut must agree with), or its error."""
    try:
        return check(raw)  # type: ignore[operator]
    except PathError as exc:
        return exc


_ANY_PATH_TEXT = st.text(alphabet=st.sampled_from(sorted(PATH_CHARS | set("%?#\x00 \x7fé/."))), max_size=40)


@given(_ANY_PATH_TEXT)
def test_the_plain_path_shortcut_agrees_with_the_walk(tail: str) -> None:
    from jupyter_modeldeploy.gateway.paths import _segments_checked, _unescaped

    raw = "/" + tail
    fast, walked = _walked(raw, normalise_path), _walked(raw, lambda r: _segments_checked(_unescaped(r)))
    if isinstance(walked, PathError):
        assert isinstance(fast, PathError) and str(fast) == str(walked)
    else:
        assert fast == walked


@given(_ANY_PATH_TEXT)
def test_the_plain_query_shortcut_agrees_with_the_walk(raw: str) -> None:
    from jupyter_modeldeploy.gateway.paths import _walked_query

    fast, walked = _walked(raw, check_query), _walked(raw, _walked_query)
    if isinstance(walked, PathError):
        assert isinstance(fast, PathError) and str(fast) == str(walked)
    else:
        assert fast == walked == raw
