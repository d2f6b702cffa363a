"""What a lease admits, and what a peeked request is: everything else goes back to the server."""

from __future__ import annotations

import json

import pytest

from jupyter_modeldeploy.gateway.lease import Lease, fingerprint
from jupyter_modeldeploy.gateway.request_head import NotPlain, PeekedRequest, read_request

PREFIX = "/user/a/modeldeploy/endpoints/r-1"
KEY = "sk-the-callers-key"


def lease(**changes: object) -> Lease:
    values: dict[str, object] = dict(
        generation=3, deployment_id="d1", prefix=PREFIX, key=fingerprint(KEY), key_id="api-key", expires_at=None,
        origin=None, cors={}, routes={"/v1/models": ["GET", "HEAD"], "/v1/chat/completions": ["POST"]},
        models=["m"], limits={"m": {"payload_limit_bytes": 1000, "max_client_batch_size": 2}}, payload_limit=1000,
        stream_usage=True, max_in_flight=4, address={"socket_path": "/s", "host": "127.0.0.1", "port": None},
        engine_key="engine-secret", timeout_s=60.0, server_in_flight=1,
    )
    values.update(changes)
    return Lease(**values)  # type: ignore[arg-type]


def wire(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
         version: str = "1.1") -> bytes:
    all_headers = {"Host": "h", "Authorization": f"Bearer {KEY}", **(headers or {})}
    if body:
        all_headers.setdefault("Content-Length", str(len(body)))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
    return (head + "\r\n").encode() + body


def peeked(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> PeekedRequest:
    request = read_request(wire(method, PREFIX + path, {"Content-Type": "application/json", **(headers or {})}, body))
    assert request is not None
    return request


def test_a_plain_request_is_read_whole_and_only_it() -> None:
    body = b'{"a": 1}'
    data = wire("POST", PREFIX + "/v1/chat/completions", {}, body)
    assert read_request(data[:10]) is None and read_request(data[:-1]) is None  # not all there yet
    request = read_request(data + wire("GET", PREFIX + "/v1/models"))  # a pipelined next one stays unread
    assert request is not None and request.size == len(data) and request.body == body
    assert request.method == "POST" and request.target == PREFIX + "/v1/chat/completions" and request.keep_alive
    closing = read_request(wire("GET", "/x", {"Connection": "close"}))
    assert closing is not None and not closing.keep_alive


@pytest.mark.parametrize("data", [
    wire("POST", "/x", {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n"),
    wire("POST", "/x", {"Expect": "100-continue", "Content-Length": "3"}),
    wire("GET", "/x", {"Upgrade": "websocket", "Connection": "upgrade"}),
    wire("GET", "/x", version="1.0"),
    wire("HEAD", "/x"),
    wire("DELETE", "/x"),
    b"GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
    b"GET /x HTTP/1.1\nHost: h\n\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx",
    b"GET /x HTTP/1.1\r\nBad Header: v\r\n\r\n",
    b"NOT HTTP\r\n\r\n",
])
def test_anything_but_a_plain_request_is_the_servers(data: bytes) -> None:
    with pytest.raises(NotPlain):
        read_request(data)


def test_the_lease_admits_what_the_server_would_forward_the_same_way() -> None:
    admitted = lease().admit(peeked("GET", "/v1/models"), now=0.0, in_flight=0)
    assert admitted is not None and admitted.path == "/v1/models" and admitted.model == "m"
    assert ("Authorization", "Bearer engine-secret") in admitted.job["headers"]
    assert not any(v == f"Bearer {KEY}" for _, v in admitted.job["headers"])
    body = json.dumps({"messages": [], "stream": True}).encode()
    streamed = lease().admit(peeked("POST", "/v1/chat/completions", body=body), now=0.0, in_flight=0)
    assert streamed is not None and streamed.job["injected"]
    assert json.loads(streamed.body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("method", "path", "headers", "body", "changes", "in_flight"), [
    ("GET", "/v1/models?x=1", {}, b"", {}, 0),  # a query
    ("GET", "/v1/models/", {}, b"", {}, 0),  # not an exact declared route
    ("GET", "/v1//models", {}, b"", {}, 0),
    ("GET", "/slots", {}, b"", {}, 0),
    ("POST", "/v1/models", {}, b"", {}, 0),  # a method the route does not take
    ("GET", "/v1/models", {"Authorization": "Bearer other"}, b"", {}, 0),  # another key
    ("GET", "/v1/models", {"Origin": "https://elsewhere"}, b"", {}, 0),  # another origin
    ("GET", "/v1/models", {}, b"", {"expires_at": 10.0}, 0),  # the key expired
    ("GET", "/v1/models", {}, b"", {}, 3),  # the concurrency limit (1 on the server, 3 here, of 4)
    ("POST", "/v1/chat/completions", {}, b"{not json", {}, 0),  # the server answers 400
    ("POST", "/v1/chat/completions", {}, json.dumps({"input": [1.5, 2.5, 3.5]}).encode(), {}, 0),  # batch limit
    ("POST", "/v1/chat/completions", {}, b"x" * 1001, {}, 0),  # payload limit
    ("POST", "/v1/chat/completions", {}, json.dumps({"model": "nope"}).encode(), {"models": ["m", "n"]}, 0),
])
def test_the_lease_leaves_the_rest_to_the_server(method: str, path: str, headers: dict[str, str], body: bytes,
                                                  changes: dict[str, object], in_flight: int) -> None:
    request = read_request(wire(method, PREFIX + path, {"Content-Type": "application/json", **headers}, body))
    assert request is not None
    assert lease(**changes).admit(request, now=20.0, in_flight=in_flight) is None


def test_a_public_lease_takes_any_key_and_the_wire_form_round_trips() -> None:
    public = Lease.from_json(json.loads(json.dumps(lease(key=None, key_id="none").to_json())))
    assert public.admit(peeked("GET", "/v1/models", {"Authorization": "Bearer anything"}), now=0, in_flight=0)
    assert "engine-secret" in json.dumps(public.to_json())  # it travels to the worker only, never to a client
    assert KEY not in json.dumps(lease().to_json())  # the caller's key itself never travels
