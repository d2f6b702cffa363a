"""Per-key quotas end to end: 429 with Retry-After and an OpenAI-style error to one key while
another is served; quotas set at creation and changed afterwards, effective for the next request."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterProcess, dict]]:
    jupyter = fake_jupyter(tmp_path_factory.mktemp("quotas"))
    client = jupyter.client()
    record = client.wait(client.launch(fake_deployment("quota"))["id"], timeout=60)
    yield jupyter, record
    client.delete(record["id"])
    jupyter.stop()


def ask(record: dict, key: str, max_tokens: int = 2) -> httpx.Response:
    return httpx.post(record["api_base"] + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": record["models"][0]["name"], "messages": [], "max_tokens": max_tokens}, timeout=30)


def test_requests_per_minute_refuse_one_key_and_serve_another(served: tuple[JupyterProcess, dict]) -> None:
    jupyter, record = served
    client = jupyter.client()
    limited = client.create_token(deployment=record["id"], quotas={"requests_per_minute": 2})
    free = client.create_token(deployment=record["id"])
    assert limited["quotas"]["requests_per_minute"] == 2 and free["quotas"] is None
    assert [ask(record, limited["token"]).status_code for _ in range(2)] == [200, 200]
    refused = ask(record, limited["token"])
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["param"] == "requests_per_minute"
    assert limited["token"] not in refused.text
    assert all(ask(record, free["token"]).status_code == 200 for _ in range(4))
    sdk = openai.OpenAI(base_url=record["api_base"], api_key=limited["token"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=record["models"][0]["name"], messages=[], max_tokens=1)
    assert caught.value.code == "rate_limit_exceeded"
    raised = client.update_token(limited["id"], quotas={"requests_per_minute": 10})
    assert raised["quotas"]["requests_per_minute"] == 10
    assert ask(record, limited["token"]).status_code == 200  # the change holds for the very next request


def test_tokens_per_minute_and_daily_budget_count_the_engines_usage(served: tuple[JupyterProcess, dict]) -> None:
    jupyter, record = served
    client = jupyter.client()
    per_minute = client.create_token(deployment=record["id"], quotas={"tokens_per_minute": 10})
    assert ask(record, per_minute["token"], max_tokens=12).status_code == 200  # 13 tokens: past the quota
    refused = ask(record, per_minute["token"])
    assert refused.status_code == 429 and refused.json()["error"]["param"] == "tokens_per_minute"
    daily = client.create_token(deployment=record["id"], quotas={"daily_tokens": 5})
    assert ask(record, daily["token"], max_tokens=3).status_code == 200  # 4 tokens
    assert ask(record, daily["token"], max_tokens=3).status_code == 200  # 8: the budget is spent now
    spent = ask(record, daily["token"])
    assert spent.status_code == 429 and spent.json()["error"]["param"] == "daily_tokens"
    assert int(spent.headers["Retry-After"]) <= 86400
    cleared = client.update_token(daily["id"], quotas={})
    assert cleared["quotas"] is None and ask(record, daily["token"]).status_code == 200


def test_bad_quotas_are_422_naming_the_field(served: tuple[JupyterProcess, dict]) -> None:
    jupyter, _ = served
    for quotas, field in (({"requests_per_minute": 0}, "quotas.requests_per_minute"),
                          ({"per_hour": 3}, "quotas.per_hour"), ({"max_in_flight": "2"}, "quotas.max_in_flight")):
        response = jupyter.api("POST", "tokens", json={"project": "p", "quotas": quotas})
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]
