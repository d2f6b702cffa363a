"""What the gateway does when a replica fails a request: send it to another, or end a cut stream cleanly.

Both relays (the handler of `proxy.py`, and any data path that replaces it) ask the same two
questions, so the policy lives here, apart from how bytes are moved:

- `resend_elsewhere`: may a request that failed with this error go to another replica? Only when
  no byte of its answer came back, so none can have reached the client: the engine could not be
  connected to (`UpstreamUnreachable`), or it accepted the connection and then closed or reset it
  before the answer's head (`UpstreamNoAnswer`: a replica or its node dying). The replica leaves
  the rotation in both cases. A timeout is not sent again: the engine may still be working on it.
- `head_unless_lost`: a node that dies without a word (a machine that stops: no reset comes) leaves
  the connections to its engine open and silent. The supervisor sees the replica go (its actor stops
  answering) and takes it out of the rotation; a request still waiting for its answer's head there
  then gives up at once (`UpstreamNoAnswer`: the replica's watchers hear of it), and goes to another
  replica like the ones above. `end_with_its_engine` does the same for an answer under way: once the
  replica's engine is gone (its address changed), the answer ends with an error instead of waiting
  out `upstream_timeout_s`.
- `cut_stream_event`: the last bytes of an event stream an engine broke off after it began: an
  error event in the route's dialect, after which the stream ends as a stream should (the last
  chunk), so the client's SDK raises an error that says what happened instead of a protocol error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from ..supervisor.replicas import Replica, ReplicaState
from .refusals import Refusal, refusal_document
from .upstream import UpstreamError, UpstreamNoAnswer, UpstreamResponse, UpstreamUnreachable


def resend_elsewhere(exc: UpstreamError) -> bool:
    """Whether the request may go to another replica: nothing of the answer came back."""
    return isinstance(exc, (UpstreamUnreachable, UpstreamNoAnswer))


def left_for_a_failure(replica: Replica) -> bool:
    """Whether a replica left the rotation for a failure (down, or restarting: not stopping, whose requests
    finish): a request waiting there for its answer's head is given up."""
    return replica.state in (ReplicaState.DOWN, ReplicaState.STARTING)


async def head_unless_lost(request: Coroutine[Any, Any, UpstreamResponse], replica: Replica) -> UpstreamResponse:
    """The answer's head from `request` to `replica`; UpstreamNoAnswer if the replica leaves the rotation for a
    failure first (down, or restarting: not stopping, whose requests finish), the moment it does."""
    task = asyncio.ensure_future(request)
    lost = asyncio.get_running_loop().create_future()

    def check(watched: Replica) -> None:
        if left_for_a_failure(watched) and not lost.done():
            lost.set_result(None)

    check(replica)
    unwatch = replica.watch(check)
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise UpstreamNoAnswer(f"the replica left the rotation before answering ({replica.reason or 'lost'})")
    except BaseException:
        _drop(task)
        raise
    finally:
        unwatch()
        lost.cancel()


def end_with_its_engine(upstream: UpstreamResponse, replica: Replica) -> Callable[[], None]:
    """While an answer is read: if the replica's engine goes (its address changes: Ray found it lost, or restarted
    it), the answer is given up at once (a stream ends with its error event), not when the engine has been
    silent for `upstream_timeout_s` (a node that froze sends nothing, and no reset comes). Returns the unwatch."""
    address = replica.address

    def check(watched: Replica) -> None:
        if watched.address != address:
            upstream.fail(f"the replica's engine went away ({watched.reason or 'lost'})")

    return replica.watch(check)


def _drop(task: asyncio.Future[UpstreamResponse]) -> None:
    """Cancel a request given up on; an answer that came at that moment is closed, not reused."""
    if not task.done():
        task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception() or t.result().close())


def cut_stream_event(reason: str, dialect: str = "openai") -> bytes:
    """An SSE error event telling the client its stream was cut (`reason`), in the route's dialect."""
    return error_event(Refusal(502, f"the engine broke off the stream: {reason}", "upstream_error"), dialect)


def error_event(refusal: Refusal, dialect: str = "openai") -> bytes:
    """A refusal as an SSE error event, in the route's dialect (for a stream whose head went out already)."""
    data = b"data: " + json.dumps(refusal_document(refusal, dialect)).encode() + b"\n\n"  # type: ignore[arg-type]
    return (b"event: error\n" + data) if dialect == "anthropic" else data
