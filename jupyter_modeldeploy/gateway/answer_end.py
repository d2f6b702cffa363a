"""The bytes by which a client can tell that its answer ended, held back until the request is counted.

A client has its whole answer at the last byte of a body of known length, at the head of an
answer without a body, at the `data: [DONE]` event of an OpenAI-style stream (the SDKs stop
reading there and close the connection) and at the last chunk of a chunked body. A client that
asks for its usage, or sends its next request under a quota, at that moment must find the request
counted. So every relay passes an answer's bytes through an `AnswerEnd`, counts the request, and
only then writes what it held (`release`). The rest of an answer goes on as it comes: nothing is
held but the end, which an engine sends right before it closes the body anyway.
"""

from __future__ import annotations

DONE_LINES = (b"data: [DONE]", b"data:[DONE]")  # the sentinel, at the start of a line
DONE_NEEDLES = tuple(b"\n" + line for line in DONE_LINES)
LONGEST = max(len(line) for line in DONE_LINES)


class AnswerEnd:
    """Passes an answer's bytes on, except the ones that tell the client it ended (`release` gives them)."""

    def __init__(self, *, sse: bool, body_length: int | None):
        """`sse`: an event stream (its end is `[DONE]`); `body_length`: the body's length when known
        (0 for an answer without a body), None for a chunked one (whose last chunk the relay writes)."""
        self._sse = sse
        self._left = body_length
        self._ended = False  # the end was seen: everything from it is held
        self._held_head = b""
        self._held = bytearray()
        self._carry = b""  # a line's first bytes that may begin the sentinel: they wait for the next chunk
        self._line_start = True  # what passed so far ends a line

    def head(self, head: bytes) -> bytes:
        """The answer's head as it may go now: all of it, unless no body follows (then the head is the end)."""
        if self._left == 0:
            self._held_head = head
            return b""
        return head

    def pass_on(self, data: bytes) -> bytes:
        """The part of `data` that may go now; the rest waits for `release`."""
        if self._ended:
            self._held += data  # nothing goes after the end
            return b""
        last = b""
        if self._left is not None:
            if len(data) >= self._left:  # this chunk ends the body: its last byte waits
                data, last = data[:max(0, self._left - 1)], data[max(0, self._left - 1):]
            self._left = max(0, self._left - len(data) - len(last))
        if self._sse:
            data = self._before_sentinel(data)
        if last:
            self._ended = True
            self._held += self._carry + last
            self._carry = b""
        return data

    def _before_sentinel(self, data: bytes) -> bytes:
        """What of a stream's bytes goes before its `[DONE]` line (the rest is held), or before the start of
        a last line that may yet be it (carried to the next chunk)."""
        window = self._carry + data if self._carry else data
        self._carry = b""
        if window.endswith(b"\n") and b"[DONE]" not in window:  # most chunks: whole events, no sentinel
            self._line_start = True
            return window
        cut = len(window)
        for line, needle in zip(DONE_LINES, DONE_NEEDLES, strict=True):
            if self._line_start and window.startswith(line):
                cut = 0
            found = window.find(needle)
            if 0 <= found < cut:
                cut = found + 1
        if cut < len(window):
            self._ended = True
            self._held += window[cut:]
        else:
            newline = window.rfind(b"\n", max(0, len(window) - LONGEST))
            last_line = window[newline + 1:] if newline >= 0 or self._line_start else b""
            if last_line and len(last_line) < LONGEST and any(line.startswith(last_line) for line in DONE_LINES):
                cut = len(window) - len(last_line)
                self._carry = last_line
        passed = window[:cut]
        if passed:
            self._line_start = passed.endswith(b"\n")
        return passed

    def release(self) -> tuple[bytes, bytes]:
        """What was held, head and body bytes: write them once the request is counted."""
        head, body = self._held_head, bytes(self._held) + self._carry
        self._held_head, self._carry = b"", b""
        self._held.clear()
        return head, body
