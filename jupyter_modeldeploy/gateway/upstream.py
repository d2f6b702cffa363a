"""The gateway's HTTP client to engines: aiohttp, pooled per engine address, bodies streamed.

aiohttp's client runs on the same asyncio loop as tornado and has a complete HTTP/1.1
parser, so the pool's hygiene is the library's: interim 1xx answers are skipped, a
connection returns to the pool only after its answer was read to the end (anything else
closes it), HEAD / 204 / 304 and chunked bodies with trailers are framed by the parser.

On top of it, one rule of our own: a request that fails on a *reused* keep-alive connection
before any byte of the answer arrived (the engine had closed it as we sent) is sent once
more, on a fresh connection. Nothing else is retried.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from ..engines.base import EngineAddress

KEEPALIVE_S = 4.0  # below the 5 s keep-alive of llama.cpp's, uvicorn's and tornado's servers
READ_CHUNK = 64 * 1024


class UpstreamError(Exception):
    """The engine could not be reached, or broke the protocol."""


class UpstreamUnreachable(UpstreamError):
    """No connection to the engine could be made: the request never reached it (another replica may take it)."""


class UpstreamTimeout(UpstreamError):
    """The engine did not answer in time."""


class UpstreamResponse:
    """Status, headers and a body to stream; `close()` drops the connection (the engine sees it)."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status = response.status
        self.reason = response.reason or ""
        self.headers = response.headers
        self.raw_headers = response.raw_headers

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed); the connection goes back to the pool
        only once the body was read to its end."""
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            self.close()
            raise UpstreamTimeout("the engine stopped sending its answer") from exc
        except aiohttp.ClientError as exc:
            self.close()
            raise UpstreamError(f"the engine broke off its answer ({type(exc).__name__})") from exc
        self._response.release()

    def close(self) -> None:
        """Drop the connection: an answer not read to the end must never be reused."""
        self._response.close()


#: Whether the connection the current request got came from the pool (set by the connector, in the request's task).
_REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("upstream_reused", default=False)


class _ReuseAware:
    """A connector that tells whether a request's connection was reused. (aiohttp's trace hooks tell
    it too, but cost each request more than the rest of the client's own work.)"""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()  # connections handed out before

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)  # type: ignore[misc]
        protocol = conn.protocol
        _REUSED.set(protocol in self._seen)
        self._seen.add(protocol)
        return conn


class _UnixConnector(_ReuseAware, aiohttp.UnixConnector):
    """aiohttp's Unix socket connector, telling reuse."""


class _TCPConnector(_ReuseAware, aiohttp.TCPConnector):
    """aiohttp's TCP connector, telling reuse."""


@lru_cache(maxsize=32)
def _timeouts(connect_s: float, read_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)


class UpstreamClient:
    """One aiohttp session (its connection pool) per engine address."""

    def __init__(self, *, connect_timeout: float = 10.0):
        self.connect_timeout = connect_timeout
        # (address, fresh): the keep-alive pool, and a pool that opens a new connection per request
        self._sessions: dict[tuple[EngineAddress, bool], aiohttp.ClientSession] = {}

    def _session(self, address: EngineAddress, *, fresh: bool = False) -> aiohttp.ClientSession:
        session = self._sessions.get((address, fresh))
        if session is None or session.closed:
            connector: aiohttp.BaseConnector
            pooling: dict[str, Any] = {"force_close": True} if fresh else {"keepalive_timeout": KEEPALIVE_S}
            if address.socket_path:
                connector = _UnixConnector(path=address.socket_path, limit=0, **pooling)
            else:
                connector = _TCPConnector(limit=0, **pooling)
            session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                read_bufsize=READ_CHUNK, cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[(address, fresh)] = session
        return session

    async def request(
        self, address: EngineAddress, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
        *, timeout: float,
    ) -> UpstreamResponse:
        """Send a request and read the answer's head (interim 1xx skipped); stream the body with
        `iter_body()`. `target` is the normalised path and raw query, sent exactly as given."""
        url = URL(address.base_url + target, encoded=True)
        limits = _timeouts(self.connect_timeout, timeout)
        send_headers = CIMultiDict(headers)
        for attempt in (1, 2):
            _REUSED.set(False)
            session = self._session(address, fresh=attempt == 2)
            try:
                response = await session.request(
                    method, url, headers=send_headers, data=body if body or method in ("POST", "PUT", "PATCH") else None,
                    timeout=limits, allow_redirects=False, compress=None,
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise UpstreamUnreachable(f"no connection to the engine ({type(exc).__name__})") from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 1 and _REUSED.get():
                    continue  # the engine had closed the idle connection: nothing was processed
                raise UpstreamError("the engine is not reachable") from exc
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise UpstreamTimeout(f"no answer from the engine within {timeout:g} s") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"the engine's answer is not valid HTTP ({type(exc).__name__})") from exc
            return UpstreamResponse(response)
        raise UpstreamError("unreachable")  # pragma: no cover - the loop always returns or raises

    async def forget(self, address: EngineAddress) -> None:
        """Close the pool of an engine that stopped."""
        for fresh in (False, True):
            session = self._sessions.pop((address, fresh), None)
            if session is not None:
                await session.close()

    async def close(self) -> None:
        """Close every pool."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
