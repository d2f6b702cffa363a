"""`AnswerEnd`: what passes on at once, and that the bytes telling a client its answer ended wait."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jupyter_modeldeploy.gateway.answer_end import AnswerEnd

EVENTS = b'data: {"choices":[{"delta":{"content":"[DONE] is just text"}}]}\n\ndata: {"usage":{}}\n\n'
DONE = b"data: [DONE]\n\n"


def feed(end: AnswerEnd, chunks: list[bytes]) -> bytes:
    return b"".join(end.pass_on(c) for c in chunks)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(st.integers(min_value=0, max_value=len(EVENTS + DONE)), max_size=8))
def test_a_stream_passes_on_whole_up_to_its_done_however_it_is_cut(cuts: list[int]) -> None:
    end = AnswerEnd(sse=True, body_length=None)
    passed = feed(end, splits(EVENTS + DONE, cuts))
    assert passed == EVENTS  # every event before the sentinel at once, the sentinel not a byte of it
    assert end.release() == (b"", DONE)


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=6), st.integers(min_value=1, max_value=200))
def test_a_body_of_known_length_waits_for_its_last_byte_only(cuts: list[int], length: int) -> None:
    body = bytes(range(256))[:length] if length <= 256 else b"x" * length
    end = AnswerEnd(sse=False, body_length=length)
    assert end.head(b"HEAD") == b"HEAD"
    assert feed(end, splits(body, cuts)) == body[:-1]
    assert end.release() == (b"", body[-1:])


def test_a_stream_without_done_and_a_chunked_body_pass_on_whole() -> None:
    # Their end is the last chunk, which the relay writes after counting.
    for end in (AnswerEnd(sse=True, body_length=None), AnswerEnd(sse=False, body_length=None)):
        assert feed(end, [EVENTS[:10], EVENTS[10:]]) == EVENTS
        assert end.release() == (b"", b"")


def test_a_done_with_crlf_or_no_space_is_the_end_too() -> None:
    for before, sentinel in ((b"data: {}\r\n\r\n", b"data: [DONE]\r\n\r\n"), (b"data: {}\n\n", b"data:[DONE]\n\n")):
        end = AnswerEnd(sse=True, body_length=None)
        assert feed(end, [before + sentinel]) == before
        assert end.release()[1] == sentinel


def test_the_start_of_a_line_that_is_not_the_sentinel_goes_with_the_next_chunk() -> None:
    end = AnswerEnd(sse=True, body_length=None)
    assert end.pass_on(b"data: {}\n\ndata: [DO") == b"data: {}\n\n"
    assert end.pass_on(b"G]\n\n") == b"data: [DOG]\n\n"
    assert end.pass_on(b"data") == b""
    assert end.release() == (b"", b"data")  # the stream's end: what was carried goes too


def test_an_answer_without_a_body_holds_its_head() -> None:
    end = AnswerEnd(sse=False, body_length=0)
    assert end.head(b"HTTP/1.1 204 No Content\r\n\r\n") == b""
    assert end.release() == (b"HTTP/1.1 204 No Content\r\n\r\n", b"")


@given(st.lists(st.sampled_from([b"data: ", b"[DONE]", b"\n", b"\r\n", b"d", b"ata:", b"x", b"{}"]), max_size=30),
       st.booleans())
def test_no_byte_is_lost_or_reordered_and_no_sentinel_line_passes(parts: list[bytes], known_length: bool) -> None:
    data = b"".join(parts)
    end = AnswerEnd(sse=True, body_length=len(data) if known_length else None)
    passed = feed(end, parts)
    head, held = end.release()
    assert head == b"" and passed + held == data
    assert not any((b"\n" + passed).find(b"\n" + line) >= 0 for line in (b"data: [DONE]", b"data:[DONE]"))
    if known_length and data:
        assert held  # the last byte at least
