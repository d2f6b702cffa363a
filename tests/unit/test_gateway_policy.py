"""Gateway decisions without sockets: key extraction, authorization, usage from responses."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_modeldeploy.gateway.auth import authorize, model_refusal, presented_key, role_refusal
from jupyter_modeldeploy.gateway.body import input_count
from jupyter_modeldeploy.gateway.tokens import TokenInfo
from jupyter_modeldeploy.gateway.usage import UsageTap, wants_usage_injection
from jupyter_modeldeploy.keys import hash_key, key_matches, new_token


def token(deployment_id: str | None = "d1", project: str | None = None, expires: float | None = None,
          revoked: float | None = None) -> TokenInfo:
    return TokenInfo(id="t-1", name=None, prefix="md-abcd", deployment_id=deployment_id, project=project,
                     created_at=0.0, expires_at=expires, revoked_at=revoked)


def decide(key: str | None, tok: TokenInfo | None = None, *, public: bool = False, fixed: str | None = None):
    return authorize(key, deployment_id="d1", project="p1", public=public,
                     api_key_hash=hash_key(fixed) if fixed else None, token=tok, now=100.0)


def test_presented_key_sources() -> None:
    assert presented_key("Bearer abc", None) == "abc"
    assert presented_key("bearer  abc ", None) == "abc"
    assert presented_key("Basic xyz", "k2") == "k2"
    assert presented_key(None, None) is None
    assert presented_key("Bearer ", None) is None


def test_authorization_rules() -> None:
    assert decide(None).status == 401
    assert decide("wrong", fixed="right").status == 401
    assert decide("right", fixed="right").allowed
    assert decide(None, public=True).allowed
    assert decide("x", token()).allowed
    assert decide("x", token(deployment_id=None, project="p1")).allowed
    assert decide("x", token(deployment_id="d2")).status == 403
    assert decide("x", token(deployment_id=None, project="other")).status == 403
    assert decide("x", token(expires=50.0)).status == 401
    assert decide("x", token(revoked=10.0)).status == 401


def test_keys_are_hashed_and_compared() -> None:
    t = new_token()
    assert t.startswith("md-") and len(t) > 40
    assert key_matches(t, hash_key(t))
    assert not key_matches(t + "x", hash_key(t))
    assert not key_matches(t, None)
    assert hash_key(t) != t


def test_usage_from_json_body_in_pieces() -> None:
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}).encode()
    tap = UsageTap("application/json")
    for i in range(0, len(body), 5):
        assert tap.feed(body[i : i + 5]) == body[i : i + 5]
    usage = tap.finish()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 3)


def sse(*events: dict | str) -> bytes:
    out = b""
    for e in events:
        out += b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
    return out


def test_usage_from_stream_split_anywhere_and_passed_through() -> None:
    stream = sse({"choices": [{"delta": {"content": "hi"}}]},
                 {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}}, "[DONE]")
    for cut in range(1, len(stream)):
        tap = UsageTap("text/event-stream")
        out = tap.feed(stream[:cut]) + tap.feed(stream[cut:])
        assert out == stream
        usage = tap.finish()
        assert usage is not None and usage.completion_tokens == 9, cut


def test_injected_usage_event_is_dropped_for_the_client() -> None:
    content = {"choices": [{"delta": {"content": "hi"}}]}
    stream = sse(content, {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}}, "[DONE]")
    tap = UsageTap("text/event-stream; charset=utf-8", drop_injected_usage=True)
    out = tap.feed(stream)
    assert out == sse(content, "[DONE]")
    assert tap.finish().completion_tokens == 9  # type: ignore[union-attr]


def test_usage_injection_only_for_openai_streams_that_did_not_ask() -> None:
    chat = "/v1/chat/completions"
    assert wants_usage_injection(chat, {"stream": True})
    assert wants_usage_injection(chat, {"stream": True, "stream_options": {"continuous_usage_stats": False}})
    assert not wants_usage_injection(chat, {"stream": False})
    assert not wants_usage_injection(chat, {"stream": True, "stream_options": {"include_usage": False}})
    assert not wants_usage_injection("/v1/messages", {"stream": True})  # Anthropic streams carry usage
    assert not wants_usage_injection(chat, {"stream": True, "stream_options": "yes"})


def test_anthropic_and_llamacpp_stream_events_pass_unchanged_and_count() -> None:
    anthropic = sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 1, "cache_read_input_tokens": 10,
                                                         "output_tokens": 1}}},
        {"type": "content_block_delta", "delta": {"text": "hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
    )
    tap = UsageTap("text/event-stream")
    assert tap.feed(anthropic) == anthropic
    usage = tap.finish()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (11, 5)
    llamacpp = sse({"choices": [{"delta": {}, "finish_reason": "stop"}],
                    "timings": {"cache_n": 2, "prompt_n": 7, "predicted_n": 12}}, "[DONE]")
    tap = UsageTap("text/event-stream")
    assert tap.feed(llamacpp) == llamacpp
    usage = tap.finish()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 12)


def test_only_the_injected_event_is_dropped() -> None:
    """Usage-only events the gateway did not cause (Anthropic's message_delta) always pass."""
    delta = {"type": "message_delta", "usage": {"output_tokens": 5}}
    stream = sse(delta, {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 5}})
    tap = UsageTap("text/event-stream", drop_injected_usage=True)
    assert tap.feed(stream) == sse(delta)
    tap = UsageTap("text/event-stream", drop_injected_usage=False)
    assert tap.feed(stream) == stream


