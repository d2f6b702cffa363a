"""A request for a sleeping deployment (asleep to free memory, or a Ray deployment scaled to zero) is held while
it wakes; a stream gets its head and an SSE comment at once, so clients and proxies keep it, then its events.

On both paths of the `gw` fixture: the worker asks the server to wake the deployment, the loop wakes it itself.
"""

from __future__ import annotations

import asyncio
import json
import time

from jupyter_modeldeploy.engines import routes
from jupyter_modeldeploy.supervisor import Deployment, Status
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection

CHAT = "/v1/chat/completions"


def asleep(gw: GatewayThread, wakes_to: Status, wake_s: float = 0.5) -> tuple[Deployment, str, list[float]]:
    """A sleeping deployment whose wake takes `wake_s` and leaves it `wakes_to`; the times it was woken."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    gateway = gw.harness.gateway
    wakes: list[float] = []

    async def wake(woken: object) -> None:
        wakes.append(time.monotonic())
        await asyncio.sleep(wake_s)
        dep.status = wakes_to
        gateway.publish()

    gateway.config.wake = wake
    gw.call(lambda: (setattr(dep, "status", Status.SLEEPING), gateway.publish()))
    return dep, key, wakes


def stream_request(conn: RawConnection, base: str, key: str, path: str = CHAT) -> None:
    conn.request("POST", base + path, {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                       "X-Fake-Mode": "sse", "X-Fake-Events": "3", "X-Fake-Done": "0"},
                 json.dumps({"nonce": "s", "stream": True}).encode())


def test_a_stream_is_held_with_its_head_and_a_comment_while_the_deployment_wakes(gw: GatewayThread) -> None:
    dep, key, wakes = asleep(gw, Status.ACTIVE)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        stream_request(conn, base, key)
        early = conn.read_until(b": waking the deployment")
        assert early is not None and b" 200 " in early.split(b"\r\n", 1)[0] and b"text/event-stream" in early
        assert not gw.engine.received  # still waking: nothing sent yet
        rest = conn.read_until(b"0\r\n\r\n")
    assert rest is not None and b"t2 " in rest and b"data: [DONE]" in rest, rest
    assert len(wakes) == 1 and len(gw.engine.received) == 1
    records = [r for r in gw.records() if r.deployment_id == dep.id]
    assert [r.status for r in records] == [200] and records[0].usage is not None


def test_a_held_stream_whose_deployment_does_not_come_back_ends_with_one_error_event(gw: GatewayThread) -> None:
    dep, key, wakes = asleep(gw, Status.FAILED, wake_s=0.2)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        stream_request(conn, base, key)
        raw = conn.read_until(b"0\r\n\r\n")
    assert raw is not None and b": waking the deployment" in raw
    event = raw[raw.index(b"data: "):].split(b"\n\n", 1)[0]
    assert json.loads(event[len(b"data: "):])["error"]["type"] == "unavailable_error", event
    assert len(wakes) == 1 and not gw.engine.received


def test_a_request_the_deployment_would_refuse_does_not_wake_it(gw: GatewayThread) -> None:
    dep, key, wakes = asleep(gw, Status.ACTIVE)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", base + "/v1/not-an-engine-route", {"Authorization": f"Bearer {key}",
                                                                "Content-Length": "2"}, b"{}")
        answer = conn.final_response()
        assert answer is not None and answer.status == 404
        conn.request("GET", base + "/v1/models", {"Authorization": "Bearer wrong"})
        answer = conn.final_response("GET")
        assert answer is not None and answer.status == 401
    assert wakes == [] and gw.call(lambda: dep.status) is Status.SLEEPING
