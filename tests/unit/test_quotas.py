"""Per-key quotas without sockets: sliding minute windows, in flight, the UTC day, Retry-After."""

from __future__ import annotations

import pytest

from jupyter_modeldeploy.gateway.quotas import DAY_S, QuotaBook
from jupyter_modeldeploy.gateway.tokens import Quotas

T0 = 1000 * DAY_S + 100.0  # 100 s into a UTC day


def test_requests_per_minute_slide_and_say_when() -> None:
    book, quotas = QuotaBook(), Quotas(requests_per_minute=2)
    assert book.admit("k", quotas, T0) is None
    book.release("k", 0, T0)
    assert book.admit("k", quotas, T0 + 10) is None
    book.release("k", 0, T0 + 10)
    refused = book.admit("k", quotas, T0 + 20)
    assert refused is not None and refused.quota == "requests_per_minute" and refused.retry_after_s == 40
    assert "2 requests per minute" in refused.message()
    assert book.admit("other", quotas, T0 + 20) is None  # other keys have books of their own
    assert book.admit("k", quotas, T0 + 60.5) is None  # the first request left the window


def test_in_flight_is_held_until_released() -> None:
    book, quotas = QuotaBook(), Quotas(max_in_flight=1)
    assert book.admit("k", quotas, T0) is None
    refused = book.admit("k", quotas, T0)
    assert refused is not None and refused.quota == "max_in_flight" and refused.retry_after_s == 1
    book.release("k", 5, T0 + 1)
    assert book.admit("k", quotas, T0 + 1) is None


def test_tokens_per_minute_wait_for_enough_tokens_to_leave() -> None:
    book, quotas = QuotaBook(), Quotas(tokens_per_minute=100)
    for at, tokens in ((T0, 60), (T0 + 30, 50)):
        assert book.admit("k", quotas, at) is None
        book.release("k", tokens, at)
    refused = book.admit("k", quotas, T0 + 40)
    assert refused is not None and refused.quota == "tokens_per_minute" and refused.retry_after_s == 20
    assert book.admit("k", quotas, T0 + 61) is None  # 50 left in the window


def test_daily_tokens_until_utc_midnight_and_seeded_after_restart() -> None:
    book, quotas = QuotaBook(), Quotas(daily_tokens=1000)
    book.seed_day("k", 990, T0)
    assert book.admit("k", quotas, T0) is None
    book.release("k", 20, T0)
    refused = book.admit("k", quotas, T0 + 1)
    assert refused is not None and refused.quota == "daily_tokens" and refused.retry_after_s == DAY_S - 101
    assert book.admit("k", quotas, (1001 * DAY_S) + 1) is None  # a new day


@pytest.mark.parametrize("bad", [{"requests_per_minute": 0}, {"max_in_flight": -1}, {"daily_tokens": True},
                                 {"tokens_per_minute": 1.5}])
def test_quotas_refuse_what_is_not_a_positive_integer(bad: dict) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        Quotas.from_json(bad)


def test_no_quota_set_is_no_quotas() -> None:
    assert Quotas.from_json({}) is None and Quotas.from_json({"max_in_flight": None}) is None
    assert Quotas.from_json({"max_in_flight": 2}) == Quotas(max_in_flight=2)


def test_fixed_key_quotas_are_validated_and_exported() -> None:
    from jupyter_modeldeploy.config import ConfigError, parse_config

    base = {"kind": "llamacpp", "name": "q", "model": "m.gguf"}
    config = parse_config({**base, "api_key_quotas": {"requests_per_minute": 5, "daily_tokens": 1000}})
    assert config.api_key_quotas.limits() == {"requests_per_minute": 5, "daily_tokens": 1000}
    assert parse_config(base).api_key_quotas.limits() == {}
    for bad in ({"requests_per_minute": 0}, {"max_in_flight": "many"}, {"per_hour": 3}):
        try:
            parse_config({**base, "api_key_quotas": bad})
        except ConfigError as exc:
            assert "api_key_quotas." in str(exc)
        else:
            raise AssertionError(f"accepted {bad}")
