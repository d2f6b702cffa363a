"""A key's requests in flight on the wire: held while the engine works, released however the request ends."""

from __future__ import annotations

import json
import time

from jupyter_modeldeploy.engines import routes
from jupyter_modeldeploy.gateway.tokens import Quotas
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection, RawResponse

CHAT = "/v1/chat/completions"


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


def ask(gw: GatewayThread, base: str, key: str, body: bytes) -> RawResponse:
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", base + CHAT, headers(key), body)
        answer = conn.final_response()
    assert answer is not None, "no answer"
    return answer


def wait_in_flight(gw: GatewayThread, dep: object, count: int) -> None:
    deadline = time.monotonic() + 5
    while gw.dep_in_flight(dep) != count:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "the request never got in flight"
        time.sleep(0.01)


def test_one_in_flight_per_key_and_released_after_the_answer(gw: GatewayThread) -> None:
    dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    key, _info = gw.harness.tokens.create(deployment_id=dep.id, quotas=Quotas(max_in_flight=1))
    other, _ = gw.harness.tokens.create(deployment_id=dep.id)
    base = f"/modeldeploy/endpoints/{dep.route}"
    body = json.dumps({"nonce": "n"}).encode()
    with RawConnection(gw.harness.port) as slow:
        slow.request("POST", base + CHAT, headers(key, **{"X-Fake-Mode": "slow", "X-Fake-Delay": "0.5"}), body)
        wait_in_flight(gw, dep, 1)
        refused = ask(gw, base, key, body)
        assert refused.status == 429 and refused.header("Retry-After") == "1"  # refused before its body is read
        assert refused.json()["error"]["param"] == "max_in_flight"
        assert ask(gw, base, other, body).status == 200  # another key is not held back
        answer = slow.final_response()
        assert answer is not None and answer.status == 200
    assert ask(gw, base, key, body).status == 200

def test_a_caller_gone_before_its_body_ended_gives_its_place_back(gw: GatewayThread) -> None:
    dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    key, _info = gw.harness.tokens.create(deployment_id=dep.id, quotas=Quotas(max_in_flight=1))
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as leaving:
        leaving.request("POST", base + CHAT, {**headers(key), "Content-Length": "1000"}, b"{\"nonce\": ")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while True:
        answer = ask(gw, base, key, b'{"nonce": "n"}')
        if answer.status == 200:
            break
        assert answer.status == 429 and time.monotonic() < deadline, "the place was never given back"
        time.sleep(0.05)


def test_the_fixed_api_key_has_the_deployments_quotas(gw: GatewayThread) -> None:
    dep, fixed = gw.harness.add(routes.LLAMA_SERVER, gw.address, api_key_quotas={"requests_per_minute": 2})
    other_dep, other_fixed = gw.harness.add(routes.LLAMA_SERVER, gw.address, api_key_quotas={"requests_per_minute": 2})
    token, _ = gw.harness.tokens.create(deployment_id=dep.id)
    base = f"/modeldeploy/endpoints/{dep.route}"
    body = json.dumps({"nonce": "n"}).encode()
    assert [ask(gw, base, fixed, body).status for _ in range(2)] == [200, 200]
    refused = ask(gw, base, fixed, body)
    assert refused.status == 429 and int(refused.header("Retry-After") or 0) >= 1
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["param"] == "requests_per_minute"
    assert ask(gw, base, token, body).status == 200  # a generated key of the same deployment is not held back
    # Another deployment's fixed key has a book of its own.
    assert ask(gw, f"/modeldeploy/endpoints/{other_dep.route}", other_fixed, body).status == 200
