"""Exact per-key usage end to end: REST rows, Prometheus, a DataFrame, kept across a restart.

Several keys call the fake engine through the gateway, streamed and not; each key's counted
tokens must equal the sum of the usage its answers reported (`usage` in JSON, llama.cpp's
`timings` in streams), per model, with errors counted apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration


def call(record: dict, key: str, max_tokens: int, *, stream: bool) -> tuple[int, int, int]:
    """(status, prompt tokens, completion tokens) as the answer itself reported them."""
    body = {"model": record["models"][0]["name"], "messages": [], "max_tokens": max_tokens, "stream": stream}
    response = httpx.post(record["api_base"] + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)
    if response.status_code != 200:
        return response.status_code, 0, 0
    if not stream:
        usage = response.json()["usage"]
        return 200, usage["prompt_tokens"], usage["completion_tokens"]
    prompt = completion = 0
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            timings = json.loads(line[6:]).get("timings")
            if timings:
                prompt, completion = timings["prompt_n"] + timings["cache_n"], timings["predicted_n"]
    return 200, prompt, completion


def by_key(rows: list[dict]) -> dict[str, tuple[int, int, int, int]]:
    sums: dict[str, list[int]] = {}
    for row in rows:
        total = sums.setdefault(row["key_id"], [0, 0, 0, 0])
        for i, name in enumerate(("requests", "errors", "prompt_tokens", "completion_tokens")):
            total[i] += row[name]
    return {k: tuple(v) for k, v in sums.items()}  # type: ignore[misc]


def test_usage_per_key_is_exact_and_kept_across_a_restart(tmp_path: Path) -> None:
    jupyter = fake_jupyter(tmp_path / "home")
    try:
        client = jupyter.client()
        record = client.wait(client.launch(fake_deployment("usage", api_key="sk-usage-fixed-key-0001"))["id"], timeout=60)
        alice = client.create_token(deployment=record["id"], name="alice")
        bob = client.create_token(deployment=record["id"], name="bob", quotas={"daily_tokens": 20})
        scoped = client.create_token(deployment=record["id"], models=["not-served"])
        expected: dict[str, list[int]] = {alice["id"]: [0, 0, 0, 0], bob["id"]: [0, 0, 0, 0], scoped["id"]: [0, 0, 0, 0],
                                          "api-key": [0, 0, 0, 0]}
        plan = [(alice, 5, False), (alice, 7, True), (bob, 3, True), (bob, 4, False), (alice, 2, True),
                ({"id": "api-key", "token": "sk-usage-fixed-key-0001"}, 6, False), (scoped, 3, False), (bob, 30, False)]
        for key, max_tokens, stream in plan:
            status, prompt, completion = call(record, key["token"], max_tokens, stream=stream)
            row = expected[key["id"]]
            row[0] += 1
            row[1] += status >= 400
            row[2] += prompt
            row[3] += completion
        assert expected[scoped["id"]] == [1, 1, 0, 0]  # refused by its model scope: an error of that key
        bob_used = expected[bob["id"]][2] + expected[bob["id"]][3]
        assert bob_used >= 20  # the last call took bob past his daily budget
        rows = client.usage(deployment=record["name"])
        assert by_key(rows) == {k: tuple(v) for k, v in expected.items()}
        assert {r["key_name"] for r in rows if r["key_id"] == alice["id"]} == {"alice"}
        assert {r["model"] for r in rows if r["key_id"] == alice["id"]} == {record["models"][0]["name"]}
        assert all(r["minute"] % 60 == 0 for r in rows)
        assert by_key(client.usage(key=alice["id"])) == {alice["id"]: tuple(expected[alice["id"]])}
        assert client.usage(since=4102444800) == []  # 2100: nothing yet

        frame = client.usage_frame(deployment=record["id"])
        assert list(frame.columns[:3]) == ["minute", "key_id", "key_name"]
        assert int(frame[frame.key_id == bob["id"]].completion_tokens.sum()) == expected[bob["id"]][3]
        assert str(frame.minute.dtype).startswith("datetime64")

        text = jupyter.api("GET", "metrics").text
        line = next(li for li in text.splitlines()
                    if li.startswith("modeldeploy_key_completion_tokens_total") and f'key_id="{alice["id"]}"' in li)
        assert float(line.rsplit(" ", 1)[1]) == expected[alice["id"]][3]
        assert alice["token"] not in text and "sk-usage-fixed-key-0001" not in text
        assert jupyter.api("GET", "usage", params={"since": "yesterday"}).status_code == 400
    finally:
        jupyter.stop()

    again = JupyterProcess(tmp_path / "home", extra_args=jupyter.extra_args).start()
    try:
        client = again.client()
        assert by_key(client.usage(deployment=record["id"])) == {k: tuple(v) for k, v in expected.items()}
        text = again.api("GET", "metrics").text
        kept = [li for li in text.splitlines() if li.startswith("modeldeploy_key_requests_total{")
                and f'key_id="{alice["id"]}"' in li]
        assert len(kept) == 1 and float(kept[0].rsplit(" ", 1)[1]) == expected[alice["id"]][0]
        record = client.wait(record["id"], timeout=60)  # back by itself (restart: always)
        status, _, _ = call(record, bob["token"], 1, stream=False)
        assert status == 429  # the daily budget still counts what bob used before the restart
        assert call(record, alice["token"], 1, stream=False)[0] == 200
    finally:
        again.stop()