def test_crlf_separated_events_are_parsed() -> None:
    stream = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}\r\n\r\n'
    tap = UsageTap("text/event-stream", drop_injected_usage=True)
    assert tap.feed(stream) == b""
    assert tap.finish().completion_tokens == 3  # type: ignore[union-attr]


def test_input_count_reads_token_ids_as_one_input() -> None:
    assert input_count(["a", "b", "c"]) == 3
    assert input_count([101, 7592, 102]) == 1  # one input's token ids
    assert input_count([[101, 102], [101, 7592, 102]]) == 2
    assert input_count(["a", [1, 2]]) == 2
    assert input_count([True, False]) == 2  # not token ids
    assert input_count([]) == 0
    assert input_count("text") is None and input_count(None) is None


def test_fields_moved_onto_the_injected_event_are_put_back() -> None:
    """vLLM moves `system_fingerprint` from the last content event onto the usage event it was asked for."""
    first = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}
    last = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "length"}]}
    usage = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2},
             "system_fingerprint": "fp-1"}
    stream = sse(first, last, usage, "[DONE]")
    for cut in range(1, len(stream), 7):
        tap = UsageTap("text/event-stream", drop_injected_usage=True)
        out = tap.feed(stream[:cut]) + tap.feed(stream[cut:]) + tap.close()
        events = [json.loads(e[6:]) for e in out.split(b"\n\n") if e and e != b"data: [DONE]"]
        assert events == [first, {**last, "system_fingerprint": "fp-1"}], cut
        assert out.endswith(b"data: [DONE]\n\n")
        assert tap.finish().completion_tokens == 2  # type: ignore[union-attr]


def test_a_held_event_is_released_when_no_usage_event_follows() -> None:
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    tap = UsageTap("text/event-stream", drop_injected_usage=True)
    held = tap.feed(sse(last))
    assert held == b"" and tap.close() == sse(last)


def test_roles_and_model_scopes() -> None:
    read = token()
    read.role = "read"
    assert role_refusal(read, "GET") is None and role_refusal(read, "HEAD") is None
    refused = role_refusal(read, "POST")
    assert refused is not None and refused.status == 403 and "'read'" in refused.message
    assert role_refusal(token(), "POST") is None and role_refusal(None, "POST") is None
    scoped = token()
    scoped.models = ("a", "b")
    assert model_refusal(scoped, "a") is None
    wrong = model_refusal(scoped, "c")
    assert wrong is not None and wrong.status == 403 and "a, b" in wrong.message and "'c'" in wrong.message
    unnamed = model_refusal(scoped, None)
    assert unnamed is not None and "name one" in unnamed.message
    assert model_refusal(token(), "anything") is None
    assert "deployment d2" in decide("x", token(deployment_id="d2")).message


@settings(max_examples=200, deadline=None)
@given(seps=st.lists(st.sampled_from([b"\n\n", b"\r\n\r\n"]), min_size=1, max_size=30), data=st.data())
def test_events_are_found_whatever_their_separators_and_chunks(seps: list[bytes], data: st.DataObject) -> None:
    """Every event of a stream mixing LF and CRLF separators is seen once, however the stream is cut."""
    events = [b'data: {"choices": [{"delta": {"content": "t%d"}}]}' % i for i in range(len(seps) - 1)]
    events.append(b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": %d}}' % len(seps))
    stream = b"".join(e + s for e, s in zip(events, seps))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=10))))
    tap = UsageTap("text/event-stream")
    out = b"".join(tap.feed(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)]))
    assert out == stream
    assert tap.events == len(seps)
    usage = tap.finish()
    assert usage is not None and usage.completion_tokens == len(seps)
